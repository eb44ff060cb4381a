"""Assignment presets and per-method defaults for ``python -m distillation.main``.

Precedence of a setting: explicit command-line flag > preset (its per-method entry, then its common entry) >
per-method / per-representation / toy-model default below > the option's own default.

A learning-rate warm-up that was not typed is at most a fifth of the run (the handouts' 100 of 500 steps), so a
short run such as ``--steps 50`` gets 10 warm-up steps instead of spending all of them below the peak LR.

Model defaults (the VSD LoRA learning rate, the CPU thread count, SDI's inversion eta and step form) follow
``common.registry.resolve(model).toy``:
the embedded toy models get TOY_MODEL_DEFAULTS, any other model (a registry name or a local folder) the real ones.
"""

from __future__ import annotations

from typing import Any

from common.registry import resolve

# Per-method defaults used when neither a flag nor a preset sets the value.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "sds": {"guidance_scale": 25.0, "t_schedule": "uniform", "w_schedule": "dreamfusion"},
    "vsd": {"guidance_scale": 7.5, "t_schedule": "uniform", "w_schedule": "dreamfusion"},
    "sdi": {"guidance_scale": 7.5, "t_schedule": "linear", "w_schedule": "constant"},  # SDI has no w(t)
    "pds": {"guidance_scale": 7.5, "t_schedule": "uniform", "w_schedule": "constant"},  # PDS has no w(t)
    "ism": {"guidance_scale": 7.5, "t_schedule": "uniform", "w_schedule": "lucid"},
    "dds": {"guidance_scale": 7.5, "t_schedule": "uniform", "w_schedule": "constant"},
}
REPRESENTATION_DEFAULTS: dict[str, dict[str, Any]] = {
    "latent": {"lr": 0.1},  # KAIST main.py: AdamW lr 0.1 on SD latents
    "pixel": {"lr": 0.02},
}

WARMUP_FRACTION = 5  # an untyped warm-up is at most steps // 5 (KAIST A4 / NYCU Lab 3: 100 of 500)

# Defaults for the embedded toy models (``ModelSpec.toy``), where they differ from the handouts' values for SD.
# The toy UNet is ~500x smaller than SD's: its LoRA must track the rendered image faster, and at the handouts'
# 1e-4 VSD reached 76.7% fully correct on the toy bar versus 83.3% at 1e-3 (H100, 30 captions, 500 steps).
# Its tiny convolutions run fastest on one CPU thread (and 10x faster than two on a busy 2-core CPU).
# SDI's inversion: toy-sd passes its bar only with ddim's form at eta 1 (10 captions: 100 %; the authors' form at
# eta 1: 0 %, either form at the handout's 0.3: 10 %; docs/distillation.md), real models get the authors' form at
# the NYCU handout's 0.3, which those settings were tuned with.
TOY_MODEL_DEFAULTS: dict[str, Any] = {"lora_lr": 1e-3, "threads": 1, "inversion_eta": 1.0,
                                      "sdi_inversion_form": "ddim"}
REAL_MODEL_DEFAULTS: dict[str, Any] = {"lora_lr": 1e-4, "threads": 0, "inversion_eta": 0.3,  # KAIST A4 / NYCU Lab 3
                                       "sdi_inversion_form": "authors"}

PRESETS: dict[str, dict[str, Any]] = {
    # KAIST CS492D Fall 2024, Assignment 4: SD 2.1 base, AdamW lr 0.1 (hard-coded in its main.py), cosine
    # warm-up 100 / 1.5 x steps, 500 steps, negative prompt "low quality"; SDS 25, PDS 7.5, VSD 7.5.
    "kaist-a4": {
        "loss_types": ("sds", "pds", "vsd"),
        "common": {"model": "sd-2.1-base", "negative_prompt": "low quality", "steps": 500, "lr": 0.1,
                   "log_step": 25, "warmup_steps": 100, "lora_lr": 1e-4, "lora_loss_weight": 1.0, "lora_rank": 4,
                   "grad_clip": 0.0},
        "sds": {"guidance_scale": 25.0},
        "pds": {"guidance_scale": 7.5},
        "vsd": {"guidance_scale": 7.5},
    },
    # NYCU Image and Video Generation 2025 Fall, Lab 3: SD 2.1 base, AdamW lr 0.01, latent gradient clipped to
    # norm 1, 500 steps; SDS 25, VSD 7.5 (LoRA 1e-4 / 1.0 / rank 4), SDI 7.5 with lr 0.005, 1000 steps,
    # inversion 10 steps at guidance -7.5, eta 0.3, refresh every 25 steps.
    "nycu-lab3": {
        "loss_types": ("sds", "vsd", "sdi"),
        "common": {"model": "sd-2.1-base", "negative_prompt": "low quality", "steps": 500, "lr": 0.01,
                   "log_step": 25, "warmup_steps": 100, "lora_lr": 1e-4, "lora_loss_weight": 1.0, "lora_rank": 4,
                   "inversion_n_steps": 10, "inversion_guidance_scale": -7.5, "inversion_eta": 0.3,
                   "sdi_inversion_form": "authors",
                   "sdi_update_interval": 25, "grad_clip": 1.0},
        "sds": {"guidance_scale": 25.0},
        "vsd": {"guidance_scale": 7.5},
        "sdi": {"guidance_scale": 7.5, "lr": 0.005, "steps": 1000},
    },
}


def resolve_settings(loss_type: str, representation: str, preset: str | None, explicit: dict[str, Any],
                     defaults: dict[str, Any]) -> dict[str, Any]:
    """Merge the layers (see the module docstring). ``explicit``: flags given on the command line;
    ``defaults``: every option's own default (None where a per-method default applies)."""
    settings = dict(defaults)
    settings.update({k: v for k, v in REPRESENTATION_DEFAULTS[representation].items() if settings.get(k) is None})
    settings.update({k: v for k, v in METHOD_DEFAULTS[loss_type].items() if settings.get(k) is None})
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        spec = PRESETS[preset]
        if loss_type not in spec["loss_types"]:
            raise ValueError(f"preset {preset} covers --loss_type {', '.join(spec['loss_types'])}, not {loss_type}")
        settings.update(spec["common"])
        settings.update(spec.get(loss_type, {}))
    settings.update(explicit)
    if "warmup_steps" not in explicit and settings.get("steps") is not None:
        settings["warmup_steps"] = min(settings["warmup_steps"], settings["steps"] // WARMUP_FRACTION)
    toy = resolve(settings.get("model") or "toy-sd", "sd").toy  # an unknown model is refused here, before any write
    model_defaults = TOY_MODEL_DEFAULTS if toy else REAL_MODEL_DEFAULTS
    settings.update({k: v for k, v in model_defaults.items() if settings.get(k) is None})
    return settings
