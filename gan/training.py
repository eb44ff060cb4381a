"""The StyleGAN2 training loop (phases Gmain, Greg, Dmain, Dreg as in Karras et al. 2020), resumable exactly.

All randomness comes from two generators whose states go into every checkpoint: ``gen_data`` (CPU: batch
indices, flips) and ``gen_train`` (on the training device: latents, noise inputs, style mixing, DiffAugment,
path-length noise). Resuming from a full checkpoint restores G, D, G_ema, both Adam states, the step counter,
the path-length mean and both generators, so the next step equals the uninterrupted run's.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch

from common.cli import check_finite
from common.divergence import BlowUpGuard
from common.gpu import autocast, get_device, precision_dtype
from gan import checkpoint as ckpt
from gan.dataset import TOY, BatchSampler, load_dataset, to_float
from gan.loss import LossConfig, StyleGAN2Loss, is_reg_step, lazy_optimizer_hparams
from gan.metrics import fid_against, load_feature_net
from gan.networks import ArchConfig, Discriminator, Generator, ema_beta, update_ema


@dataclasses.dataclass
class TrainConfig:
    data: str
    use_r1: bool
    use_diffaug: bool
    checkpoint_path: str | None = None
    kimg: float = 300.0  # images to train on in this run, in thousands
    batch: int = 8
    gamma: float = 10.0
    resolution: int | None = None
    seed: int = 0
    lr: float = 0.002
    ema_kimg: float = 10.0
    cbase: int | None = None
    cmax: int | None = None
    map_layers: int = 2
    mbstd_group: int = 4
    pl_weight: float = 2.0
    style_mixing: float = 0.9
    policy: str = "color,translation,cutout"
    cutout: str = "random"
    mirror: bool = False
    device: str = "auto"
    precision: str = "fp32"

    @property
    def total_steps(self) -> int:
        return max(1, round(self.kimg * 1000 / self.batch))


def _set_requires_grad(module: torch.nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.device = get_device(cfg.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest conv algorithms once
        self.dtype = precision_dtype(cfg.precision, self.device)
        if cfg.batch % min(cfg.mbstd_group, cfg.batch):
            raise ValueError(f"--batch {cfg.batch} must be a multiple of the minibatch-std group {cfg.mbstd_group}")
        resume = self._check_resume() if cfg.checkpoint_path else None  # a bad file fails before the data loads
        images, self.data_name = load_dataset(cfg.data, cfg.resolution)
        self.images = images
        self.arch = self._arch_for(images.shape[-1])
        torch.manual_seed(cfg.seed)  # parameter initialisation
        self.G = Generator(self.arch).to(self.device)
        self.D = Discriminator(self.arch).to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval()
        self.gen_data = torch.Generator("cpu").manual_seed(cfg.seed)
        self.gen_train = torch.Generator(self.device).manual_seed(cfg.seed + 1)
        self.sampler = BatchSampler(images, cfg.batch, self.gen_data, cfg.mirror)
        self.loss = StyleGAN2Loss(self.G, self.D, LossConfig(
            r1_gamma=cfg.gamma, pl_weight=cfg.pl_weight, style_mixing_prob=cfg.style_mixing,
            diffaug_policy=cfg.policy if cfg.use_diffaug else None, cutout_mode=cfg.cutout), self.gen_train)
        self.g_interval = self.loss.cfg.g_reg_interval if cfg.pl_weight > 0 else None
        self.d_interval = self.loss.cfg.d_reg_interval if cfg.use_r1 else None
        self.opt_G = self._adam(self.G, self.g_interval)
        self.opt_D = self._adam(self.D, self.d_interval)
        self.step, self.nimg, self.resumed_from = 0, 0, None  # nimg: real images shown to D so far, all runs
        # Generous: softplus losses live in about [0, 10], so > 1e3 x max(first loss, 10) is a blow-up (--lr 1e8: 1e20)
        hint = "the learning rate is probably too high (try --lr 0.002) or training diverged"
        self.guards = {key: BlowUpGuard(f"the {net} loss ({key})", factor=1e3, warmup=1, floor=10.0, hint=hint)
                       for key, net in (("loss_G", "generator"), ("loss_D", "discriminator"))}
        if resume is not None:
            self.load(cfg.checkpoint_path, resume)

    def _arch_for(self, resolution: int) -> ArchConfig:
        cfg = self.cfg
        return ArchConfig.default_for(resolution, channel_base=cfg.cbase, channel_max=cfg.cmax,
                                      mapping_layers=cfg.map_layers, mbstd_group=cfg.mbstd_group)

    def _check_resume(self) -> tuple[dict, ArchConfig, dict]:
        """Read and validate ``--checkpoint_path`` before any data set work; the architecture too when the image
        size is known without the data (``--resolution``, or the toy set's 64 px)."""
        path = self.cfg.checkpoint_path
        resume = ckpt.read_checkpoint(path)  # tensors, arch, state
        toy = self.cfg.data == TOY and not Path(TOY).exists()  # as gan.dataset.load_dataset decides
        resolution = self.cfg.resolution or (64 if toy else None)
        if resolution is not None:
            ckpt.check_arch(resume[1], self._arch_for(resolution), path)
        return resume

    def _adam(self, net: torch.nn.Module, interval: int | None) -> torch.optim.Adam:
        lr, betas = lazy_optimizer_hparams(self.cfg.lr, (0.0, 0.99), interval)
        return torch.optim.Adam(net.parameters(), lr=lr, betas=betas, eps=1e-8)

    # ------------------------------------------------------------------------------------------ one step
    def _phase(self, net, opt, fn, *args) -> dict:
        _set_requires_grad(net, True)
        opt.zero_grad(set_to_none=True)
        with autocast(self.device, self.dtype):
            loss, stats = fn(*args)
        check_finite(loss.detach(), f"the {fn.__name__} loss")  # e.g. an unstable loss: one clear error
        loss.float().backward()
        for p in net.parameters():
            if p.grad is not None:
                torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
        opt.step()
        _set_requires_grad(net, False)
        return stats

    def _latents(self) -> torch.Tensor:
        return torch.randn(self.cfg.batch, self.arch.z_dim, generator=self.gen_train, device=self.device)

    def train_step(self) -> dict:
        """Gmain, Greg (lazy path length), Dmain, Dreg (lazy R1), then the EMA update."""
        _set_requires_grad(self.G, False)
        _set_requires_grad(self.D, False)
        real = self.sampler.next(self.device)
        stats = self._phase(self.G, self.opt_G, self.loss.g_main, self._latents())
        if is_reg_step(self.step, self.g_interval):
            stats.update(self._phase(self.G, self.opt_G, self.loss.g_reg, self._latents()))
        stats.update(self._phase(self.D, self.opt_D, self.loss.d_main, real, self._latents()))
        if is_reg_step(self.step, self.d_interval):
            stats.update(self._phase(self.D, self.opt_D, self.loss.d_reg, real))
        for key, guard in self.guards.items():
            guard.update(stats[key], self.step + 1)  # step numbers as in log.txt and checkpoint names
        update_ema(self.G_ema, self.G, ema_beta(self.cfg.batch, self.cfg.ema_kimg))
        self.step += 1
        self.nimg += self.cfg.batch
        return stats

    # ------------------------------------------------------------------------------------- checkpoints
    def save(self, path: str | Path) -> Path:
        """Full checkpoint, resumable exactly (``gan.checkpoint.export_slim`` makes the small shipped kind)."""
        state = {"step": self.step, "nimg": self.nimg, "config": dataclasses.asdict(self.cfg),
                 "train_rng_device": self.device.type}
        nets = {"G": self.G, "D": self.D, "G_ema": self.G_ema}
        return ckpt.save_checkpoint(path, self.arch, nets, optimizers={"G": self.opt_G, "D": self.opt_D},
                                    rng={"data": self.gen_data, "train": self.gen_train},
                                    extra={"loss.pl_mean": self.loss.pl_mean}, state=state)

    def load(self, path: str | Path, resume: tuple[dict, ArchConfig, dict] | None = None) -> None:
        """Restore a checkpoint (``resume``: what ``gan.checkpoint.read_checkpoint(path)`` returned, if read)."""
        tensors, arch, state = resume if resume is not None else ckpt.read_checkpoint(path)
        ckpt.check_arch(arch, self.arch, path)
        for name, net in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
            ckpt.load_net(net, tensors, name)
        for name, opt in (("G", self.opt_G), ("D", self.opt_D)):
            if ckpt.has_optimizer(tensors, name):
                ckpt.load_optimizer(opt, tensors, name)
        ckpt.load_rng(self.gen_data, tensors, "data")
        if state.get("train_rng_device") == self.device.type:  # generator states are device specific
            ckpt.load_rng(self.gen_train, tensors, "train")
        if "loss.pl_mean" in tensors:
            pl_mean = tensors["loss.pl_mean"]
            if pl_mean.numel() != 1 or not pl_mean.is_floating_point() or not torch.isfinite(pl_mean).all():
                raise ValueError(f"checkpoint {path}: loss.pl_mean must be one finite number")
            self.loss.pl_mean = pl_mean.reshape([]).float().to(self.device)
        self.step = int(state.get("step", 0))
        saved_batch = state.get("config", {}).get("batch", self.cfg.batch)
        if type(saved_batch) is not int or saved_batch < 1:
            raise ValueError(f"checkpoint {path}: metadata 'state' has batch {saved_batch!r}, expected an int >= 1")
        self.nimg = int(state.get("nimg", self.step * saved_batch))  # the saved run's batch, not this run's
        self.resumed_from = str(path)

    # ----------------------------------------------------------------------------------------- metrics
    def fid(self, n: int, feature_net=None) -> tuple[float, str]:
        """FID of G_ema (n fixed-seed samples) against all training images."""
        if feature_net is None:
            feature_net = load_feature_net(self.device)
        return fid_against(to_float(self.images), self.G_ema, n, self.device, feature_net), feature_net[1]

    @torch.no_grad()
    def grid_images(self, n: int = 16, seed: int = 0) -> torch.Tensor:
        gen = torch.Generator(self.device).manual_seed(seed)
        z = torch.randn(n, self.arch.z_dim, generator=gen, device=self.device)
        return self.G_ema(z, noise_mode="const").clamp(-1, 1).cpu()
