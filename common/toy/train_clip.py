"""Train toy-clip from scratch on on-the-fly shapes batches (CLIP, Radford et al. 2021, Fig. 3 loss).

Every step renders a fresh batch of training-split images on the device and encodes all 168 valid captions
once. The loss is CLIP's symmetric InfoNCE with the duplicate captions of a batch merged: image -> text is a
168-way cross-entropy against the image's own caption, text -> image spreads the target uniformly over the
images that share the caption. Images get light blur, colour-shift and noise augmentation so the judge stays
reliable on slightly blurry or off-colour generated samples.

Reproduce the shipped weights (defaults: 3000 steps x 512 images, seed 0)::

    python -m common.toy train clip --device cuda --out common/toy/models/toy-clip --force

Wall time: 75 s of training (plus start-up and evaluation) on one GPU, giving 100% zero-shot accuracy on
colour, shape and background (1,000 test images, fp16 weights). A 2-core CPU runs the same command with
``--device cpu`` at ~2.5-3 s per step, i.e. about 2-2.5 hours; 300 steps of 64 images on CPU (~2-3 min unloaded,
14 min on a busy machine) already reach 100% colour / background and ~57% shape (chance 33%), loss 5.0 -> 1.9.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from common.cli import check_finite
from common.gpu import autocast, get_device, seed_everything
from common.runs import write_config
from common.toy import shapes
from common.toy.clip_model import (
    create_toy_clip,
    encode_text_trimmed,
    get_tokenizer,
    images_to_clip_input,
    load_toy_clip,
    save_toy_clip,
)
from common.toy.judge import attribute_accuracy, caption_features, caption_logits, predict_indices

DEFAULTS = {"steps": 3000, "batch_size": 512, "lr": 1e-3, "weight_decay": 0.1, "warmup": 200,
            "eval_images": 1000, "image_size": 64}
BAR = 0.98  # issue 3: zero-shot accuracy >= 98% per attribute on 1,000 test images
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the learned temperature at 100


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """Separable Gaussian blur with one ``sigma`` (pixels, [B]) per image; sigma ~ 0 leaves the image unchanged."""
    b, c, h, w = images.shape
    k = torch.arange(-radius, radius + 1, device=images.device, dtype=torch.float32)
    weights = torch.exp(-k.view(1, -1) ** 2 / (2 * sigma.clamp_min(1e-3).view(-1, 1) ** 2))  # [B, 2r+1]
    weights = (weights / weights.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # [B*C, 2r+1]
    x = F.pad(images.reshape(1, b * c, h, w), (radius,) * 4, mode="reflect")
    x = F.conv2d(x, weights.view(b * c, 1, 1, -1).to(x.dtype), groups=b * c)
    x = F.conv2d(x, weights.view(b * c, 1, -1, 1).to(x.dtype), groups=b * c)
    return x.view(b, c, h, w)


def augment(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Light degradations, each on about half the batch: blur (sigma 0.3-1.2 px), colour shift, pixel noise."""
    b, device = images.shape[0], images.device
    u = torch.rand(b, 6, generator=generator, device=device)
    sigma = torch.where(u[:, 0] < 0.5, 0.3 + 0.9 * u[:, 1], torch.zeros_like(u[:, 1]))
    images = gaussian_blur(images, sigma)
    shift = 0.04 * torch.randn(b, 3, 1, 1, generator=generator, device=device) * (u[:, 2] < 0.5).view(-1, 1, 1, 1)
    noise_std = torch.where(u[:, 3] < 0.5, 0.08 * u[:, 4], torch.zeros_like(u[:, 4])).view(-1, 1, 1, 1)
    noise = torch.randn(images.shape, generator=generator, device=device)
    return (images + shift + noise_std * noise).clamp(-1, 1)


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, labels: torch.Tensor,
                     logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between B images and K unique captions; ``labels`` [B] index the caption of each image.

    image -> text: cross-entropy over the K captions. text -> image: for each caption present in the batch, a
    softmax over the B images with the target spread uniformly over the images that carry that caption.
    """
    logits = logit_scale.exp() * image_features @ text_features.T  # [B, K], features L2-normalised
    loss_i2t = F.cross_entropy(logits, labels)
    target = F.one_hot(labels, text_features.shape[0]).T.float()  # [K, B]
    count = target.sum(dim=1)
    present = count > 0
    log_p = F.log_softmax(logits.T[present], dim=1)  # [K', B]
    loss_t2i = -(target[present] * log_p).sum(dim=1).div(count[present]).mean()
    return (loss_i2t + loss_t2i) / 2


def lr_at(step: int, steps: int, warmup: int, lr: float) -> float:
    """Linear warmup then cosine decay to zero."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups as open_clip's training script makes them: weight decay only on parameters with at least two
    dimensions (matrices, conv kernels, embedding tables); none on the ones of fewer (biases, LayerNorm gains and
    shifts, the class embedding, the 0-d ``logit_scale``). Chosen by shape, never by name."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def evaluate(model, tokenizer, device: torch.device, n: int = 1000, degrade: bool = False) -> dict[str, float]:
    """Zero-shot accuracy on ``n`` test-split images (optionally blurred + noised like a generated sample)."""
    model.eval()
    images, params = shapes.sample_batch(n, shapes.split_seed("test"), device=device)
    if degrade:
        g = torch.Generator(device).manual_seed(0)
        images = gaussian_blur(images, torch.full((n,), 0.8, device=device))
        images = (images + 0.05 * torch.randn(images.shape, generator=g, device=device)).clamp(-1, 1)
    text_features = caption_features(model, tokenizer, device)
    return attribute_accuracy(predict_indices(caption_logits(model, text_features, images)), params)


