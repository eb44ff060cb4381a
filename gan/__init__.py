"""gan: StyleGAN2 few-shot training with the non-saturating loss, R1 and DiffAugment (UMich EECS 498 HW5, part A).

Modules:
- ``networks`` / ``layers``: mapping network, modulated/demodulated convolutions, noise inputs, skip generator,
  residual discriminator with minibatch stddev, EMA (Karras et al. 2020).
- ``ops``: fused bias+activation and upfirdn2d with CUDA kernels (JIT-built with ninja) and a reference path.
- ``loss``: generator/discriminator losses, lazy R1 (written inline; ``common.r1`` is the reference the tests
  compare it to), path length, DiffAugment on every D input.
- ``augment``: DiffAugment = ``common.diffaugment``'s ops with the handout's random-size cutout exercise.
  Exercises (regions ``gan-g-loss``, ``gan-d-loss``, ``gan-d-real``, ``gan-r1``, ``diffaugment-cutout``) sit
  between ``# BEGIN SOLUTION <id>`` / ``# END SOLUTION`` lines (docs/gan.md lists them).
- ``training`` / ``train``: the loop and ``python -m gan.train`` (numbered run folders, log.txt, fakes grids,
  FID, atomic safetensors checkpoints with exact resume). ``checkpoint``: the file format (no pickle).
- ``dataset`` / ``dataset_tool``: folder or zip of images; ``toy``: the 100-image toy-faces few-shot set.
- ``generate``, ``augment_preview``, ``make_toy_checkpoint``, ``toy_bar``: sampling, the DiffAugment check,
  the shipped starting checkpoint and the three-configuration comparison.

Quick start (CPU: about 2 minutes for this toy bar, 20 for the default ``python -m gan.toy_bar``):
    python -m gan.toy_bar --kimg 0.08
    python -m gan.train --outdir runs --data toy --use_r1_regularization True --use_diffaug True --kimg 2
"""

import common  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads; see common/__init__.py)
