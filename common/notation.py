"""Notation glossary shared by every module (one vocabulary for the whole repo).

=====================  ===================  ==============================================
concept                paper symbol         name in code
=====================  ===================  ==============================================
per-step noise         beta_t               ``betas``
per-step signal        alpha_t = 1-beta_t   ``alpha_t`` (scalar, DDPM posterior only)
cumulative signal      alpha_bar_t          array ``alphas_cumprod``; scalars ``alpha_bar_t``,
                                            ``alpha_bar_prev`` (less noisy), ``alpha_bar_next`` (noisier)
noisy sample           x_t                  ``x_t``
Tweedie estimate       x0_hat               ``x0_hat`` = (x_t - sqrt(1-alpha_bar_t) eps_hat) / sqrt(alpha_bar_t)
predicted noise        eps_hat              ``eps_hat`` (the true noise is ``noise``)
velocity               v                    ``v`` = sqrt(alpha_bar_t) eps - sqrt(1-alpha_bar_t) x0
DDIM stochasticity     eta, sigma_t(eta)    ``eta``, ``sigma_eta_t``
EDM noise level        sigma                ``sigma`` = sqrt((1-alpha_bar)/alpha_bar), only in that sense
guidance scale         s, omega             ``guidance_scale``
=====================  ===================  ==============================================

Never write ``alphas`` or ``alpha`` for alpha_bar (threestudio and lucidrains do; it causes real bugs).
Timesteps are integers in [0, T) with T = ``num_train_timesteps``; t = -1 means "before the first step",
whose alpha_bar is ``final_alpha_cumprod`` (1.0 in DDPM and in DDIM with ``set_alpha_to_one``).
Coefficients are computed in float32 even when the model runs in half precision.
"""
