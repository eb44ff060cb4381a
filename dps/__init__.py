"""dps package."""
