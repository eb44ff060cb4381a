"""Train toy-sd from scratch: stage 1 the VAE, stage 2 the UNet on frozen VAE latents and the frozen toy-clip text.

Latent diffusion (Rombach et al. 2022): the VAE learns 64x64x3 <-> 16x16x4 with an L1 + L2 reconstruction loss
and a small KL term (Sec. 3.1, "KL-reg"); the UNet learns eps-prediction, ``|| eps - eps_theta(z_t, t, c) ||^2``
(Ho et al. 2020, Eq. 14) on ``z_t = sqrt(alpha_bar_t) z_0 + sqrt(1 - alpha_bar_t) eps`` with SD's scaled_linear
betas, 10% of captions replaced by "" for classifier-free guidance (Ho & Salimans 2022), and EMA weights.
Shapes images are rendered on the device every step; UNet training draws from a pre-encoded latent pool.

GPU (one H100), in two phases of at most ~7.5 minutes each (phase 1 can share the GPU with toy-clip training)::

    python -m common.toy train sd --stage vae --device cuda --out common/toy/models/toy-sd --force
    python -m common.toy train sd --stage unet --device cuda --out common/toy/models/toy-sd --force \\
        --clip common/toy/models/toy-clip

(``python -m common.toy train sd --device cuda --out ...`` runs both stages in one process.)

Both stages stop at their step count or their time budget, whichever comes first; the learning-rate schedule
follows the larger of the two progress fractions, so it always anneals to the end.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from tqdm import tqdm

from common.cli import check_finite
from common.gpu import autocast, get_device, seed_everything
from common.hub import dtype_kw
from common.registry import load_local_weights
from common.runs import write_config, write_json_atomic
from common.toy import sd_model, shapes
from common.toy.measure_sd import (
    caption_correctness,
    eval_captions,  # noqa: F401  (re-exported for train_pixel)
    folder_size_mb,
    print_table,
    vae_psnr,
)
from common.toy.train_cli import train_sd as main  # `python -m common.toy.train_sd` = `... train sd`

VAE_DEFAULTS = {"steps": 20000, "batch_size": 128, "lr": 5e-4, "warmup": 300, "kl_weight": 1e-5,
                "time_budget_s": 400.0, "log_every": 50, "scale_images": 2048}
UNET_DEFAULTS = {"steps": 15000, "batch_size": 256, "lr": 3e-4, "warmup": 500, "weight_decay": 0.01,
                 "ema_decay": 0.999, "caption_dropout": 0.1, "pool_size": 131072, "time_budget_s": 380.0,
                 "log_every": 50}
EVAL_DEFAULTS = {"psnr_images": 1000, "captions": 200, "num_inference_steps": 50, "guidance_scale": 7.5}
METRICS_FILE = "training_metrics.json"


# ---------------------------------------------------------------------------------------------------------------
# Small pieces


def lr_factor(progress: float, warmup_frac: float) -> float:
    """Linear warm-up then cosine decay to 10%: progress in [0, 1] -> multiplier of the base learning rate."""
    if progress < warmup_frac:
        return max(progress / warmup_frac, 1e-3)
    p = min(1.0, (progress - warmup_frac) / max(1e-8, 1 - warmup_frac))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p))


class Budget:
    """Progress = max(step / steps, elapsed / time budget): training ends when either runs out."""

    def __init__(self, steps: int, time_budget_s: float | None):
        self.steps, self.time_budget_s, self.t0 = steps, time_budget_s, time.perf_counter()

    def progress(self, step: int) -> float:
        frac = step / self.steps
        if self.time_budget_s:
            frac = max(frac, (time.perf_counter() - self.t0) / self.time_budget_s)
        return frac


class LossLog:
    """Running mean of a loss over windows of ``every`` steps (one host sync per window), shown on the bar."""

    def __init__(self, bar: tqdm, what: str, every: int = 50):
        self.bar, self.what, self.every, self.history, self.total, self.count = bar, what, every, [], 0.0, 0

    def add(self, loss: torch.Tensor) -> None:
        self.total, self.count = self.total + loss.detach(), self.count + 1
        if self.count == self.every:
            self.flush()
        self.bar.update(1)

    def flush(self) -> None:
        if self.count:
            mean = float(self.total) / self.count
            check_finite(mean, self.what)
            self.history.append(mean)
            self.bar.set_postfix(loss=f"{mean:.4f}")
        self.total, self.count = 0.0, 0


def caption_lut(device: torch.device | str) -> torch.Tensor:
    """[8, 3, 8] long: (color, shape, background) indices -> position in ``shapes.all_captions()`` (-1 if invalid)."""
    lut = torch.full((len(shapes.COLORS), len(shapes.SHAPES), len(shapes.COLORS)), -1, dtype=torch.long)
    for c, s, b in shapes.all_attributes():
        lut[shapes.COLORS.index(c), shapes.SHAPES.index(s), shapes.COLORS.index(b)] = shapes.caption_index(c, s, b)
    return lut.to(device)


def _setup_cuda(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


# ---------------------------------------------------------------------------------------------------------------
# Stage 1: VAE


def vae_loss(vae: AutoencoderKL, images: torch.Tensor, kl_weight: float) -> torch.Tensor:
    """L1 + L2 reconstruction of a posterior sample plus ``kl_weight`` * KL(q(z|x) || N(0, I)) per latent element."""
    posterior = vae.encode(images).latent_dist
    recon = vae.decode(posterior.sample()).sample.float()
    l1 = (recon - images).abs().mean()
    l2 = (recon - images).pow(2).mean()
    kl = posterior.kl().float().mean() / posterior.mean[0].numel()
    return l1 + l2 + kl_weight * kl


def train_vae(device: torch.device, steps: int, seed: int, cfg: dict,
              dtype: torch.dtype) -> tuple[AutoencoderKL, int, list[float]]:
    """Stage 1 from scratch on fresh training-split batches; returns (VAE with scaling factor, steps, losses)."""
    vae = sd_model.build_vae().to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg["lr"], weight_decay=0.0, betas=(0.9, 0.99))
    data_gen = torch.Generator().manual_seed(shapes.split_seed("train", seed % 10**6))
    budget, warm = Budget(steps, cfg["time_budget_s"]), cfg["warmup"] / steps
    log = LossLog(tqdm(total=steps, desc="toy-sd VAE", dynamic_ncols=True), "VAE loss", cfg["log_every"])
    step = 0
    while budget.progress(step) < 1.0:
        for group in opt.param_groups:
            group["lr"] = cfg["lr"] * lr_factor(budget.progress(step), warm)
        images, _ = shapes.sample_batch(cfg["batch_size"], data_gen, device=device)
        with autocast(device, dtype):
            loss = vae_loss(vae, images.contiguous(memory_format=torch.channels_last), cfg["kl_weight"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        log.add(loss)
    log.flush()
    log.bar.close()
    vae.eval().requires_grad_(False)
    vae.register_to_config(scaling_factor=latent_scaling_factor(vae, device, seed, cfg["scale_images"]))
    return vae, step, log.history


@torch.no_grad()
def latent_scaling_factor(vae: AutoencoderKL, device: torch.device, seed: int, n: int = 2048) -> float:
    """1 / std of posterior samples of ``n`` validation images (SD's recipe), rounded to 5 significant digits."""
    gen = torch.Generator().manual_seed(shapes.split_seed("val", seed % 10**6))
    latents = torch.cat([vae.encode(shapes.sample_batch(min(256, n - i), gen, device=device)[0]).latent_dist.sample()
                         for i in range(0, n, 256)])
    return float(f"{1.0 / latents.float().std().item():.5g}")


def save_vae(vae: AutoencoderKL, folder: Path) -> Path:
    """Write ``folder/vae`` as fp16 safetensors + config (the format of the SD folder)."""
    (folder / "vae").mkdir(parents=True, exist_ok=True)
    vae.save_config(folder / "vae")
    sd_model.save_file({k: v.detach().to("cpu", torch.float16).contiguous() for k, v in vae.state_dict().items()},
                       str(folder / "vae" / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
    return folder / "vae"


def load_vae(folder: Path, device: torch.device) -> AutoencoderKL:
    if not (folder / "vae" / "config.json").is_file():
        raise FileNotFoundError(f"no trained VAE in {folder / 'vae'}; run the VAE stage first: "
                                f"python -m common.toy train sd --stage vae --out {folder}")
    vae = load_local_weights(AutoencoderKL.from_pretrained, folder / "vae", **dtype_kw(torch.float32))
    return vae.to(device).eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------------------------
# Stage 2: UNet


@torch.no_grad()
def caption_embeddings(text_encoder, tokenizer, device: torch.device | str) -> torch.Tensor:
    """Text-encoder hidden states of ``shapes.all_captions()`` then "" (last row): [169, 77, D] fp32."""
    ids = sd_model.tokenize(tokenizer, shapes.all_captions() + [""]).to(device)
    return text_encoder.to(device)(ids)[0].float()


@torch.no_grad()
def latent_pool(vae: AutoencoderKL, device: torch.device, n: int, seed: int,
                chunk: int = 1024) -> dict[str, torch.Tensor]:
    """Encode ``n`` training images once: posterior ``mean``/``std`` [n, 4, 16, 16] and ``caption`` index [n]."""
    gen = torch.Generator().manual_seed(shapes.split_seed("train", (seed + 1) % 10**6))
    lut = caption_lut(device)
    parts: dict[str, list[torch.Tensor]] = {"mean": [], "std": [], "caption": []}
    for start in tqdm(range(0, n, chunk), desc="encode latent pool", dynamic_ncols=True, leave=False):
        images, params = shapes.sample_batch(min(chunk, n - start), gen, device=device)
        dist = vae.encode(images).latent_dist
        parts["mean"].append(dist.mean.float())
        parts["std"].append(dist.std.float())
        parts["caption"].append(lut[params["color"], params["shape"], params["background"]])
    return {k: torch.cat(v) for k, v in parts.items()}


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, over all parameters."""
    ema_params = [p for p in ema.parameters()]
    params = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)


def unet_batch(pool: dict[str, torch.Tensor], table: torch.Tensor, scaling_factor: float, batch_size: int,
               caption_dropout: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw scaled latents z_0 [B, 4, 16, 16] (posterior samples) and their text states [B, 77, D] (10% empty)."""
    device = pool["mean"].device
    idx = torch.randint(pool["mean"].shape[0], (batch_size,), device=device, generator=gen)
    eps = torch.randn((batch_size, *pool["mean"].shape[1:]), device=device, generator=gen)
    z0 = (pool["mean"][idx] + pool["std"][idx] * eps) * scaling_factor
    drop = torch.rand(batch_size, device=device, generator=gen) < caption_dropout
    caption = torch.where(drop, table.shape[0] - 1, pool["caption"][idx])  # last row of table = ""
    return z0, table[caption]


def eps_training_step(unet, opt: torch.optim.Optimizer, x0: torch.Tensor, cond: torch.Tensor,
                      alphas_cumprod: torch.Tensor, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """One optimiser step on ``|| eps - eps_theta(x_t, t, cond) ||^2`` with t ~ U{0..T-1} (Ho et al. 2020, Eq. 14).

    ``x0`` [B, C, H, W] (scaled latents or pixels), ``cond`` [B, 77, D]; bf16 autocast when ``dtype`` says so,
    gradient norm clipped at 1. Returns the detached loss.
    """
    from common.tweedie import add_noise

    device = x0.device
    t = torch.randint(0, alphas_cumprod.shape[0], (x0.shape[0],), device=device, generator=gen)
    noise = torch.randn(x0.shape, device=device, generator=gen)
    x_t = add_noise(x0, noise, alphas_cumprod[t]).contiguous(memory_format=torch.channels_last)
    with autocast(device, dtype):
        eps_hat = unet(x_t, t, encoder_hidden_states=cond).sample
    loss = F.mse_loss(eps_hat.float(), noise)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
    opt.step()
    return loss.detach()


def train_unet(vae: AutoencoderKL, text_states: torch.Tensor, device: torch.device, steps: int, seed: int,
               cfg: dict, dtype: torch.dtype):
    """eps-prediction training of a fresh UNet; returns (EMA UNet, steps done, windowed losses)."""
    alphas_cumprod = sd_model.build_scheduler().alphas_cumprod.to(device)  # alpha_bar_t, fp32 [1000]
    pool = latent_pool(vae, device, cfg["pool_size"], seed)
    unet = sd_model.build_unet().to(device, memory_format=torch.channels_last).train()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                            fused=device.type == "cuda")
    gen = torch.Generator(device).manual_seed(seed)
    budget, warm = Budget(steps, cfg["time_budget_s"]), cfg["warmup"] / steps
    sf = vae.config.scaling_factor
    log = LossLog(tqdm(total=steps, desc="toy-sd UNet", dynamic_ncols=True), "UNet loss", cfg["log_every"])
    step = 0
    while budget.progress(step) < 1.0:
        for group in opt.param_groups:
            group["lr"] = cfg["lr"] * lr_factor(budget.progress(step), warm)
        z0, cond = unet_batch(pool, text_states, sf, cfg["batch_size"], cfg["caption_dropout"], gen)
        loss = eps_training_step(unet, opt, z0, cond, alphas_cumprod, gen, dtype)
        ema_update(ema, unet, min(cfg["ema_decay"], (1 + step) / (10 + step)))
        step += 1
        log.add(loss)
    log.flush()
    log.bar.close()
    return ema.float().to(memory_format=torch.contiguous_format), step, log.history


# ---------------------------------------------------------------------------------------------------------------
# Entry point


def load_text_encoder(clip_folder: str | Path | None):
    """(CLIPTextModel converted from the trained toy-clip, rounded through fp16 like the shipped file; tokenizer)."""
    from common.toy.clip_model import load_toy_clip

    clip_model, _, _ = load_toy_clip(clip_folder)
    text_encoder = sd_model.convert_text_tower(clip_model.float()).to(torch.float16).to(torch.float32)
    return text_encoder, sd_model.build_tokenizer()


def train(out: str | Path = sd_model.DEFAULT_FOLDER, device: str = "auto", steps: int | None = None, seed: int = 0,
          stage: str = "all", clip: str | Path | None = None, evaluate: bool = True, overrides: dict | None = None,
          **_: object) -> dict[str, float]:
    """Train toy-sd (``stage`` = vae, unet or all) into the SD folder ``out``; print and return the metrics.

    ``steps`` overrides the step count of each stage that runs; ``overrides`` replaces entries of
    ``VAE_DEFAULTS`` / ``UNET_DEFAULTS`` / ``EVAL_DEFAULTS`` (keys prefixed ``vae_``, ``unet_``, ``eval_``).
    """
    if stage not in ("vae", "unet", "all"):
        raise ValueError(f"unknown stage {stage!r}; choose vae, unet or all")
    out, dev = Path(out), get_device(device)
    _setup_cuda(dev)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    cfgs = {"vae": dict(VAE_DEFAULTS), "unet": dict(UNET_DEFAULTS), "eval": dict(EVAL_DEFAULTS)}
    for key, value in (overrides or {}).items():
        part, name = key.split("_", 1)
        if part not in cfgs or name not in cfgs[part]:
            raise ValueError(f"unknown training option {key!r}")
        cfgs[part][name] = value
    if steps is not None:
        cfgs["vae"]["steps"] = cfgs["unet"]["steps"] = steps
    metrics: dict[str, float] = {}
    if stage in ("vae", "all"):
        seed_everything(seed)
        t0 = time.perf_counter()
        vae, done, losses = train_vae(dev, cfgs["vae"]["steps"], seed, cfgs["vae"], dtype)
        save_vae(vae, out)
        metrics.update(vae_steps=done, vae_train_s=round(time.perf_counter() - t0, 1),
                       scaling_factor=vae.config.scaling_factor, vae_loss_first=losses[0], vae_loss_last=losses[-1])
        del vae
    vae = load_vae(out, dev)  # the fp16 file, as the pipeline will see it
    if evaluate:
        metrics["vae_psnr_db"] = vae_psnr(vae, dev, cfgs["eval"]["psnr_images"])
    if stage in ("unet", "all"):
        seed_everything(seed)
        text_encoder, tokenizer = load_text_encoder(clip)
        t0 = time.perf_counter()
        states = caption_embeddings(text_encoder, tokenizer, dev)
        unet, done, losses = train_unet(vae, states, dev, cfgs["unet"]["steps"], seed, cfgs["unet"], dtype)
        metrics.update(unet_steps=done, unet_train_s=round(time.perf_counter() - t0, 1),
                       unet_loss_first=losses[0], unet_loss_last=losses[-1])
        pipe = sd_model.assemble_pipeline(vae.cpu(), text_encoder.cpu(), tokenizer, unet.cpu())
        sd_model.save_sd_folder(pipe, out)
        metrics["folder_mb"] = round(folder_size_mb(out), 2)
        if evaluate:
            pipe = sd_model.load_sd_pipeline(out, dev)
            ev = cfgs["eval"]
            metrics["fully_correct"], _, _ = caption_correctness(
                pipe, clip, ev["captions"], dev, num_inference_steps=ev["num_inference_steps"],
                guidance_scale=ev["guidance_scale"])
    _write_records(out, stage, seed, cfgs, metrics)
    return metrics


def _write_records(out: Path, stage: str, seed: int, cfgs: dict, metrics: dict) -> None:
    """Merge ``metrics`` into ``out/training_metrics.json``, write ``train_config.json``, print the table."""
    path = out / METRICS_FILE
    record = json.loads(path.read_text()) if path.is_file() else {}
    record.update(metrics)
    write_json_atomic(path, record)
    write_config(out, {"stage": stage, "seed": seed, **cfgs}, name=f"train_config_{stage}.json")
    rows = []
    if "vae_psnr_db" in metrics:
        rows.append((f"VAE PSNR, {cfgs['eval']['psnr_images']} test images", f"{metrics['vae_psnr_db']:.2f} dB",
                     ">= 28 dB"))
    if "fully_correct" in metrics:
        ev = cfgs["eval"]
        rows.append((f"fully correct, {ev['captions']} test captions, DDIM {ev['num_inference_steps']} "
                     f"cfg {ev['guidance_scale']}", f"{100 * metrics['fully_correct']:.1f}%", ">= 90%"))
    if "folder_mb" in metrics:
        rows.append(("folder size", f"{metrics['folder_mb']:.2f} MB", "<= 16 MB"))
    for key in ("vae_steps", "vae_train_s", "vae_loss_first", "vae_loss_last", "scaling_factor", "unet_steps",
                "unet_train_s", "unet_loss_first", "unet_loss_last"):
        if key in metrics:
            value = metrics[key]
            rows.append((key, f"{value:.4g}" if isinstance(value, float) else str(value), ""))
    print_table(rows)


if __name__ == "__main__":
    main()
