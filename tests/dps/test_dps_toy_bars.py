"""DPS inpainting bar on a few held-out faces with the shipped toy-faces model (skipped without its weights).

The full bar (20 faces, 1000 steps: +6 dB over the masked input, +2 dB over DDIM + paste) is measured by
``python -m dps.measure``; this is a cheaper proxy (3 faces, 50 steps; the shipped model gave 28.4 dB vs 16.7 masked
and 15.4 DDIM + paste). One intra-op thread: tiny UNets on a busy 2-core CPU are much slower with two.
"""

import pytest
import torch

from common.registry import TOY_MODELS_DIR
from dps.measure import measure_dps

WEIGHTS = TOY_MODELS_DIR / "toy-faces" / "unet" / "diffusion_pytorch_model.safetensors"


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="toy-faces weights not shipped")
def test_dps_inpainting_beats_masked_input_and_paste():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        row = measure_dps("toy-faces", 3, 50, 3, "cpu", tasks=("inpainting",))["tasks"]["inpainting"]
    finally:
        torch.set_num_threads(threads)
    assert row["dps"] > row["naive"] + 6.0, row
    assert row["dps"] > row["ddim_paste"] + 2.0, row
