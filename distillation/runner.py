"""The optimisation loop behind ``python -m distillation.main``: all prompts of a run in ONE batch.

Every prompt owns a ``torch.Generator`` seeded from (seed, its prompt text), which draws, in this order, its
initial latents, its timesteps of all steps and then its noises step by step; samples never interact otherwise
(AdamW is element-wise, gradient clipping is per prompt), so a prompt's result in a batch equals its
single-prompt run with the same flags up to float tolerance. Exception: VSD's LoRA is shared by the batch (as
ProlificDreamer's particles share one LoRA), so batched VSD runs differ from single runs. More prompts than
``batch_size`` run in consecutive batches of one run (one config.json).

Every input is validated before anything is written (prompts, source images, model), config.json comes only
after that; a run that diverges stops with one line naming the step (the bound of the optimised latents or pixels
after every update), and a NaN update g or loss is never zeroed. On CUDA these checks are read a step late
(``common.divergence.LazyChecks``; all of them before any snapshot or result), so no step waits for the GPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import unicodedata
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from common.cli import UserError, check_finite
from common.compiled import fast_unet
from common.divergence import LazyChecks
from common.gpu import HostCopy, get_device, make_generators, precision_dtype, randn_per_sample, seed_everything
from common.images import load_image, pil_to_tensor, save_gif, save_image, tensor_to_pil
from common.panels import labelled_grid
from distillation.guidance import Guidance, encode_prompts
from distillation.representations import make_representation
from distillation.schedules import make_t_schedule
from distillation.update import NonFiniteUpdate

EDIT_METHODS = ("pds", "dds")
GIF_MAX_SIDE = 256
MAX_PROMPTS = 1000  # per run; they are optimised in batches of --batch_size
# A prompt names its output file (<key>.png, progress/<key>/): file names stop at 255 bytes, and CLIP's tokenizer
# reads 77 tokens (about 300 characters) anyway.
MAX_PROMPT_BYTES = 240
HANDOUT_FINAL, HANDOUT_PROGRESSIVE = "generated_image.png", "generated_progressive.png"  # UMich HW5's names


def check_text(text: str, what: str) -> None:
    """Refuse a prompt with a control character (NUL, escape, ...) or longer than MAX_PROMPT_BYTES (one line)."""
    for i, ch in enumerate(text):
        if unicodedata.category(ch) in ("Cc", "Cs"):  # control characters; Cs: undecodable command-line bytes
            raise ValueError(f"{what} has the control character U+{ord(ch):04X} at character {i + 1}; remove it")
    size = len(text.encode("utf-8"))
    if size > MAX_PROMPT_BYTES:
        raise ValueError(f"{what} is {len(text)} characters ({size} bytes) long; the limit is {MAX_PROMPT_BYTES} "
                         "bytes (the output file is named after the prompt, and the text encoder reads 77 tokens)")


@dataclass
class Item:
    """One prompt of a batch (for PDS/DDS: source prompt, edit prompt and source image)."""

    prompt: str
    edit_prompt: str | None = None
    src_img_path: str | None = None
    src_image: torch.Tensor | None = None  # [3, H, W] in [-1, 1], instead of src_img_path

    @property
    def target_prompt(self) -> str:
        return self.edit_prompt if self.edit_prompt is not None else self.prompt

    @property
    def key(self) -> str:
        """Output file stem: the (edit) prompt with spaces -> underscores (the handouts' eval.py naming)."""
        return self.target_prompt.strip().replace(" ", "_").replace("/", "_").replace("\\", "_")

    def seed(self, base_seed: int) -> int:
        """Per-prompt seed: independent of the prompt's position in the batch."""
        text = f"{self.prompt}\0{self.edit_prompt or ''}".encode()
        return (base_seed + zlib.crc32(text)) % 2**63


@dataclass
class RunConfig:
    """Effective settings of a run (written to config.json)."""

    loss_type: str = "sds"
    preset: str | None = None
    model: str = "toy-sd"
    save_dir: str = "./outputs"
    negative_prompt: str = ""
    guidance_scale: float = 25.0
    steps: int = 500
    lr: float = 0.1
    warmup_steps: int = 100
    log_step: int = 25
    precision: str = "auto"  # fp16 weights on CUDA, fp32 on CPU (common.gpu.precision_dtype)
    device: str = "auto"
    seed: int = 0
    t_schedule: str = "uniform"
    w_schedule: str = "dreamfusion"
    t_min: int = 20
    t_max: int = 980
    representation: str = "latent"
    grad_clip: float = 0.0
    lora_lr: float = 1e-4
    lora_rank: int = 4
    lora_loss_weight: float = 1.0
    inversion_n_steps: int = 10
    inversion_guidance_scale: float = -7.5
    inversion_eta: float = 1.0  # toy-sd needs 1.0; real models default to the NYCU handout's 0.3 (presets.py)
    sdi_update_interval: int = 25
    ism_delta_t: int = 80
    ism_delta_s: int = 200
    ism_inv_steps: int = 5
    pds_posterior: str = "official"  # PDS: official (one-step beta_t with alpha_bar_{t-2}) or exact (t -> t-delta)
    sdi_inversion_form: str = "ddim"  # eta > 0: ddim's sqrt(1 - a_next - sigma^2) eps + sigma z (toy-sd's), or the
    # SDI authors' sqrt(1 - a_next) eps + sigma z (the default on real models, presets.py)
    ism_grid: str = "2d-sds"  # ISM inversion grid: 2d-sds (s - n delta_s) or luciddreamer (delta_s steps up to s)
    batch_size: int = 32  # prompts optimised together; more run in consecutive batches
    cuda_graphs: bool = True  # replay the UNet's calls as CUDA graphs (common.graphs; VSD too)
    compile: bool = False  # torch.compile the UNet too (common.compiled; CUDA only, not VSD)
    threads: int = 0  # torch CPU threads (0: torch's default); the CLI default is 1 for toy models
    items: list[Item] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in dataclasses.asdict(self).items() if k != "items"}
        data["prompts"] = [{"prompt": it.prompt, "edit_prompt": it.edit_prompt, "src_img_path": it.src_img_path,
                            "output": f"{it.key}.png", "seed": it.seed(self.seed)} for it in self.items]
        return data


