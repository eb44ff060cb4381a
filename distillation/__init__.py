"""distillation package."""
