"""toy-faces training loss (eps MSE + weighted DC error) and the saved folder's config."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from common.toy.train_faces import _face_batches, _load_unet, build_tiny_unet, eps_loss, save_pipeline


def test_without_dc_weight_it_is_the_plain_mse():
    g = torch.Generator().manual_seed(0)
    eps_hat, eps = torch.randn(3, 3, 8, 8, generator=g), torch.randn(3, 3, 8, 8, generator=g)
    torch.testing.assert_close(eps_loss(eps_hat, eps, 0.0), F.mse_loss(eps_hat, eps))


@pytest.mark.parametrize("weight", [0.0, 1.0, 20.0])
def test_constant_offsets_count_1_plus_w_times_zero_mean_errors_once(weight):
    g = torch.Generator().manual_seed(1)
    eps = torch.randn(2, 3, 8, 8, generator=g)
    delta = torch.tensor([0.1, -0.2, 0.3]).view(1, 3, 1, 1)
    pattern = torch.randn(2, 3, 8, 8, generator=g)
    pattern = pattern - pattern.mean(dim=(2, 3), keepdim=True)  # zero spatial mean per channel
    # a per-channel constant error is all DC: counted (1 + w) times
    torch.testing.assert_close(eps_loss(eps + delta, eps, weight), (1 + weight) * delta.pow(2).mean())
    # an error with zero spatial mean has no DC part: the weight does not change it
    torch.testing.assert_close(eps_loss(eps + pattern, eps, weight), pattern.pow(2).mean())


def test_gradient_matches_the_closed_form():
    g = torch.Generator().manual_seed(2)
    eps_hat = torch.randn(2, 3, 4, 4, generator=g, requires_grad=True)
    eps = torch.randn(2, 3, 4, 4, generator=g)
    w, n, hw = 5.0, eps.numel(), 16
    (grad,) = torch.autograd.grad(eps_loss(eps_hat, eps, w), eps_hat)
    err = eps_hat.detach() - eps
    # d/de [mean(e^2) + w mean_bc(mean_hw(e)^2)] = 2 e / N + w * 2 mean_hw(e) / (B C) / (H W)
    expected = 2 * err / n + w * 2 * err.mean(dim=(2, 3), keepdim=True) / (2 * 3) / hw
    torch.testing.assert_close(grad, expected)


def test_continued_model_saves_without_its_source_path(tmp_path):
    torch.manual_seed(0)
    first = save_pipeline(build_tiny_unet(16), tmp_path / "first")
    unet = _load_unet(first)
    assert unet.config.get("_name_or_path")  # from_pretrained remembers where it came from ...
    second = save_pipeline(unet, tmp_path / "second")
    config = json.loads((second / "unet" / "config.json").read_text())
    assert "_name_or_path" not in config and config["sample_size"] == 16  # ... the saved folder does not
    for a, b in zip(unet.parameters(), _load_unet(second).parameters()):
        torch.testing.assert_close(a.half().float(), b)


def test_sample_weights_scale_each_sample_term():
    g = torch.Generator().manual_seed(3)
    eps_hat, eps = torch.randn(3, 3, 8, 8, generator=g), torch.randn(3, 3, 8, 8, generator=g)
    weight = torch.tensor([0.0, 1.0, 2.5])
    per_sample = torch.stack([eps_loss(eps_hat[i:i + 1], eps[i:i + 1], 20.0) for i in range(3)])
    torch.testing.assert_close(eps_loss(eps_hat, eps, 20.0, weight), (weight * per_sample).mean())
    torch.testing.assert_close(eps_loss(eps_hat, eps, 20.0, torch.ones(3)), eps_loss(eps_hat, eps, 20.0))


def test_a_short_cpu_run_saves_a_loadable_folder_and_repeats_bit_for_bit(tmp_path):
    from safetensors.torch import load_file

    from common.toy.train_faces import TINY_UNET_OVERRIDES, train

    runs = [train(tmp_path / name, "cpu", steps=3, batch_size=2, time_budget_s=None, eval_samples=0, snr_gamma=5.0,
                  low_snr_cap=30.0, **TINY_UNET_OVERRIDES) for name in ("a", "b")]
    assert runs[0]["steps"] == 3 and runs[0]["snr_gamma"] == 5.0 and runs[0]["low_snr_cap"] == 30.0
    assert math.isfinite(runs[0]["final_loss"])
    weights = [load_file(tmp_path / name / "unet" / "diffusion_pytorch_model.safetensors") for name in ("a", "b")]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=0, atol=0)
    assert tuple(_load_unet(tmp_path / "a").config.block_out_channels) == (8, 16)


def test_face_stream_starts_at_first_chunk():
    """Continued runs with another seed start another stream of faces; the same start repeats exactly."""
    def first(start):
        return next(_face_batches(2, torch.device("cpu"), faces_per_chunk=4, max_steps=1, first_chunk=start))

    torch.testing.assert_close(first(7), first(7), rtol=0, atol=0)
    assert (first(0) - first(7)).abs().mean() > 0.05


def test_init_from_with_wrong_tensor_names_is_one_line_naming_the_file(tmp_path):
    """#21: a unet safetensors whose keys do not match its config.json crashed with 'Cannot copy out of meta
    tensor'; now one line names the file and the mismatch, and nothing is written."""
    from click.testing import CliRunner
    from safetensors.torch import load_file, save_file

    from common.toy.__main__ import main

    torch.manual_seed(0)
    folder = save_pipeline(build_tiny_unet(16), tmp_path / "bad")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    tensors["renamed.weight"] = tensors.pop("conv_in.weight")
    save_file(tensors, weights)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["train", "faces", "--device", "cpu", "--init_from", str(folder), "--steps",
                                       "1", "--out", str(out)])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    message = result.output.strip()
    assert message.count("\n") == 0 and message.startswith("Error: ") and str(weights) in message, message
    assert "1 missing (e.g. conv_in.weight)" in message and "1 unexpected (e.g. renamed.weight)" in message
    assert not out.exists()


def test_init_from_with_a_wrong_shape_names_the_tensor(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = save_pipeline(build_tiny_unet(16), tmp_path / "bad")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    tensors["conv_in.bias"] = torch.zeros(3, dtype=tensors["conv_in.bias"].dtype)
    save_file(tensors, weights)
    with pytest.raises(ValueError, match=r"1 of another shape \(e\.g\. conv_in\.bias\)"):
        _load_unet(folder)