# Settings that are command-line options (shared by distillation.main and distillation.evaluate).
OPTION_NAMES = tuple(f.name for f in dataclasses.fields(RunConfig) if f.name not in ("loss_type", "preset",
                                                                                     "save_dir", "items"))


def cosine_warmup(warmup_steps: int, total_steps: int):
    """LR factor: linear warm-up to 1 over ``warmup_steps``, then cosine decay to 0 at ``total_steps``
    (KAIST/NYCU: total = 1.5 x steps, so the last step keeps ~0.32 of the LR)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return factor


def clip_per_sample_(grad: torch.Tensor, max_norm: float) -> None:
    """Scale each sample's gradient to norm <= max_norm (torch's clip_grad_norm_ applied prompt by prompt)."""
    norms = grad.flatten(1).norm(dim=1).view(-1, *([1] * (grad.ndim - 1)))
    grad.mul_((max_norm / (norms + 1e-6)).clamp(max=1.0))


def heatmap(grad: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Per-pixel gradient norm [B, C, h, w] -> 'hot' colour map [B, 3, H, W] in [-1, 1] (each sample max-scaled)."""
    v = grad.float().norm(dim=1, keepdim=True)
    v = v / v.flatten(1).amax(dim=1).clamp(min=1e-20).view(-1, 1, 1, 1)
    v = torch.nn.functional.interpolate(v, size=size, mode="nearest")
    rgb = torch.cat([(3 * v).clamp(0, 1), (3 * v - 1).clamp(0, 1), (3 * v - 2).clamp(0, 1)], dim=1)
    return rgb * 2 - 1


