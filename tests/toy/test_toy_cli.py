"""``python -m common.toy``: data export, train dispatch and sample delegation (heavy work replaced by fakes)."""

import importlib
import sys
import types

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from common.toy import shapes
from common.toy.__main__ import main


def test_help_lists_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and not result.exception
    for command in ("train", "sample", "data"):
        assert command in result.output


def test_data_writes_pngs_and_captions(tmp_path):
    out = tmp_path / "shapes"
    result = CliRunner().invoke(main, ["data", "--n", "5", "--out", str(out)])
    assert result.exit_code == 0 and not result.exception, result.output
    lines = (out / "captions.txt").read_text().splitlines()
    assert len(lines) == 5
    specs = shapes.sample_specs(5, shapes.split_seed("test"))
    expected = shapes.to_uint8(shapes.render(specs)).numpy()
    for line, spec, pixels in zip(lines, specs, expected):
        name, text = line.split("\t")
        assert text == shapes.caption(spec) and shapes.parse_caption(text)
        assert np.array_equal(np.asarray(Image.open(out / name).convert("RGB")), pixels)


def test_data_split_changes_the_images(tmp_path):
    runner = CliRunner()
    for split in ("train", "val"):
        result = runner.invoke(main, ["data", "--n", "3", "--split", split, "--out", str(tmp_path / split)])
        assert result.exit_code == 0 and not result.exception
    assert (tmp_path / "train" / "captions.txt").read_text() != (tmp_path / "val" / "captions.txt").read_text()


def test_bad_arguments_exit_with_code_2(tmp_path):
    runner = CliRunner()
    for args in (["train", "vae"], ["data", "--n", "0", "--out", str(tmp_path)], ["train", "clip", "--steps", "0"],
                 ["train", "faces", "--lr", "0"], ["train", "faces", "--batch_size", "0"],
                 ["train", "faces", "--dc_weight", "-1"], ["train", "faces", "--low_snr_cap", "0.5"],
                 ["train", "faces", "--widths", "30,32,64,96"], ["train", "faces", "--widths", "32,32,64"],
                 ["train", "faces", "--widths", "16,32,48,96"], ["train", "faces", "--widths", "a,b"],
                 ["train", "faces", "--time_budget", "5"],
                 ["train", "faces", "--widths", "32,32,64,96", "--init_from", str(tmp_path)]):
        result = runner.invoke(main, args)
        assert result.exit_code == 2, (args, result.output)


def fake_module(monkeypatch, name: str, function: str) -> list[dict]:
    """Install a fake module ``name`` whose ``function`` records its keyword arguments; returns the record."""
    calls = []
    fake = types.ModuleType(name)
    setattr(fake, function, lambda **kwargs: calls.append(kwargs))
    monkeypatch.setitem(sys.modules, name, fake)
    return calls


@pytest.mark.parametrize("model", ["clip", "sd", "faces", "pixel"])
def test_train_dispatches_lazily(monkeypatch, tmp_path, model):
    calls = fake_module(monkeypatch, f"common.toy.train_{model}", "train")
    args = ["train", model, "--device", "cpu", "--out", str(tmp_path / model), "--steps", "7", "--seed", "3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and not result.exception, result.output
    expected = {"out": tmp_path / model, "device": "cpu", "steps": 7, "seed": 3}
    if model == "sd":  # toy-sd also takes its stage and the toy-clip folder
        expected.update(stage="all", clip=None)
    if model == "faces":  # toy-faces can continue from a folder
        expected.update(init_from=None)
    assert calls == [expected]


@pytest.mark.parametrize("option", [["--init_from", "."], ["--lr", "1e-4"], ["--batch_size", "8"],
                                    ["--dc_weight", "1"], ["--compile"], ["--low_snr_cap", "30"],
                                    ["--widths", "32,32,64,96"], ["--time_budget", "600"]])
def test_faces_options_are_for_faces_only(tmp_path, option):
    result = CliRunner().invoke(main, ["train", "clip", *option, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "apply to `train faces` only" in result.output


def test_faces_options_reach_the_trainer(monkeypatch, tmp_path):
    calls = fake_module(monkeypatch, "common.toy.train_faces", "train")
    args = ["train", "faces", "--out", str(tmp_path), "--lr", "1.5e-4", "--batch_size", "1024", "--dc_weight", "20",
            "--compile", "--low_snr_cap", "30", "--widths", "16,32,64,96", "--time_budget", "1450"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and not result.exception, result.output
    keys = ("lr", "batch_size", "dc_weight", "compile_model", "low_snr_cap", "block_out_channels", "time_budget_s")
    expected = {"lr": 1.5e-4, "batch_size": 1024, "dc_weight": 20.0, "compile_model": True, "low_snr_cap": 30.0,
                "block_out_channels": (16, 32, 64, 96), "time_budget_s": 1450.0}
    assert {k: calls[0][k] for k in keys} == expected


def test_train_reports_a_missing_trainer(monkeypatch):
    real_import = importlib.import_module

    def fake_import(name, *args):
        if name == "common.toy.train_pixel":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake_import)
    result = CliRunner().invoke(main, ["train", "pixel", "--steps", "1"])
    assert result.exit_code == 2 and "not available" in result.output


def test_sample_delegates_to_sample_module(monkeypatch, tmp_path):
    calls = fake_module(monkeypatch, "common.toy.sample", "sample_cli_impl")
    out = str(tmp_path / "x.png")
    args = ["sample", "--prompt", "a red circle on a blue background", "--out", out, "--guidance_scale", "3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and not result.exception, result.output
    assert calls == [{"prompt": "a red circle on a blue background", "out": out, "seed": 0, "steps": 50,
                      "guidance_scale": 3.0, "model": "toy-sd", "device": "auto"}]


def test_judge_prints_accuracy_tables(tmp_path):
    import torch

    from common.toy import clip_model

    torch.manual_seed(0)
    folder = clip_model.save_toy_clip(clip_model.create_toy_clip(), tmp_path / "clip")
    runner = CliRunner()
    assert runner.invoke(main, ["data", "--n", "4", "--out", str(tmp_path / "d")]).exit_code == 0
    for args in (["--images", str(tmp_path / "d")], ["--n", "8"]):
        result = runner.invoke(main, ["judge", "--clip_folder", str(folder), "--device", "cpu", *args])
        assert result.exit_code == 0 and not result.exception, result.output
        assert "background" in result.output and len(result.output.strip().splitlines()) == 2 + (args[0] == "--n")
    (tmp_path / "d" / "captions.txt").write_text("00000.png\ta red blob\n")
    result = runner.invoke(main, ["judge", "--clip_folder", str(folder), "--images", str(tmp_path / "d")])
    assert result.exit_code == 2 and "not a shapes caption" in result.output
    result = runner.invoke(main, ["judge", "--clip_folder", str(tmp_path / "none"), "--n", "2"])
    assert result.exit_code == 2 and "python -m common.toy train clip" in result.output


def test_train_stage_option_is_for_sd_only():
    from click.testing import CliRunner

    from common.toy.__main__ import main

    result = CliRunner().invoke(main, ["train", "clip", "--stage", "vae"])
    assert result.exit_code == 2 and "apply to `train sd` only" in result.output


def test_init_from_a_folder_without_a_unet_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["train", "faces", "--device", "cpu", "--init_from", str(tmp_path),
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "is not a toy-faces folder" in result.output
    assert not (tmp_path / "o").exists()
