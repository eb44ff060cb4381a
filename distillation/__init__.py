"""2D score distillation: SDS, VSD, SDI, PDS, ISM and DDS on Stable Diffusion latents or pixels.

- :mod:`distillation.guidance`: ``Guidance`` (unet, vae, alpha_bar) with ``get_sds_loss``, ``get_vsd_loss``,
  ``get_sdi_loss``, ``get_pds_loss``, ``get_ism_loss``, ``get_dds_loss`` (reference bodies between solution
  markers). Each returns a scalar whose gradient w.r.t. the latents is the method's update g (sum reduction).
- :mod:`distillation.schedules`: timestep and weight schedules (``python -m distillation.schedules --plot F``).
- :mod:`distillation.representations`: latent (default) or pixel parameterisation.
- :mod:`distillation.runner` / :mod:`distillation.main`: the batched optimisation loop and its CLI
  (``python -m distillation.main``, presets ``kaist-a4`` and ``nycu-lab3``).
- :mod:`distillation.evaluate`: the handouts' evaluation set + CLIP score; :mod:`distillation.measure_toy`: the
  toy quality bars.
"""