@contextlib.contextmanager
def thread_count(threads: int):
    """torch's intra-op CPU threads set to ``threads`` (0: unchanged) inside the block, restored after."""
    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Run:
    """One batched optimisation: build with a config and a loaded pipeline, then call :meth:`optimise`."""

    def __init__(self, cfg: RunConfig, pipe: Any, device: torch.device):
        if not cfg.items:
            raise ValueError("no prompts given")
        self.cfg, self.device = cfg, device
        self.guidance = Guidance.from_pipeline(pipe, t_min=cfg.t_min, t_max=cfg.t_max, w_schedule=cfg.w_schedule)
        self.generators = make_generators([it.seed(cfg.seed) for it in cfg.items])
        B = len(cfg.items)
        uncond = encode_prompts(pipe.tokenizer, pipe.text_encoder, [cfg.negative_prompt] * B, device)
        cond = encode_prompts(pipe.tokenizer, pipe.text_encoder, [it.prompt for it in cfg.items], device)
        self.text_embeddings = torch.cat([uncond, cond])  # [2B, L, D], uncond first
        if cfg.loss_type == "ism":  # LucidDreamer and 2d-sds invert with the empty prompt, not the negative one
            self.guidance.inversion_embeddings = encode_prompts(pipe.tokenizer, pipe.text_encoder, [""], device)
        unet_cfg = pipe.unet.config
        self.latent_shape = (unet_cfg.in_channels, unet_cfg.sample_size, unet_cfg.sample_size)
        self.image_size = unet_cfg.sample_size * pipe.vae_scale_factor
        init = randn_per_sample(self.latent_shape, self.generators, device=device)  # first draw of each prompt
        init_images = None
        if cfg.loss_type in EDIT_METHODS:
            edit = encode_prompts(pipe.tokenizer, pipe.text_encoder, [it.edit_prompt for it in cfg.items], device)
            self.tgt_embeddings = torch.cat([uncond, edit])
            init_images = self._source_images()
            with torch.no_grad():
                self.src_latents = self.guidance.encode_images(init_images)
            init = self.src_latents.clone()  # the edit starts at the source (KAIST since 1ad102a)
        self.rep = make_representation(cfg.representation, init, self.guidance, init_images).to(device)
        alphas_cumprod = self.guidance.alphas_cumprod.cpu()
        self.t_table = torch.stack([make_t_schedule(cfg.t_schedule, cfg.steps, cfg.t_min, cfg.t_max, g,
                                                    alphas_cumprod) for g in self.generators], dim=1)  # [steps, B]
        self.t_device = self.t_table.to(device)  # copied once: a step's t is a view, not a copy that waits
        groups = [{"params": list(self.rep.parameters()), "lr": cfg.lr}]
        if cfg.loss_type == "vsd":
            groups.append({"params": self.guidance.init_vsd(cfg.lora_rank), "lr": cfg.lora_lr})
        # after the LoRA: a graph captures the adapter state it ran with (VSD's are keyed by it; no --compile)
        self.guidance.unet = fast_unet(self.guidance.unet, device, cfg.cuda_graphs, cfg.compile)
        self.optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, cosine_warmup(cfg.warmup_steps, int(cfg.steps * 1.5)))
        self.frames: list[list[Any]] = [[] for _ in cfg.items]
        self.frame_steps: list[int] = []

    def _source_images(self) -> torch.Tensor:
        images = []
        for it in self.cfg.items:
            if it.src_image is not None:
                img = torch.nn.functional.interpolate(it.src_image[None].float(), size=self.image_size,
                                                      mode="bilinear", antialias=True, align_corners=False)[0]
            else:
                img = load_image(it.src_img_path, size=self.image_size)
            images.append(img)
        return torch.stack(images).to(self.device)

    def loss(self, step: int) -> torch.Tensor:
        cfg, g, gens = self.cfg, self.guidance, self.generators
        latents = self.rep(g)
        t = self.t_device[step]  # [B] on the device
        s = cfg.guidance_scale
        if cfg.loss_type == "sds":
            return g.get_sds_loss(latents, self.text_embeddings, s, t=t, generators=gens)
        if cfg.loss_type == "vsd":
            return g.get_vsd_loss(latents, self.text_embeddings, s, t=t, lora_loss_weight=cfg.lora_loss_weight,
                                  generators=gens)
        if cfg.loss_type == "sdi":
            return g.get_sdi_loss(latents, self.text_embeddings, s, t=t, step=step,
                                  update_interval=cfg.sdi_update_interval, inversion_n_steps=cfg.inversion_n_steps,
                                  inversion_guidance_scale=cfg.inversion_guidance_scale,
                                  inversion_eta=cfg.inversion_eta, inversion_form=cfg.sdi_inversion_form,
                                  generators=gens)
        if cfg.loss_type == "ism":  # t from the host table: ISM's inversion grid is CPU arithmetic, no GPU wait
            return g.get_ism_loss(latents, self.text_embeddings, s, t=self.t_table[step], delta_t=cfg.ism_delta_t,
                                  delta_s=cfg.ism_delta_s, inv_steps=cfg.ism_inv_steps, grid=cfg.ism_grid,
                                  generators=gens)
        if cfg.loss_type == "pds":
            return g.get_pds_loss(self.src_latents, latents, self.text_embeddings, self.tgt_embeddings, s, t=t,
                                  posterior=cfg.pds_posterior, generators=gens)
        return g.get_dds_loss(self.src_latents, latents, self.text_embeddings, self.tgt_embeddings, s, t=t,
                              generators=gens)

    def optimise(self, progress: bool = True) -> torch.Tensor:
        """Run all steps; return the final images [B, 3, H, W] in [-1, 1].

        Raises UserError (one line naming the method and the step) on a NaN/inf update, loss or result, and
        ``Diverged`` when the optimised latents / pixels leave the representation's generous bound. The checks
        are queued (LazyChecks, read a step later on CUDA) and all read before any snapshot or result.
        """
        self.guidance.checks = checks = LazyChecks()
        try:
            images = self._steps(checks, progress)
        finally:
            self.guidance.checks, self.guidance.check_step = None, None
        check_finite(images, f"the {self.cfg.loss_type} result")
        return images

    def _steps(self, checks: LazyChecks, progress: bool) -> torch.Tensor:
        cfg = self.cfg
        hint = f"the likely cause is a too large --lr ({cfg.lr:g}) or --guidance_scale ({cfg.guidance_scale:g})"
        bar = tqdm(range(cfg.steps), desc=f"{cfg.loss_type}", disable=not progress, dynamic_ncols=True)
        shown: tuple[int | None, HostCopy | None] = (None, None)  # the progress bar's (step, loss on its way)
        for step in bar:
            self.optimizer.zero_grad(set_to_none=True)
            self.guidance.check_step = step
            try:
                loss = self.loss(step)
            except NonFiniteUpdate as err:  # a loss that raises it itself (record_update queues instead)
                raise UserError(f"{err.describe(step)}; {NonFiniteUpdate.hint}") from err
            checks.add(loss, f"the {cfg.loss_type} loss", step, hint=NonFiniteUpdate.hint)
            loss.backward()
            if cfg.grad_clip > 0:
                for p in self.rep.parameters():
                    clip_per_sample_(p.grad, cfg.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            checks.add(self.rep.param, f"the optimised {cfg.representation}s", step, self.rep.bound, hint)
            checks.poll()  # the previous step's checks: the GPU is done with them
            if not bar.disable:
                shown = self._show(bar, step, HostCopy(loss), shown)
            if cfg.log_step > 0 and (step % cfg.log_step == 0 or step == cfg.steps - 1):
                checks.flush()  # no snapshot of a diverged state
                self.log(step)
        checks.flush()
        return self.rep.images(self.guidance)

    def _show(self, bar: Any, step: int, copy: HostCopy, previous: tuple[int | None, HostCopy | None]):
        """Progress bar: loss per prompt and t of the newest step whose loss is on the host (read without a wait:
        on CUDA the previous step's, whose checks poll() has just read). Returns (step, copy) for the next call."""
        for s, c in ((step, copy), previous):
            if c is not None and c.ready():
                bar.set_postfix(loss=f"{float(c.get()) / len(self.cfg.items):.4g}", t=int(self.t_table[s, 0]))
                break
        return step, copy

    @torch.no_grad()
    def log(self, step: int) -> None:
        """progress/<key>/step_XXXX.png = [current | x0_hat | gradient heatmap]; frames for the GIF."""
        images = self.rep.images(self.guidance)
        x0_latents = self.guidance.aux.get("x0_hat")  # filled by every get_*_loss; absent if a loss was replaced
        x0_hat = images if x0_latents is None else self.guidance.decode_latents(x0_latents.to(self.device))
        grad = self.rep.param.grad if self.rep.param.grad is not None else torch.zeros_like(self.rep.param)
        heat = heatmap(grad, tuple(images.shape[-2:]))
        root = Path(self.cfg.save_dir) / "progress"
        self.frame_steps.append(step)
        for b, it in enumerate(self.cfg.items):
            save_image(torch.cat([images[b], x0_hat[b], heat[b]], dim=2), root / it.key / f"step_{step:04d}.png")
            frame = tensor_to_pil(images[b])
            frame.thumbnail((GIF_MAX_SIDE, GIF_MAX_SIDE))
            self.frames[b].append(frame)

    def save(self, images: torch.Tensor, handout_files: bool = False) -> list[Path]:
        """Final images ``save_dir/<key>.png``; ``save_dir/progress/<key>/`` gets progress.gif and progressive.png
        (the snapshots labelled with their step numbers). ``handout_files`` (a single prompt): also UMich HW5's
        ``generated_image.png`` and ``generated_progressive.png`` in save_dir."""
        root, out = Path(self.cfg.save_dir), []
        for b, it in enumerate(self.cfg.items):
            out.append(save_image(images[b], root / f"{it.key}.png"))
            if self.frames[b]:
                save_gif(self.frames[b], root / "progress" / it.key / "progress.gif")
                frames = torch.stack([pil_to_tensor(f) for f in self.frames[b]])  # [F, 3, h, w] GIF thumbnails
                strip = labelled_grid(frames, [f"step {s}" for s in self.frame_steps],
                                      nrow=min(len(self.frame_steps), 8))  # toy-size frames enlarged x4
                save_image(strip, root / "progress" / it.key / "progressive.png")
                if handout_files:
                    save_image(strip, root / HANDOUT_PROGRESSIVE)
            if handout_files:
                save_image(images[b], root / HANDOUT_FINAL)
        return out


def check_items(cfg: RunConfig) -> None:
    """Validate prompts and source images before loading any model (one-line errors)."""
    if not cfg.items:
        raise UserError("give at least one --prompt (or --prompts_file)")
    if len(cfg.items) > MAX_PROMPTS:
        raise UserError(f"{len(cfg.items)} prompts given; at most {MAX_PROMPTS} per run (they run in batches of "
                        "--batch_size): split them into several runs")
    check_text(cfg.negative_prompt, "--negative_prompt")
    if cfg.compile and cfg.loss_type == "vsd":
        raise UserError("--compile does not apply to vsd (its LoRA trains inside the UNet; CUDA graphs still apply)")
    keys = set()
    for it in cfg.items:
        if not it.prompt.strip():
            raise UserError("the prompt is empty; give a non-empty --prompt")
        check_text(it.prompt, f"the prompt {it.prompt[:40]!r}")
        check_text(it.edit_prompt or "", f"the edit prompt {(it.edit_prompt or '')[:40]!r}")
        if cfg.loss_type in EDIT_METHODS:
            if not (it.edit_prompt or "").strip():
                raise UserError(f"--loss_type {cfg.loss_type} needs a non-empty --edit_prompt")
            if it.src_image is None and not it.src_img_path:
                raise UserError(f"--loss_type {cfg.loss_type} needs --src_img_path (the image to edit)")
            if it.src_image is None:
                load_image(it.src_img_path)  # FileNotFoundError / ValueError -> one line
        if it.key in keys:
            raise UserError(f"duplicate prompt {it.target_prompt!r}: outputs would overwrite each other")
        if (Path(cfg.save_dir) / f"{it.key}.png").is_dir():  # found now, not after the optimisation
            raise UserError(f"{Path(cfg.save_dir) / it.key}.png is a folder; the final image of "
                            f"{it.target_prompt!r} is written there: move it or choose another --save_dir")
        keys.add(it.key)


def run(cfg: RunConfig, progress: bool = True, pipe: Any = None, handout_files: bool = False) -> list[Path]:
    """Validate, load the model, optimise the prompts in batches of ``cfg.batch_size``, save; returns the final
    image paths. config.json is written once every input passed validation and the first batch is built.
    ``handout_files``: a single-prompt run also writes UMich HW5's generated_image.png / generated_progressive.png.
    """
    from common.registry import load_sd
    from common.runs import write_config

    check_items(cfg)
    device = get_device(cfg.device)
    dtype = precision_dtype(cfg.precision, device)
    out: list[Path] = []
    with thread_count(cfg.threads):
        for start in range(0, len(cfg.items), cfg.batch_size):
            seed_everything(cfg.seed)
            if pipe is None or (start and cfg.loss_type == "vsd"):
                pipe = load_sd(cfg.model, device, dtype)  # VSD: every batch starts from a fresh LoRA
            job = Run(dataclasses.replace(cfg, items=cfg.items[start:start + cfg.batch_size]), pipe, device)
            if not start:
                write_config(cfg.save_dir, cfg.to_json())
            images = job.optimise(progress)
            out += job.save(images, handout_files=handout_files and len(cfg.items) == 1)
    return out
