"""ddpm_ddim package."""
