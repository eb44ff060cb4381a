"""GPU benchmark: ms per StyleGAN2 training step (Gmain + lazy Greg + Dmain + lazy R1, DiffAugment on).

Rows: resolution 64 (toy size) and 256 (HW5 low_shot size: channel_base 32768, 512-d latents, batch 8),
custom CUDA ops vs the pure-PyTorch reference ops, fp32 vs bf16 autocast. Timings average ``--steps`` steps
after ``--warmup`` steps, so lazy regularisation (R1 every 16, path length every 4) is included in proportion.
The loop, networks and optimisers are ``gan.training.Trainer``'s; the losses are the references of ``common``
(:class:`ReferenceLoss`: non-saturating losses and R1 from ``common.r1``, DiffAugment from ``common.diffaugment``),
never gan's exercises, so a stubbed ``gan`` homework times the same work.

    python benchmarks/bench_gan.py --device cuda
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _cli as bench  # noqa: E402
from common.cli import UserError, user_errors  # noqa: E402
from common.diffaugment import diff_augment  # noqa: E402
from common.gpu import CudaTimer, peak_memory_mb, reset_peak_memory  # noqa: E402
from common.r1 import non_saturating_discriminator_loss, non_saturating_generator_loss, r1_penalty  # noqa: E402
from gan.ops import _plugin, set_default_impl  # noqa: E402
from gan.training import TrainConfig, Trainer  # noqa: E402


class ReferenceLoss:
    """The four phases of ``Trainer.train_step`` (Gmain, Greg, Dmain, Dreg) on the reference losses of ``common``.

    ``loss`` is the trainer's own loss object: only its exercise-free parts are used (the config, the training
    generator, G's sampling with style mixing ``run_G`` and the path-length phase ``g_reg``, StyleGAN2 Eq. 4).
    Same draws and shapes as gan's phases: fakes before reals in Dmain, R1 on the un-augmented reals.
    """

    def __init__(self, loss):
        self.base, self.cfg, self.D = loss, loss.cfg, loss.D

    @property
    def pl_mean(self):
        return self.base.pl_mean

    def run_D(self, img):
        """D(T(img)), T = DiffAugment (Zhao et al. 2020) with common's random or fixed cutout."""
        if self.cfg.diffaug_policy:
            img = diff_augment(img, self.cfg.diffaug_policy, self.base.generator, cutout_mode=self.cfg.cutout_mode)
        return self.D(img)

    def g_main(self, z):
        gen_img, _ = self.base.run_G(z, update_w_avg=True)
        loss = non_saturating_generator_loss(self.run_D(gen_img)).mean()  # handout Eq. 1
        return loss, {"loss_G": loss.item()}

    def g_reg(self, z):
        return self.base.g_reg(z)

    def d_main(self, real_img, z):
        with torch.no_grad():
            gen_img, _ = self.base.run_G(z)
        gen_logits = self.run_D(gen_img)
        real_logits = self.run_D(real_img)
        loss = non_saturating_discriminator_loss(real_logits, gen_logits).mean()  # handout Eq. 2
        return loss, {"loss_D": loss.item(), "D_real": real_logits.mean().item(), "D_fake": gen_logits.mean().item()}

    def d_reg(self, real_img):
        real_img = real_img.detach().requires_grad_(True)
        real_logits = self.run_D(real_img)  # [B]
        penalty = r1_penalty(real_logits, real_img, self.cfg.r1_gamma)  # [B], Mescheder et al. 2018 Eq. 9
        loss = penalty.mean() * self.cfg.d_reg_interval  # lazy regularisation: every I steps, weight I
        return loss + real_logits.sum() * 0, {"r1_penalty": penalty.mean().item()}


def time_config(resolution: int, batch: int, impl: str, precision: str, device: str, warmup: int, steps: int):
    set_default_impl(impl)
    trainer = Trainer(TrainConfig(data="toy", use_r1=True, use_diffaug=True, resolution=resolution, batch=batch,
                                  device=device, precision=precision))
    trainer.loss = ReferenceLoss(trainer.loss)  # train_step calls trainer.loss.{g_main, g_reg, d_main, d_reg}
    for _ in range(warmup):
        trainer.train_step()
    reset_peak_memory(trainer.device)
    with CudaTimer(trainer.device) as timer:
        for _ in range(steps):
            trainer.train_step()
    return timer.ms / steps, peak_memory_mb(trainer.device)


@bench.bench_command()
@click.option("--device", default="cuda", show_default=True, help="torch device (cpu: a smoke run, reference ops).")
@click.option("--warmup", type=click.IntRange(min=0), default=16, show_default=True, help="Untimed warm-up steps.")
@click.option("--steps", type=click.IntRange(min=1), default=32, show_default=True, help="Timed steps.")
@click.option("--resolutions", type=bench.CommaInts(4), default="64,256", show_default=True,
              help="Comma-separated resolutions (powers of two).")
@click.option("--precisions", type=bench.CommaChoice(("fp32", "bf16", "fp16")), default="fp32,bf16",
              show_default=True, help="Comma-separated autocast precisions of the forward passes.")
@click.option("--ops", "impls", type=bench.CommaChoice(("cuda", "ref")), default="cuda,ref", show_default=True,
              help="Comma-separated op implementations: cuda (fused kernels, CUDA only), ref (pure PyTorch).")
@click.option("--json", "json_path", default=None, help="Also write the rows to this JSON file.")
@user_errors
def main(device: str, warmup: int, steps: int, resolutions: list[int], precisions: list[str], impls: list[str],
         json_path: str | None) -> None:
    """GPU benchmark: ms per StyleGAN2 training step (Gmain + lazy Greg + Dmain + lazy R1, DiffAugment on).

    \b
    Examples:
      python benchmarks/bench_gan.py --device cuda
      python benchmarks/bench_gan.py --device cuda --resolutions 64 --warmup 4 --steps 8
      python benchmarks/bench_gan.py --device cpu --resolutions 16 --ops ref --precisions fp32 --warmup 0 --steps 1
    """
    dev = bench.bench_device(device, smoke=True)
    bad = [r for r in resolutions if r & (r - 1)]
    if bad:
        raise UserError(f"--resolutions: {bad[0]} is not a power of two")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        cuda_ok = all(_plugin.get_plugin(name) is not None for name in ("bias_act", "upfirdn2d"))
        print(f"device {torch.cuda.get_device_name(dev)}, torch {torch.__version__}, custom ops built: {cuda_ok}")
    elif "cuda" in impls:
        print("note: --ops cuda needs CUDA; CPU rows use the reference ops")
        impls = ["ref"]
    rows = []
    print(f"{'res':>4} {'batch':>5} {'ops':>5} {'precision':>9} {'ms/step':>9} {'peak MiB':>9}")
    for res in resolutions:
        batch = 16 if res <= 64 else 8
        for impl in impls:
            for precision in precisions:
                ms, mem = time_config(res, batch, impl, precision, str(dev), warmup, steps)
                rows.append({"resolution": res, "batch": batch, "ops": impl, "precision": precision,
                             "ms_per_step": ms, "peak_mib": mem})
                print(f"{res:>4} {batch:>5} {impl:>5} {precision:>9} {ms:>9.1f} {bench.mib(mem):>9}", flush=True)
    bench.write_rows(json_path, {"device": bench.device_name(dev), "torch": torch.__version__, "rows": rows})


if __name__ == "__main__":
    main()
