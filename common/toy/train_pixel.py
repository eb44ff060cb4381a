"""Train toy-pixel: a tiny text-conditioned pixel-space diffusion model on 64x64 shapes (DeepFloyd IF's toy stand-in).

``python -m common.toy train pixel --device cuda --out common/toy/models/toy-pixel --force``

- UNet: ``UNet2DConditionModel`` 64x64x3 -> eps (3 channels), levels 64/32/16 px with 32/64/96 channels,
  cross-attention at 32 and 16 px on toy-sd's frozen text encoder (hidden size 64); ~2.7M parameters, shipped as
  fp16 safetensors (< 6 MB).
- Data: ``common.toy.shapes`` rendered on the fly on the training device; 10% caption dropout to "" (the
  unconditional prompt for CFG). The 169 caption embeddings are computed once (the encoder is frozen).
- Objective: eps-prediction MSE (Ho et al. 2020, Eq. 14) with the cosine schedule (Nichol & Dhariwal 2021,
  Eq. 17; IF uses it too); AdamW, warm-up + cosine LR, EMA 0.999, bf16 autocast on CUDA. Training stops at
  ``steps`` or after ``time_budget_s`` seconds, whichever comes first (the LR schedule follows that progress).
- Folder: ``unet/``, ``scheduler/`` (``DDIMScheduler`` config), ``model_index.json``; the registry loads the
  tokenizer and text encoder from toy-sd.
- Final metrics: loss, toy-clip judge accuracy of DDIM samples (``common.sampling``) for fixed test
  captions, folder size.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from common.cfg import cfg_combine, split_cfg_batch
from common.gpu import autocast, get_device, seed_everything
from common.hub import dtype_kw
from common.registry import load_local_weights
from common.runs import write_config
from common.sampling import ddim_sample_loop, sampling_config
from common.schedules import make_alphas_cumprod
from common.toy import sd_model, shapes
from common.toy.train_sd import Budget, caption_embeddings, caption_lut, ema_update, eval_captions, lr_factor
from common.tweedie import add_noise

MODEL_NAME = "toy-pixel"
DEFAULT_FOLDER = Path(__file__).parent / "models" / MODEL_NAME
UNET_CONFIG = {
    "sample_size": 64, "in_channels": 3, "out_channels": 3,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],  # 64 -> 32 -> 16
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [32, 64, 96], "layers_per_block": 1, "cross_attention_dim": 64,
    "attention_head_dim": 4, "norm_num_groups": 16,
}
SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "beta_start": 0.0001,
                    "beta_end": 0.02, "steps_offset": 0, "set_alpha_to_one": False, "clip_sample": False,
                    "prediction_type": "epsilon", "timestep_spacing": "leading"}
DEFAULTS = {"steps": 20000, "batch_size": 128, "lr": 5e-4, "warmup": 300, "weight_decay": 0.01, "ema_decay": 0.999,
            "caption_dropout": 0.1, "time_budget_s": 360.0, "image_size": 64, "eval_captions": 200,
            "eval_steps": 30, "guidance_scale": 5.0, "text_from": None, "clip_folder": None, "unet": None}


def build_unet(overrides: dict | None = None):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**{**UNET_CONFIG, **(overrides or {})})


def load_text(text_from: str | Path | None):
    """Frozen tokenizer + text encoder from a toy-sd style folder (default: the shipped toy-sd)."""
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(text_from) if text_from is not None else sd_model.DEFAULT_FOLDER
    if not (folder / "text_encoder").is_dir():
        raise FileNotFoundError(f"toy-sd text encoder missing in {folder}; "
                                f"train toy-sd first ({sd_model.TRAIN_COMMAND})")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))  # text files only
    encoder = load_local_weights(CLIPTextModel.from_pretrained, folder / "text_encoder",
                                 **dtype_kw(torch.float32, "transformers"))
    return tokenizer, encoder.eval().requires_grad_(False)


def eps_loss(unet, x0: torch.Tensor, cond: torch.Tensor, alphas_cumprod: torch.Tensor, gen: torch.Generator,
             dtype: torch.dtype) -> torch.Tensor:
    """||eps - eps_theta(x_t, t, text)||^2 at uniform t (Ho et al. 2020, Eq. 14); cond: text states ("" = row -1)."""
    t = torch.randint(0, alphas_cumprod.shape[0], (x0.shape[0],), device=x0.device, generator=gen)
    noise = torch.randn(x0.shape, device=x0.device, generator=gen)
    with autocast(x0.device, dtype):
        eps_hat = unet(add_noise(x0, noise, alphas_cumprod[t]), t, encoder_hidden_states=cond).sample
    return F.mse_loss(eps_hat.float(), noise)


def train_loop(unet, table: torch.Tensor, device: torch.device, cfg: dict, seed: int) -> tuple:
    """eps-prediction training; returns (EMA UNet in fp32, steps done, loss history per 50 steps)."""
    alphas_cumprod = make_alphas_cumprod("squaredcos_cap_v2").to(device)  # alpha_bar_t [1000], fp32
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    unet = unet.to(device).train()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                            fused=device.type == "cuda")
    spec_gen = torch.Generator().manual_seed(shapes.split_seed("train", seed))
    gen = torch.Generator(device).manual_seed(seed)
    lut = caption_lut(device)
    budget, warm = Budget(cfg["steps"], cfg["time_budget_s"]), cfg["warmup"] / cfg["steps"]
    bar = tqdm(total=cfg["steps"], desc="toy-pixel", dynamic_ncols=True, mininterval=1.0)
    history, running, step = [], torch.zeros((), device=device), 0
    while budget.progress(step) < 1.0:
        for group in opt.param_groups:
            group["lr"] = cfg["lr"] * lr_factor(budget.progress(step), warm)
        x0, params = shapes.sample_batch(cfg["batch_size"], spec_gen, cfg["image_size"], device)
        caption = lut[params["color"], params["shape"], params["background"]]
        drop = torch.rand(caption.shape, device=device, generator=gen) < cfg["caption_dropout"]
        opt.zero_grad(set_to_none=True)
        loss = eps_loss(unet, x0, table[torch.where(drop, table.shape[0] - 1, caption)], alphas_cumprod, gen, dtype)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema_update(ema, unet, min(cfg["ema_decay"], (1 + step) / (10 + step)))
        running, step = running + loss.detach(), step + 1
        if step % 50 == 0:
            history.append(running.item() / 50)
            running = torch.zeros((), device=device)
            bar.set_postfix(loss=f"{history[-1]:.4f}")
        bar.update(1)
    bar.close()
    if not history:
        history.append(running.item() / max(1, step % 50))
    return ema.float(), step, history


def save_folder(unet, out: Path) -> Path:
    """Write unet/ (fp16 safetensors), scheduler/ and model_index.json."""
    from diffusers import DDIMScheduler

    out.mkdir(parents=True, exist_ok=True)
    copy.deepcopy(unet).to("cpu", torch.float16).save_pretrained(out / "unet", safe_serialization=True)
    DDIMScheduler(**SCHEDULER_CONFIG).save_pretrained(out / "scheduler")
    index = {"_class_name": "ToyPixelPipeline", "_diffusers_version": "0.32.0",
             "unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", "DDIMScheduler"],
             "text_from": "toy-sd", "_note": "tokenizer and text encoder: common/toy/models/toy-sd"}
    (out / "model_index.json").write_text(json.dumps(index, indent=2, allow_nan=False) + "\n")
    return out


def cfg_eps_fn(unet, cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: float):
    """eps_fn(x_t [B, 3, S, S], t) with classifier-free guidance, eps_uncond + s (eps_cond - eps_uncond)
    (Ho & Salimans 2022, Eq. 6), uncond and cond rows in one UNet batch; cond, uncond: text states [B, L, D]."""
    dtype = next(unet.parameters()).dtype

    def eps_fn(x_t: torch.Tensor, t: int) -> torch.Tensor:
        if guidance_scale == 1.0:
            tt = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
            return unet(x_t.to(dtype), tt, encoder_hidden_states=cond).sample.float()
        tt = torch.full((2 * x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
        out = unet(torch.cat([x_t, x_t]).to(dtype), tt, encoder_hidden_states=torch.cat([uncond, cond])).sample
        eps_uncond, eps_cond = split_cfg_batch(out.float())  # [B, 3, S, S] each
        return cfg_combine(eps_uncond, eps_cond, guidance_scale)

    return eps_fn


@torch.no_grad()
def sample_captions(unet, table: torch.Tensor, captions: list[str], steps: int, guidance_scale: float,
                    seed: int = 0, batch_size: int = 100) -> torch.Tensor:
    """DDIM (eta = 0) samples [B, 3, S, S] in [-1, 1] for caption strings (their rows of ``table``), with the
    reference loop :func:`common.sampling.ddim_sample_loop` and the folder's scheduler config."""
    all_caps = shapes.all_captions()
    rows = torch.tensor([all_caps.index(c) for c in captions], device=table.device)
    config = sampling_config(SCHEDULER_CONFIG)  # alpha_bar_t [1000]; final alpha_bar_0 (set_alpha_to_one=False)
    timesteps = config.timesteps(steps)
    size, out = int(unet.config.sample_size), []
    for start in range(0, len(captions), batch_size):
        idx = rows[start : start + batch_size]
        eps_fn = cfg_eps_fn(unet, table[idx], table[-1:].expand(len(idx), -1, -1), guidance_scale)
        gen = torch.Generator().manual_seed(seed + start)
        x_T = torch.randn(len(idx), 3, size, size, generator=gen).to(table.device)  # [B, 3, S, S]
        x0 = ddim_sample_loop(eps_fn, x_T, timesteps, config.alphas_cumprod.to(table.device), eta=0.0,
                              clip_sample=config.clip_sample, final_alpha_cumprod=config.final_alpha_cumprod)
        out.append(x0.clamp(-1, 1).float().cpu())
    return torch.cat(out)


