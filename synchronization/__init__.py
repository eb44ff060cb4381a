"""synchronization package."""
