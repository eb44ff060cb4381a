"""main.py and evaluate.py end to end with tiny random models, and the one-line errors."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from synchronization import evaluate
from synchronization.main import main


def _run(args):
    result = CliRunner().invoke(main, [*args, "--device", "cpu", "--no_progress"])
    return result


def test_wide_image_cli_writes_panorama_crops_views_and_config(tiny_sd_folder, tmp_path):
    out = tmp_path / "wide"
    result = _run(["--app", "wide_image", "--prompt", "a red circle", "--model", str(tiny_sd_folder),
                   "--num_inference_steps", "2", "--save_dir", str(out)])
    assert result.exit_code == 0 and not result.exception, result.output
    with Image.open(out / "a_red_circle.png") as img:
        assert img.size == (96, 16)  # 6 windows of 8 latent px, VAE factor 2
    crops = sorted(p.name for p in out.glob("a_red_circle_*.png"))
    assert len(crops) == 8 and "a_red_circle_0.png" in crops and "a_red_circle_80.png" in crops
    config = json.loads((out / "config.json").read_text())
    assert config["num_views"] == 41 and config["init"] == "canonical" and config["sync"] == "x0"
    assert config["unet_calls"] == 2  # all 41 views x 2 CFG branches batched: one UNet call per step
    assert len(config["window_offsets_px"]) == 41 and config["window_offsets_px"][1] == [0, 2]  # stride 1 x f 2
    with Image.open(out / "extra" / "windows.png") as sheet:  # 41 labelled 16-px windows x4, 8 per row
        assert sheet.width == 8 * (64 + 4) + 4 and sheet.height > 6 * (64 + 4)
    assert not (out / "extra" / "views").exists()


def test_wide_image_circular_windows_decode_and_max_batch(tiny_sd_folder, tmp_path):
    out = tmp_path / "wide_c"
    result = _run(["--app", "wide_image", "--prompt", "a blue square", "--model", str(tiny_sd_folder),
                   "--num_inference_steps", "2", "--width", "64", "--stride", "4", "--circular", "--decode", "windows",
                   "--max_batch", "5", "--sync", "eps", "--init", "independent", "--save_dir", str(out)])
    assert result.exit_code == 0 and not result.exception, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["num_views"] == 8 and config["unet_calls"] == 2 * 4  # 16 rows in chunks of 5 -> 4 calls a step
    assert config["init"] == "independent"


def test_ambiguous_cli_and_evaluate(tiny_pixel_folder, tmp_path, monkeypatch):
    out = tmp_path / "amb"
    result = _run(["--app", "ambiguous_image", "--prompts", "a red circle", "a blue square", "--views_names",
                   "identity", "rotate_cw", "--model", str(tiny_pixel_folder), "--num_inference_steps", "2",
                   "--canonical_denoising", "--sync", "eps", "--save_dir", str(out)])
    assert result.exit_code == 0 and not result.exception, result.output
    with Image.open(out / "a_red_circle.png") as a, Image.open(out / "a_blue_square.png") as b:
        first, second = torch.from_numpy(np.array(a)), torch.from_numpy(np.array(b))  # [16, 16, 3] uint8
        assert a.size == (16, 16)
    assert torch.equal(torch.rot90(first, -1, dims=(0, 1)), second)  # the second view is the first rotated cw
    for name in ("canonical.png", "panel.png", "animation.gif"):
        assert (out / "extra" / name).is_file()
    assert json.loads((out / "pairs.json").read_text())[0]["prompts"] == ["a red circle", "a blue square"]

    # evaluation with a random toy-clip-shaped CLIP (the real toy-clip comes from the GPU)
    from common.toy.clip_model import create_toy_clip, save_toy_clip

    torch.manual_seed(0)
    clip_dir = save_toy_clip(create_toy_clip(), tmp_path / "clip")
    res = CliRunner().invoke(evaluate.main, ["--app", "ambiguous_image", "--fdir", str(out), "--clip_model",
                                             str(clip_dir), "--device", "cpu"])
    assert res.exit_code == 0 and not res.exception, res.output
    data = json.loads((out / "eval.json").read_text())
    assert len([k for k in data if k.endswith(".png")]) == 2 and -1 <= data["score"] <= 1
    assert 0 <= data["concealment"] <= 1 and data["illusions"][0]["prompts"] == ["a red circle", "a blue square"]


def test_anagram_metrics_closed_form():
    sim = torch.tensor([[0.30, 0.20], [0.25, 0.28]])
    m = evaluate.anagram_metrics(sim, logit_scale=100.0)
    assert m["alignment"] == pytest.approx(0.28)
    row = torch.tensor([1 / (1 + torch.exp(torch.tensor(-10.0))), 1 / (1 + torch.exp(torch.tensor(-3.0)))])
    col = torch.tensor([1 / (1 + torch.exp(torch.tensor(-5.0))), 1 / (1 + torch.exp(torch.tensor(-8.0)))])
    assert m["concealment"] == pytest.approx(float((row.sum() + col.sum()) / 4), rel=1e-5)


def test_wide_crops_of_a_handout_panorama(tmp_path):
    from common.images import save_image
    from synchronization.prompts import wide_prompts

    prompt, positions = next(iter(wide_prompts().items()))
    save_image(torch.rand(3, 64, 384) * 2 - 1, tmp_path / (prompt.replace(" ", "_") + ".png"))
    written = evaluate.crop_missing(tmp_path)
    assert len(written) == 8 and {int(p.stem.rsplit("_", 1)[1]) for p in written} == {round(x / 8) for x in positions}


@pytest.mark.parametrize("args,needle", [
    (["--app", "panorama", "--prompt", "x"], "--app"),
    (["--app", "ambiguous_image", "--prompts", "a", "b", "--views_names", "identity", "spin"], "unknown view"),
    (["--app", "ambiguous_image", "--prompts", "only one"], "1 prompt(s) for 2 views"),
    (["--app", "wide_image", "--prompt", "x", "--num_inference_steps", "-3"], "--num_inference_steps"),
    (["--app", "wide_image", "--prompt", "x", "--width", "90", "--stride", "2"], "not reachable"),
])
def test_bad_inputs_give_one_line_and_exit_code_2(args, needle, tiny_sd_folder, tmp_path):
    if "wide_image" in args:
        args = [*args, "--model", str(tiny_sd_folder)]
    result = _run([*args, "--save_dir", str(tmp_path / "bad")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and needle in lines[0], result.output
    assert "Traceback" not in result.output


def test_stage2_upsampling_path_with_a_tiny_if_ii_like_unet(tiny_pixel_folder):
    """IF stage II: 6-channel input [x_t, view_i(noised upsampled stage-I image)], class_labels = noise level."""
    from types import SimpleNamespace

    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel

    from common.registry import load_pixel
    from synchronization.ambiguous_image import generate_ambiguous
    from synchronization.config import AmbiguousConfig

    torch.manual_seed(0)
    unet2 = UNet2DConditionModel(sample_size=32, in_channels=6, out_channels=6, block_out_channels=(8, 16),
                                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), layers_per_block=1,
                                 cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4,
                                 class_embed_type="timestep")
    upscaler = SimpleNamespace(unet=unet2.eval(), scheduler=DDIMScheduler(beta_schedule="squaredcos_cap_v2"),
                               image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"))
    cfg = AmbiguousConfig(prompts=("a dog", "a cat"), views_names=("identity", "rotate_180"), num_inference_steps=2,
                          progress=False)
    out = generate_ambiguous(load_pixel(str(tiny_pixel_folder)), cfg, upscaler)
    assert out["stage1"].shape == (3, 16, 16) and out["image"].shape == (3, 32, 32)
    assert torch.equal(out["views"][1], torch.rot90(out["image"], 2, dims=(-2, -1)))
    assert torch.isfinite(out["image"]).all()
