"""Train toy-faces: a tiny unconditional pixel DDPM (``UNet2DModel``) on procedural faces, saved as a
``DDPMPipeline`` folder like ``google/ddpm-celebahq-256`` (model_index.json, unet/, scheduler/).

Ho et al. (2020) Algorithm 1: x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps,
loss ||eps - eps_theta(x_t, t)||^2 with t uniform over 1000 steps of the linear schedule 1e-4..0.02, plus an extra
weight on the error of each channel's spatial mean (``eps_loss``): without it the small UNet leaves the mean of the
noise unpredicted and 1000-step DDPM samples drift to saturated single colours (FD 29.5 instead of 4.5).
Faces are rendered on the fly on the training device (no dataset on disk). bf16 autocast on CUDA, AdamW,
cosine learning rate; the EMA weights are shipped (fp16).

The run is time-boxed: after a short warm-up it measures its speed and trains ``min(steps, budget)`` steps so the
whole command (training + evaluation + saving) fits in ``time_budget_s`` (default 500 s, for one H100).
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from common.gpu import get_device, seed_everything
from common.runs import json_number, write_json_atomic
from common.schedules import low_snr_weight, make_alphas_cumprod, min_snr_weight
from common.toy.faces import render_faces, split_seed
from common.tweedie import add_noise

SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear",
    "variance_type": "fixed_small", "clip_sample": True, "clip_sample_range": 1.0, "prediction_type": "epsilon",
    "timestep_spacing": "leading", "steps_offset": 0,
}
UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64, "in_channels": 3, "out_channels": 3, "layers_per_block": 2,
    "block_out_channels": (32, 32, 64, 96),  # 16 at 64 px stalled at FD 2.2-2.6 (docs/ddpm_dps.md)
    "down_block_types": ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),  # attention at 16, 8 px
    "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    "norm_num_groups": 8, "attention_head_dim": 32,
}


def build_unet(**overrides: Any) -> torch.nn.Module:
    """The toy-faces ``UNet2DModel`` (about 2.9M parameters, 5.8 MB in fp16); overrides change the config."""
    from diffusers import UNet2DModel

    return UNet2DModel(**{**UNET_CONFIG, **overrides})


TINY_UNET_OVERRIDES: dict[str, Any] = {  # two levels, attention at the lower one
    "block_out_channels": (8, 16), "layers_per_block": 1, "norm_num_groups": 4, "attention_head_dim": 4,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D"), "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
}


def build_tiny_unet(sample_size: int = 16) -> torch.nn.Module:
    """A very small ``UNet2DModel`` (:data:`TINY_UNET_OVERRIDES`) for tests and CPU smoke runs."""
    return build_unet(sample_size=sample_size, **TINY_UNET_OVERRIDES)


def save_pipeline(unet: torch.nn.Module, out: str | Path, metrics: dict[str, Any] | None = None) -> Path:
    """Write ``out`` as a DDPMPipeline folder with fp16 safetensors weights (loadable by from_pretrained)."""
    from diffusers import DDPMPipeline, DDPMScheduler

    out = Path(out)
    half = copy.deepcopy(unet).to("cpu")
    for tensor in list(half.parameters()) + list(half.buffers()):
        tensor.data = tensor.data.half()  # fp16 weights (avoids ModelMixin.to's dtype warning)
    DDPMPipeline(unet=half, scheduler=DDPMScheduler(**SCHEDULER_CONFIG)).save_pretrained(out, safe_serialization=True)
    config_path = out / "unet" / "config.json"  # drop the local path a from_pretrained (init_from) model remembers
    config = json.loads(config_path.read_text())
    if config.pop("_name_or_path", None) is not None:
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True, allow_nan=False) + "\n")
    if metrics is not None:
        write_json_atomic(out / "training_metrics.json", metrics)
    return out


def _load_unet(folder: str | Path) -> torch.nn.Module:
    """The fp32 UNet of a toy-faces folder (``folder/unet``), for continued training."""
    from diffusers import UNet2DModel

    unet_dir = Path(folder) / "unet"
    if not (unet_dir / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a toy-faces folder (no unet/config.json)")
    _check_weight_keys(unet_dir, UNet2DModel.from_config(UNet2DModel.load_config(unet_dir)).state_dict())
    return UNet2DModel.from_pretrained(unet_dir, torch_dtype=torch.float32, use_safetensors=True)


def _check_weight_keys(unet_dir: Path, expected: dict[str, torch.Tensor]) -> None:
    """Refuse a unet/ safetensors whose tensor names or shapes differ from its config.json's model, in one line
    (diffusers would leave the missing ones on the meta device: "Cannot copy out of meta tensor" later)."""
    from safetensors import SafetensorError, safe_open

    path = unet_dir / "diffusion_pytorch_model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{unet_dir} has no diffusion_pytorch_model.safetensors")
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is not a readable safetensors file ({err})") from err
    missing, unexpected = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in set(expected) & set(shapes) if shapes[k] != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{len(names)} {what} (e.g. {names[0]})" for what, names in
                 (("missing", missing), ("unexpected", unexpected), ("of another shape", wrong)) if names]
        raise ValueError(f"{path} does not match {unet_dir / 'config.json'}: tensors {', '.join(parts)}")


def _lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1 - decay)


def _face_batches(batch_size: int, device: torch.device, faces_per_chunk: int = 4096, max_steps: int | None = None,
                  first_chunk: int = 0):
    """Endless training batches [B, 3, 64, 64]. Faces are rendered about ``faces_per_chunk`` at a time (one
    host-to-device copy of parameters per chunk), so the CPU does not wait for the GPU at every step; never more
    than ``max_steps`` batches per chunk (short runs render only what they use). Chunk k uses seed train + k,
    counting from ``first_chunk`` (continued runs with another seed see other faces)."""
    chunk, k = max(1, min(faces_per_chunk // batch_size, max_steps or faces_per_chunk)), first_chunk
    while True:
        faces = render_faces(chunk * batch_size, split_seed("train", k % 1_000_000), 64, device)
        yield from faces.split(batch_size)
        k += 1


def eps_loss(eps_hat: torch.Tensor, eps: torch.Tensor, dc_weight: float = 0.0,
             weight: torch.Tensor | None = None) -> torch.Tensor:
    """Ho et al. (2020) Eq. 14, ||eps - eps_hat||^2 (mean over pixels), plus ``dc_weight`` times the squared error
    of each channel's spatial mean (the image's DC component); ``weight`` [B] scales each sample's term (e.g.
    :func:`common.schedules.min_snr_weight`), then the batch is averaged. eps_hat, eps: [B, C, H, W].

    The plain loss gives the DC component one pixel's worth of weight (it is 1 of H*W Fourier modes); a small
    UNet then leaves it unpredicted, and the unremoved DC noise shows up as colour drift over long DDPM chains.
    """
    err = eps_hat - eps  # [B, C, H, W]
    per_sample = err.pow(2).mean(dim=(1, 2, 3))  # [B]
    if dc_weight > 0:
        per_sample = per_sample + dc_weight * err.mean(dim=(2, 3)).pow(2).mean(dim=1)
    if weight is not None:
        per_sample = per_sample * weight
    return per_sample.mean()


def loss_weight(alpha_bar_t: torch.Tensor, snr_gamma: float | None = None,
                low_snr_cap: float | None = None) -> torch.Tensor | None:
    """Per-sample eps-loss weight [B]: Min-SNR-gamma times the low-SNR boost, each only when set; None = uniform."""
    weight = None if snr_gamma is None else min_snr_weight(alpha_bar_t, snr_gamma)
    if low_snr_cap is not None:
        boost = low_snr_weight(alpha_bar_t, low_snr_cap)
        weight = boost if weight is None else weight * boost
    return weight


def _train_loop(unet, ema, device, total_steps, batch_size, lr, ema_decay, budget_s, alphas_cumprod, gen,
                dc_weight=0.0, compile_model=False, snr_gamma=None, first_chunk=0, low_snr_cap=None):
    """Returns (steps done, mean loss of the last 10%, seconds). Shrinks ``total_steps`` to fit ``budget_s``."""
    model = torch.compile(unet) if compile_model else unet  # shares unet's parameters (optimizer, EMA see them)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.99),
                            fused=device.type == "cuda")
    batches = _face_batches(batch_size, device, max_steps=total_steps, first_chunk=first_chunk)
    use_bf16 = device.type == "cuda"
    warmup, losses, t0, step = min(200, total_steps // 10 + 1), [], time.perf_counter(), 0
    bar = tqdm(total=total_steps, desc="train faces", unit="step")
    while step < total_steps:
        x0 = next(batches)  # [B, 3, 64, 64]
        t = torch.randint(0, len(alphas_cumprod), (batch_size,), generator=gen, device=device)
        eps = torch.randn(x0.shape, generator=gen, device=device)
        alpha_bar_t = alphas_cumprod[t]  # [B]
        x_t = add_noise(x0, eps, alpha_bar_t)
        weight = loss_weight(alpha_bar_t, snr_gamma, low_snr_cap)  # [B] or None
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, total_steps, lr, warmup)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_bf16):
            loss = eps_loss(model(x_t, t).sample.float(), eps, dc_weight, weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        _ema_update(ema, unet, min(ema_decay, (1 + step) / (10 + step)))
        # clone: in torch 2.11 a loss scalar could share the storage of a [B, 3, 64, 64] buffer (seen with mse_loss),
        # so keeping loss.detach() leaked one batch per step (an 80 GB GPU ran out after about 2,800 steps)
        losses.append(loss.detach().clone())
        step += 1
        bar.update(1)
        if step == 20:
            t20 = time.perf_counter()
        if step == 80 and budget_s is not None:  # speed after warm-up (cudnn autotuning), then fit the budget
            now = time.perf_counter()
            per_step = (now - t20) / 60
            total_steps = max(step + 1, min(total_steps, step + int((budget_s - (now - t0)) / per_step)))
            bar.total = total_steps
        if step % 100 == 0:
            mem = torch.cuda.memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
            bar.set_postfix(loss=f"{torch.stack(losses[-100:]).mean().item():.4f}", gpu_gib=f"{mem:.1f}")
    bar.close()
    tail = torch.stack(losses[-max(1, len(losses) // 10):]).mean().item()
    return step, tail, time.perf_counter() - t0


def train(out: str | Path = "common/toy/models/toy-faces", device: str | torch.device = "auto",
          steps: int | None = None, seed: int = 0, batch_size: int = 256, lr: float = 1e-3, ema_decay: float = 0.999,
          time_budget_s: float | None = 500.0, eval_samples: int = 512, init_from: str | Path | None = None,
          dc_weight: float = 20.0, compile_model: bool = False, snr_gamma: float | None = None,
          low_snr_cap: float | None = None, **unet_overrides: Any) -> dict[str, Any]:
    """Train toy-faces and save it to ``out``; prints a progress bar and a final metrics table; returns metrics.

    ``steps`` is an upper bound (default 20000); ``time_budget_s`` bounds the wall time of training (evaluation
    adds about 30 s on a GPU). ``eval_samples`` = 0 skips the DDIM-50 Fréchet-distance evaluation.
    ``init_from`` (a toy-faces folder) continues training from its weights instead of a fresh initialisation.
    ``dc_weight`` is the extra weight on the per-channel mean of the eps error (see :func:`eps_loss`);
    ``snr_gamma`` turns on Min-SNR-gamma loss weighting (:func:`common.schedules.min_snr_weight`), None = uniform;
    ``low_snr_cap`` weights the noisiest steps up to that factor (:func:`common.schedules.low_snr_weight`).
    ``seed`` also picks the stream of training faces, so a continued run with a new seed sees new faces.
    A step at batch 256 costs about as much as one at 128 on an H100 (launch-bound), hence the large batch.
    ``compile_model`` trains through ``torch.compile``: on an H100 at batch 1024, 10,060 instead of 5,939 images/s,
    after about 90 s of compilation (worth it for runs of several minutes).
    """
    device = get_device(str(device))
    seed_everything(seed)
    gen = torch.Generator(device).manual_seed(seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    unet = (build_unet(**unet_overrides) if init_from is None else _load_unet(init_from)).to(device).train()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    alphas_cumprod = make_alphas_cumprod("linear", 1000, 1e-4, 0.02).to(device)  # SCHEDULER_CONFIG's schedule
    train_budget = None if time_budget_s is None else max(10.0, time_budget_s - 40.0)
    done, loss, seconds = _train_loop(unet, ema, device, steps or 20000, batch_size, lr, ema_decay, train_budget,
                                      alphas_cumprod, gen, dc_weight, compile_model, snr_gamma,
                                      first_chunk=50_000 * seed,  # each seed its own stream of faces
                                      low_snr_cap=low_snr_cap)
    metrics: dict[str, Any] = {"steps": done, "init_from": None if init_from is None else str(init_from),
                               "batch_size": batch_size, "lr": lr, "ema_decay": ema_decay, "dc_weight": dc_weight,
                               "compiled": compile_model, "snr_gamma": snr_gamma, "low_snr_cap": low_snr_cap,
                               "final_loss": json_number(round(loss, 5)),  # null if it diverged
                               "train_seconds": round(seconds, 1), "device": str(device),
                               "parameters": sum(p.numel() for p in ema.parameters()), "seed": seed}
    if eval_samples > 0:
        metrics.update(_evaluate(ema, device, eval_samples, seed))
    save_pipeline(ema, out, metrics)
    _print_table(metrics, out)
    return metrics


def _evaluate(ema: torch.nn.Module, device: torch.device, n: int, seed: int) -> dict[str, Any]:
    """FD of n DDIM-50 EMA samples vs held-out faces, with the data-vs-data and noise baselines."""
    from common.sampling import sample_images, sampling_config
    from common.toy.fid import face_fd_report

    samples = sample_images(ema, sampling_config(SCHEDULER_CONFIG), "DDIM", n, 50, seed=10_000 + seed, batch_size=256,
                            progress=False)
    fds, label = face_fd_report({"ddim50": samples}, n=n, device=device)
    return {"fd_features": label, "fd_ddim50": round(fds["ddim50"], 4),
            "fd_data_vs_data": round(fds["data-vs-data"], 4), "fd_noise_vs_data": round(fds["noise-vs-data"], 4),
            "fd_samples": n}


def _print_table(metrics: dict[str, Any], out: str | Path) -> None:
    print(f"\ntoy-faces saved to {out}")
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        print(f"  {key:<{width}}  {value}")
