"""2D score distillation: SDS, VSD, SDI, PDS, ISM and DDS on Stable Diffusion latents or pixels.

- :mod:`distillation.guidance`: ``Guidance`` (unet, vae, alpha_bar) with ``get_sds_loss``, ``get_vsd_loss``,
  ``get_sdi_loss``, ``get_pds_loss``, ``get_ism_loss``, ``get_dds_loss``. Each returns a scalar whose gradient
  w.r.t. the latents is the method's update g (sum reduction).
- One method per file, each with its exercise (a solution region) in a small function and the public loss
  around it: :mod:`distillation.sds` (``sds_gradient``), :mod:`distillation.vsd` (``vsd_terms``),
  :mod:`distillation.sdi` (``ddim_invert``, ``sdi_target``, ``sdi_loss``), :mod:`distillation.pds`
  (``pds_gradient``), :mod:`distillation.dds` (``dds_gradient``), :mod:`distillation.ism` (``ism_gradient``);
  :mod:`distillation.update`: stop-gradient loss, the NaN/inf check (``NonFiniteUpdate``) and ``aux``.
- :mod:`distillation.schedules`: timestep and weight schedules (``python -m distillation.schedules --plot F``).
- :mod:`distillation.representations`: latent (default) or pixel parameterisation.
- :mod:`distillation.runner` / :mod:`distillation.main`: the batched optimisation loop and its CLI
  (``python -m distillation.main``, presets ``kaist-a4`` and ``nycu-lab3``).
- :mod:`distillation.evaluate`: the handouts' evaluation set + CLIP score + a labelled contact sheet; it takes
  every option of the main CLI (one shared declaration, :func:`distillation.main.run_options`).
  :mod:`distillation.measure_toy`: the toy quality bars.
"""

import common  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads; see common/__init__.py)