def _train_loop(model, tokens, cfg: dict, device: torch.device, seed: int) -> list[float]:
    """Optimise ``model`` in place; returns the mean loss of every 50-step window."""
    opt = torch.optim.AdamW(param_groups(model, cfg["weight_decay"]), lr=cfg["lr"], betas=(0.9, 0.98), eps=1e-6,
                            fused=device.type == "cuda")
    spec_gen = torch.Generator().manual_seed(shapes.split_seed("train", seed))
    aug_gen = torch.Generator(device).manual_seed(seed)
    history, window, running = [], 0, torch.zeros((), device=device)
    bar = tqdm(range(cfg["steps"]), desc="toy-clip", mininterval=1.0)
    model.train()
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg["steps"], cfg["warmup"], cfg["lr"])
        images, params = shapes.sample_batch(cfg["batch_size"], spec_gen, cfg["image_size"], device)
        pixels = images_to_clip_input(augment(images, aug_gen))  # fp32 augmentation, then bf16 towers
        with autocast(device, torch.bfloat16):
            image_features = model.encode_image(pixels, normalize=True)
            text_features = encode_text_trimmed(model, tokens)
        loss = contrastive_loss(image_features.float(), text_features.float(), caption_labels(params),
                                model.logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        running, window = running + loss.detach(), window + 1
        if window == 50 or step == cfg["steps"] - 1:
            history.append(running.item() / window)  # one sync per window
            check_finite(history[-1], "toy-clip training loss")
            running, window = torch.zeros((), device=device), 0
            bar.set_postfix(loss=f"{history[-1]:.4f}", scale=f"{model.logit_scale.exp().item():.1f}")
    return history


def format_table(rows: dict[str, dict[str, float]]) -> str:
    cols = ("color", "shape", "background", "all")
    lines = [f"{'toy-clip zero-shot (%)':<28}" + "".join(f"{c:>12}" for c in cols)]
    lines += [f"{name:<28}" + "".join(f"{100 * acc[c]:>12.2f}" for c in cols) for name, acc in rows.items()]
    return "\n".join(lines)


def save_and_evaluate(model, out: Path, device: torch.device, n: int) -> tuple[dict, torch.dtype]:
    """Save ``model`` as fp16 (fp32 if fp16 costs > 0.5 points), reload it through open_clip and evaluate.

    Returns the accuracy rows (in memory, saved, saved on degraded images) and the saved dtype.
    """
    rows = {"fp32 (in memory)": evaluate(model, get_tokenizer(), device, n)}
    for dtype in (torch.float16, torch.float32):
        save_toy_clip(model, out, dtype)
        loaded, _, tokenizer = load_toy_clip(out, device)
        name = f"{str(dtype)[6:].replace('float', 'fp')} (saved, reloaded)"
        rows[name] = evaluate(loaded, tokenizer, device, n)
        if all(rows[name][k] >= rows["fp32 (in memory)"][k] - 0.005 for k in rows[name]):
            break
    rows["blur 0.8 px + noise 0.05"] = evaluate(loaded, tokenizer, device, n, degrade=True)
    return rows, dtype


def train(out: str | Path, device: str = "auto", steps: int | None = None, seed: int = 0, **overrides) -> dict:
    """Train toy-clip, save it to ``out`` (fp16 when accuracy holds) and return the metrics.

    ``overrides`` may change any key of :data:`DEFAULTS` (tests use a tiny batch and few steps).
    """
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown toy-clip training options: {', '.join(sorted(unknown))}")
    cfg = {**DEFAULTS, **overrides, **({"steps": steps} if steps is not None else {})}
    cfg["warmup"] = min(cfg["warmup"], max(1, cfg["steps"] // 10))
    device = get_device(device)
    seed_everything(seed)
    out = Path(out)
    model = create_toy_clip(device)
    tokens = get_tokenizer()(shapes.all_captions()).to(device)  # [168, 77]
    start = time.perf_counter()
    history = _train_loop(model, tokens, cfg, device, seed)
    train_seconds = time.perf_counter() - start
    rows, dtype = save_and_evaluate(model, out, device, cfg["eval_images"])
    shipped = list(rows)[-2]
    passed = min(rows[shipped][k] for k in ("color", "shape", "background")) >= BAR
    metrics = {"bar_passed": passed, "first_loss": history[0], "final_loss": history[-1],
               "loss_every_50_steps": history,
               "train_seconds": train_seconds, "weights_dtype": str(dtype), "accuracy": rows, "shipped": shipped,
               "weights_mb": (out / "open_clip_model.safetensors").stat().st_size / 1e6}
    write_config(out, {"model": "toy-clip", "seed": seed, "device": str(device), **cfg, "metrics": metrics},
                 name="train_config.json")
    print(format_table(rows))
    print(f"bar: >= {100 * BAR:.0f}% on color, shape and background ({cfg['eval_images']} test images): "
          f"{'PASS' if passed else 'FAIL'}")
    print(f"loss {history[0]:.4f} (first 50 steps) -> {history[-1]:.4f} (last 50) | "
          f"train time {train_seconds:.0f} s on {device} | weights {metrics['weights_mb']:.2f} MB ({dtype}) -> {out}")
    return metrics


def caption_labels(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Index of each image's caption in :func:`shapes.all_captions` (vectorised :func:`shapes.caption_index`)."""
    color, background = params["color"], params["background"]
    bg_rel = background - (background > color).long()  # background index among the 7 colours != color
    return (color * len(shapes.SHAPES) + params["shape"]) * (len(shapes.COLORS) - 1) + bg_rel
