"""Model loaders refuse pickles and malformed folders in one line; only registry Hub repositories may use ``.bin``.

- hygiene: every ``from_pretrained`` in the source tree passes ``use_safetensors`` (or goes through a checked
  wrapper of :mod:`common.hub` / :mod:`common.registry`), so a future loader cannot unpickle a user's file;
- a registry Hub repository that ships only ``.bin`` weights loads (torch's weights-only unpickler), a user's
  folder with the same files is refused; truncated safetensors and wrong keys are one line naming the folder.
"""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from common import hub, registry
from common.files import REPO_ROOT, PickleRefused
from common.registry import ModelLoadError, load_ddpm

PACKAGES = ("common", "gan", "ddpm_ddim", "dps", "distillation", "synchronization", "grading", "benchmarks")
CHECKED_WRAPPERS = {"from_hub", "load_local", "load_local_weights", "_load_part"}  # they pass use_safetensors
WEIGHTLESS = ("tokenizer", "scheduler")  # from_pretrained of text / JSON files only


def unchecked_from_pretrained(source: str) -> list[int]:
    """Line numbers of ``X.from_pretrained`` uses that neither pass ``use_safetensors`` nor go through a wrapper."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    bad = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr == "from_pretrained"):
            continue
        if any(word in ast.unparse(node.value).lower() for word in WEIGHTLESS):
            continue
        call = parents.get(node)
        if isinstance(call, ast.Call) and call.func is node:  # X.from_pretrained(...)
            ok = any(k.arg == "use_safetensors" for k in call.keywords)
        elif isinstance(call, ast.Call) and node in call.args:  # wrapper(spec, X.from_pretrained, ...)
            name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
            ok = name in CHECKED_WRAPPERS or any(k.arg == "use_safetensors" for k in call.keywords)
        else:
            ok = False
        if not ok:
            bad.append(node.lineno)
    return bad


def test_every_from_pretrained_refuses_pickles():
    assert unchecked_from_pretrained("m = UNet2DModel.from_pretrained(folder)\n") == [1]  # the scan can fail
    assert unchecked_from_pretrained("m = f(spec, AutoencoderKL.from_pretrained, folder)\n") == [1]
    assert unchecked_from_pretrained("t = CLIPTokenizer.from_pretrained(folder)\n"
                                     "m = hub.load_local(spec, UNet2DModel.from_pretrained, folder)\n"
                                     "e = CLIPTextModel.from_pretrained(folder, use_safetensors=True)\n") == []
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            lines = unchecked_from_pretrained(path.read_text(encoding="utf-8"))
            if lines:
                found[str(path.relative_to(REPO_ROOT))] = lines
    assert not found, f"from_pretrained without use_safetensors (route it through common.registry): {found}"


def _tiny_unet():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, block_out_channels=(8, 8), norm_num_groups=4, layers_per_block=1,
                       down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2)


def _ddpm_folder(folder: Path, unet, safe: bool) -> Path:
    from diffusers import DDPMScheduler

    unet.save_pretrained(folder, safe_serialization=safe)
    DDPMScheduler(beta_end=0.02).save_pretrained(folder)
    return folder


def test_bin_only_weights_load_for_registry_hub_ids_only(monkeypatch, tmp_path, capfd):
    """A registry Hub repository with only diffusion_pytorch_model.bin (e.g. an old google/ddpm-*) loads through
    ``use_safetensors=False``; the same files in a user's folder are refused in one line."""
    cache = tmp_path / "hub"
    repo = cache / "models--test-org--tiny-ddpm"
    unet = _tiny_unet()
    _ddpm_folder(repo / "snapshots" / ("a" * 40), unet, safe=False)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setitem(registry.MODELS, "test-ddpm", registry.ModelSpec("test-ddpm", "ddpm", "test",
                                                                         hub_id="test-org/tiny-ddpm"))
    capfd.readouterr()
    loaded, config = load_ddpm("test-ddpm")
    assert config["beta_end"] == 0.02
    assert all(torch.equal(a, b) for a, b in zip(unet.state_dict().values(), loaded.state_dict().values()))
    assert "An error occurred" not in capfd.readouterr().err  # the failed safetensors attempt's log is dropped
    local = _ddpm_folder(tmp_path / "mine", unet, safe=False)
    with pytest.raises(PickleRefused) as info:
        load_ddpm(str(local))
    msg = info.value.format_message()
    assert "\n" not in msg and "diffusion_pytorch_model.bin is a torch.save zip file" in msg and "refused" in msg


def test_user_folders_with_pickles_are_refused_by_every_loader(tiny_sd_folder, tmp_path):
    from common.toy import measure_sd
    from common.toy.train_sd import load_vae

    folder = tmp_path / "sd"
    shutil.copytree(tiny_sd_folder, folder)
    vae = folder / "vae" / "diffusion_pytorch_model.safetensors"
    from safetensors.torch import load_file

    torch.save(load_file(vae), folder / "vae" / "diffusion_pytorch_model.bin")
    vae.unlink()
    with pytest.raises(PickleRefused, match="vae/diffusion_pytorch_model.bin is a torch.save zip file"):
        load_vae(folder, torch.device("cpu"))  # train_sd's stage 2 reads OUT/vae
    result = CliRunner().invoke(measure_sd.main, ["--model", str(folder), "--device", "cpu"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output.startswith("Error: ") and "pickles are refused" in result.output
    assert "Defaulting to unsafe serialization" not in result.output


def test_malformed_safetensors_are_one_line(tmp_path, capfd):
    from safetensors.torch import save_file

    unet = _tiny_unet()
    wrong = _ddpm_folder(tmp_path / "wrong", unet, safe=True)
    save_file({"x" + k: v for k, v in unet.state_dict().items()}, str(wrong / "diffusion_pytorch_model.safetensors"))
    capfd.readouterr()
    with pytest.raises(ModelLoadError) as info:  # was: NotImplementedError "Cannot copy out of meta tensor"
        load_ddpm(str(wrong))
    msg = info.value.format_message()
    n = len(unet.state_dict())
    assert msg.startswith(f"{wrong}: the weights do not match its config.json: {n} tensor(s) missing (conv_in.bias")
    assert f"{n} unexpected (xconv_in.bias" in msg and "\n" not in msg
    assert "Some weights" not in capfd.readouterr().err  # diffusers' own warning is held back
    truncated = _ddpm_folder(tmp_path / "truncated", unet, safe=True)
    data = (truncated / "diffusion_pytorch_model.safetensors").read_bytes()
    (truncated / "diffusion_pytorch_model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="diffusion_pytorch_model.safetensors is not a valid safetensors file"):
        load_ddpm(str(truncated))
    (truncated / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        hub.check_weight_files(truncated)
