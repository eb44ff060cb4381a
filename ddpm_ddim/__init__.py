"""ddpm_ddim package."""

import common  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads; see common/__init__.py)
