"""``python -m common.toy``: data export, train dispatch and sample delegation (heavy work replaced by fakes)."""

import json
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


def test_data_writes_its_folder_atomically_with_a_config(tmp_path, monkeypatch):
    import common.toy.__main__ as toy_main

    out = tmp_path / "shapes"
    result = CliRunner().invoke(main, ["data", "--n", "3", "--size", "16", "--seed", "4", "--out", str(out)])
    assert result.exit_code == 0 and not result.exception, result.output
    config = json.loads((out / "config.json").read_text())
    assert {k: config[k] for k in ("n", "split", "size", "seed")} == {"n": 3, "split": "test", "size": 16, "seed": 4}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]  # no temporary folder left
    result = CliRunner().invoke(main, ["data", "--n", "2", "--out", str(out)])  # not empty: refused, untouched
    assert result.exit_code == 2 and "already exists" in result.output and len((out / "captions.txt").read_text()
                                                                                .splitlines()) == 3
    assert CliRunner().invoke(main, ["data", "--n", "2", "--out", str(out), "--force"]).exit_code == 0
    assert len((out / "captions.txt").read_text().splitlines()) == 2
    written = []

    def fail_on_third(image, path, *args, **kwargs):
        if len(written) == 2:
            raise OSError(28, "No space left on device")
        written.append(path)

    monkeypatch.setattr(toy_main, "save_image", fail_on_third)
    result = CliRunner().invoke(main, ["data", "--n", "5", "--out", str(tmp_path / "half")])
    assert result.exit_code == 2 and len(written) == 2 and "No space left" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]  # images never exist without captions.txt


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
def test_train_subcommands_dispatch_lazily(monkeypatch, tmp_path, model):
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
                                    ["--widths", "32,32,64,96"], ["--time_budget", "600"], ["--stage", "vae"],
                                    ["--clip", "toy-clip"]])
@pytest.mark.parametrize("model", ["clip", "pixel"])
def test_each_subcommand_has_only_its_own_options(tmp_path, model, option):
    result = CliRunner().invoke(main, ["train", model, *option, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and f"No such option '{option[0]}'" in result.output
    help_text = CliRunner().invoke(main, ["train", model, "--help"]).output
    assert option[0] not in help_text and "--seed" in help_text


@pytest.mark.parametrize("clip", ["toy-nope", "clip-vit-b-32", "missing-folder/"])
def test_train_sd_refuses_a_bad_clip_before_training(monkeypatch, tmp_path, clip):
    calls = fake_module(monkeypatch, "common.toy.train_sd", "train")
    result = CliRunner().invoke(main, ["train", "sd", "--clip", clip, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and calls == [], result.output
    expected = {"toy-nope": "unknown model 'toy-nope'; known clip models: clip-vit-b-32, toy-clip",
                "clip-vit-b-32": "is a Hub model", "missing-folder/": "folder not found"}[clip]
    assert expected in result.output
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "open_clip_config.json").write_text("{}")
    result = CliRunner().invoke(main, ["train", "sd", "--clip", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "toy-clip weights missing" in result.output and calls == []


def test_train_sd_passes_a_clip_folder(monkeypatch, tmp_path):
    from common.registry import TOY_MODELS_DIR

    calls = fake_module(monkeypatch, "common.toy.train_sd", "train")
    result = CliRunner().invoke(main, ["train", "sd", "--clip", "toy-clip", "--stage", "unet", "--out",
                                       str(tmp_path / "o")])
    assert result.exit_code == 0 and not result.exception, result.output
    assert calls[0]["clip"] == TOY_MODELS_DIR / "toy-clip" and calls[0]["stage"] == "unet"


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


def test_init_from_a_folder_without_a_unet_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["train", "faces", "--device", "cpu", "--init_from", str(tmp_path),
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "is not a toy-faces folder" in result.output
    assert not (tmp_path / "o").exists()
