"""DPS inpainting bar on a few held-out faces with the shipped toy-faces model (skipped without its weights).

The full bar (20 faces, 1000 steps: +6 dB over the masked input, +2 dB over DDIM + paste) is measured by
``python -m dps.measure``; this is a cheaper proxy (4 faces, 100 steps). Calibration: an under-trained CPU model
(946 steps at batch 8, samples still noise) already gave +6.3 dB over the masked input at 100 steps
(+3.5 dB at 50 steps).
"""

import pytest

from common.registry import TOY_MODELS_DIR
from dps.measure import measure_dps

WEIGHTS = TOY_MODELS_DIR / "toy-faces" / "unet" / "diffusion_pytorch_model.safetensors"


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="toy-faces weights not shipped")
def test_dps_inpainting_beats_masked_input_and_paste():
    row = measure_dps("toy-faces", 4, 100, 4, "cpu", tasks=("inpainting",))["tasks"]["inpainting"]
    assert row["dps"] > row["naive"] + 3.0, row
    assert row["dps"] > row["ddim_paste"], row