def judge_accuracy(images: torch.Tensor, captions: list[str], clip_folder, device) -> float | None:
    """Fraction judged fully correct by toy-clip (None when toy-clip weights are not available)."""
    from common.toy import judge

    try:
        return judge.fully_correct(images, captions, folder=clip_folder, device=device).float().mean().item()
    except FileNotFoundError:
        return None


def train(out: str | Path = DEFAULT_FOLDER, device: str = "auto", steps: int | None = None, seed: int = 0,
          **overrides) -> dict:
    """Train toy-pixel, save it to ``out`` and print the metrics table; returns the metrics.

    ``overrides``: any key of :data:`DEFAULTS` (``unet`` = dict of UNet config overrides, for tests).
    """
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown toy-pixel training options: {', '.join(sorted(unknown))}")
    cfg = {**DEFAULTS, **overrides, **({"steps": steps} if steps is not None else {})}
    cfg["warmup"] = min(cfg["warmup"], max(1, cfg["steps"] // 10))
    device, out = get_device(device), Path(out)
    seed_everything(seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    tokenizer, encoder = load_text(cfg["text_from"])
    table = caption_embeddings(encoder, tokenizer, device)  # [169, 77, 64]; last row = ""
    unet_overrides = {"sample_size": cfg["image_size"], **(cfg["unet"] or {})}
    start = time.perf_counter()
    ema, done, history = train_loop(build_unet(unet_overrides), table, device, cfg, seed)
    train_seconds = time.perf_counter() - start
    save_folder(ema, out)
    captions = eval_captions(cfg["eval_captions"])
    images = sample_captions(ema.to(device).eval(), table, captions, cfg["eval_steps"], cfg["guidance_scale"])
    acc = judge_accuracy(images, captions, cfg["clip_folder"], device) if cfg["image_size"] == 64 else None
    size_mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    metrics = {"steps_done": done, "train_seconds": round(train_seconds, 1), "first_loss": history[0],
               "final_loss": history[-1], "loss_every_50_steps": history, "judge_fully_correct": acc,
               "folder_mb": round(size_mb, 3), "params_m": sum(p.numel() for p in ema.parameters()) / 1e6}
    write_config(out, {"model": MODEL_NAME, "seed": seed, "device": str(device), **cfg, "metrics": metrics},
                 name="train_config.json")
    print("\n| metric | value |\n|---|---|")
    for key in ("steps_done", "train_seconds", "first_loss", "final_loss", "params_m", "folder_mb"):
        value = metrics[key]
        print(f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |")
    shown = "n/a (no toy-clip)" if acc is None else f"{100 * acc:.1f}%"
    print(f"| toy-clip judge: samples fully correct ({len(captions)} test captions, {cfg['eval_steps']} DDIM steps, "
          f"CFG {cfg['guidance_scale']}) | {shown} |")
    return metrics
