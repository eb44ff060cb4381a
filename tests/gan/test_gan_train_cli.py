"""gan.train / generate / dataset_tool / augment_preview: determinism, exact resume, outputs, one-line errors."""

import json
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from gan import augment_preview, dataset_tool, generate, train
from gan.dataset import load_images
from gan.training import TrainConfig, Trainer

TINY = dict(data="toy", use_r1=True, use_diffaug=True, resolution=16, batch=4, cbase=64, cmax=16, seed=3)
TINY_FLAGS = ["--data", "toy", "--resolution", "16", "--batch", "4", "--cbase", "64", "--cmax", "16",
              "--kimg", "0.008", "--snap", "1", "--fid_n", "8"]


def _state(tr: Trainer) -> dict:
    out = {f"{n}.{k}": v.clone() for n, net in (("G", tr.G), ("D", tr.D), ("G_ema", tr.G_ema))
           for k, v in net.state_dict().items()}
    for n, opt in (("G", tr.opt_G), ("D", tr.opt_D)):
        for i, st in opt.state_dict()["state"].items():
            out.update({f"opt{n}.{i}.{k}": torch.as_tensor(v).clone() for k, v in st.items()})
    return out


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_short_run_is_deterministic():
    runs = []
    for _ in range(2):
        tr = Trainer(TrainConfig(**TINY))
        for _ in range(2):
            tr.train_step()
        runs.append(_state(tr))
    _assert_same(*runs)


def test_resume_gives_the_same_next_step(tmp_path):
    straight = Trainer(TrainConfig(**TINY))
    for _ in range(3):
        straight.train_step()
    first = Trainer(TrainConfig(**TINY))
    for _ in range(2):
        first.train_step()
    path = first.save(tmp_path / "ckpt.safetensors")
    resumed = Trainer(TrainConfig(**TINY, checkpoint_path=str(path)))
    assert resumed.step == 2
    resumed.train_step()
    _assert_same(_state(straight), _state(resumed))
    assert torch.equal(straight.loss.pl_mean, resumed.loss.pl_mean)


def test_images_seen_count_the_saved_runs_batch_after_a_resume(tmp_path):
    first = Trainer(TrainConfig(**TINY))
    first.train_step()
    path = first.save(tmp_path / "ckpt.safetensors")
    resumed = Trainer(TrainConfig(**{**TINY, "batch": 8}, checkpoint_path=str(path)))
    assert (resumed.step, resumed.nimg) == (1, 4)  # 1 step of batch 4, not 1 x the new batch 8
    resumed.train_step()
    assert resumed.nimg == 12 and ckpt_state(resumed.save(tmp_path / "next.safetensors"))["nimg"] == 12


def ckpt_state(path):
    from gan.checkpoint import read_checkpoint

    return read_checkpoint(path)[2]


def _run(args):
    return CliRunner().invoke(train.main, args)


def test_train_cli_outputs_and_generate(tmp_path):
    base = ["--outdir", str(tmp_path / "runs"), "--use_r1_regularization", "True", "--use_diffaug", "False"]
    result = _run(base + TINY_FLAGS)
    assert result.exit_code == 0 and not result.exception, result.output
    run_dir = tmp_path / "runs" / "00000-toy-r1-noaug"
    lines = (run_dir / "log.txt").read_text().splitlines()
    assert lines[0].startswith("flags: ") and '"use_r1": true' in lines[0] and '"use_diffaug": false' in lines[0]
    assert any(re.match(r"FID\[.+\] step 000002: \d+\.\d+", line) for line in lines)
    assert (run_dir / "fakes000002.png").is_file() and (run_dir / "config.json").is_file()
    ckpt = run_dir / "checkpoint-000002.safetensors"
    assert ckpt.is_file() and not list(run_dir.glob("*.tmp"))
    result = _run(base + TINY_FLAGS + ["--checkpoint_path", str(ckpt)])  # second run: next number
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "00001-toy-r1-noaug" / "fakes000004.png").is_file()
    out = tmp_path / "gen"
    result = CliRunner().invoke(generate.main, ["--checkpoint", str(ckpt), "--seeds", "0-2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "grid.png", "seed0000.png", "seed0001.png",
                                                     "seed0002.png"]
    config = json.loads((out / "config.json").read_text())
    assert config["seeds"] == [0, 1, 2] and config["trunc"] == 1.0 and config["checkpoint"] == str(ckpt)
    # checkpoint of another architecture -> one line, exit 2
    result = _run(base + TINY_FLAGS[:-6] + ["--cmax", "8", "--kimg", "0.004", "--checkpoint_path", str(ckpt)])
    assert result.exit_code == 2 and "another architecture" in result.output
    assert "channel_max 16 vs 8" in result.output and len(result.output.strip().splitlines()) == 1


def _png(path, size):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), 128, np.uint8)).save(path)


@pytest.mark.parametrize("case", ["missing", "empty", "mixed", "not_pow2", "bad_ckpt", "pickle_ckpt"])
def test_bad_input_is_one_line_exit_2(tmp_path, case):
    data, extra = tmp_path / "data", []
    if case == "empty":
        data.mkdir()
    elif case in ("mixed", "not_pow2", "bad_ckpt", "pickle_ckpt"):
        _png(data / "a.png", 8)
        _png(data / "b.png", 16 if case == "mixed" else 8)
    if case == "not_pow2":
        extra = ["--resolution", "48"]
    if case == "bad_ckpt":
        (tmp_path / "x.safetensors").write_bytes(b"not a checkpoint")
        extra = ["--checkpoint_path", str(tmp_path / "x.safetensors")]
    if case == "pickle_ckpt":  # the handout's flag with its StyleGAN2-ADA pickle
        (tmp_path / "part1-10K.pkl").write_bytes(b"\x80\x04\x95" + bytes(16))
        extra = ["--checkpoint_path", str(tmp_path / "part1-10K.pkl")]
    result = _run(["--outdir", str(tmp_path / "runs"), "--data", str(data), "--use_r1_regularization", "True",
                   "--use_diffaug", "True", "--kimg", "0.004", "--batch", "4", "--cbase", "32", "--cmax", "8"] + extra)
    expected = {"missing": "dataset not found", "empty": "no images", "mixed": "mixed sizes",
                "not_pow2": "power of two", "bad_ckpt": "not a safetensors checkpoint",
                "pickle_ckpt": "pickles are refused by design"}[case]
    assert result.exit_code == 2 and expected in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


@pytest.mark.parametrize("case", ["garbage", "missing", "pickle", "toy_64px", "cmax", "good"])
def test_the_resume_file_is_checked_before_the_data_loads(tmp_path, monkeypatch, case):
    """A bad --checkpoint_path is one line, exit 2, before any data set work or output (the toy set takes ~5 s)."""
    from gan import checkpoint as ckpt
    from gan.networks import ArchConfig, Generator

    def no_data(*args, **kwargs):
        raise RuntimeError("the data set was loaded")

    monkeypatch.setattr("gan.training.load_dataset", no_data)
    path = tmp_path / ("part1-10K.pkl" if case == "pickle" else "resume.safetensors")
    if case == "garbage":
        path.write_bytes(b"not a checkpoint")
    elif case == "pickle":
        path.write_bytes(b"\x80\x04\x95" + bytes(16))
    elif case != "missing":  # a 16 px checkpoint with channel_max 16 (TINY)
        arch = ArchConfig.default_for(16, channel_base=64, channel_max=16)
        ckpt.save_checkpoint(path, arch, {"G": Generator(arch)})
    data = {"toy_64px": ["--data", "toy"], "cmax": ["--data", str(tmp_path / "no-such-data"), "--resolution", "16",
                                                     "--cbase", "64", "--cmax", "8"]}.get(case, TINY_FLAGS[:10])
    runs = tmp_path / "runs"
    result = _run(["--outdir", str(runs), "--use_r1_regularization", "True", "--use_diffaug", "True",
                   "--checkpoint_path", str(path)] + data)
    if case == "good":  # control: a matching checkpoint goes on to the data set
        assert isinstance(result.exception, RuntimeError) and "the data set was loaded" in str(result.exception)
        return
    expected = {"garbage": "not a safetensors checkpoint", "missing": "checkpoint not found",
                "pickle": "pickles are refused by design", "toy_64px": "resolution 16 vs 64",
                "cmax": "channel_max 16 vs 8"}[case]
    assert result.exit_code == 2 and expected in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not runs.exists()


def test_dataset_tool_and_augment_preview(tmp_path):
    src = tmp_path / "raw"
    src.mkdir()
    for i, size in enumerate([20, 24, 32]):  # mixed, non-square sizes: centre crop + resize
        pixels = np.random.default_rng(i).integers(0, 255, (size, size + 4, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(src / f"{i}.png")
    for dest in (tmp_path / "packed.zip", tmp_path / "packed"):
        args = ["--source", str(src), "--dest", str(dest), "--resolution", "16"]
        result = CliRunner().invoke(dataset_tool.main, args)
        assert result.exit_code == 0, result.output
        assert load_images(dest).shape == (3, 3, 16, 16)
    assert (tmp_path / "packed" / "00000" / "img00000002.png").is_file()
    out = tmp_path / "aug.png"
    result = CliRunner().invoke(augment_preview.main, ["--data", str(tmp_path / "packed.zip"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size[1] > 5 * 16  # five rows


def test_make_toy_checkpoint_and_toy_bar(tmp_path):
    from gan import make_toy_checkpoint, toy_bar
    from gan.checkpoint import read_checkpoint

    start = tmp_path / "start.safetensors"
    args = ["--steps", "2", "--batch", "4", "--resolution", "16", "--out", str(start),
            "--workdir", str(tmp_path / "w"), "--fid_n", "10"]
    result = CliRunner().invoke(make_toy_checkpoint.main, args)
    assert result.exit_code == 0, result.output
    tensors, arch, state = read_checkpoint(start)
    assert state["step"] == 2 and arch.resolution == 16
    assert {k.split(".")[0] for k in tensors} == {"G", "D", "G_ema"}  # slim: no optimiser / RNG state
    assert all(v.dtype == torch.float16 for v in tensors.values() if v.is_floating_point())
    out = tmp_path / "bar"
    args = ["--checkpoint", str(start), "--outdir", str(out), "--resolution", "16", "--kimg", "0.004", "--batch", "4",
            "--fid_n", "10"]
    result = CliRunner().invoke(toy_bar.main, args)
    assert result.exit_code == 0, result.output
    assert "plain" in result.output and "+R1+DiffAugment" in result.output and (out / "toy_bar.png").is_file()
    assert len(re.findall(r"-noaug|-diffaug", " ".join(p.name for p in out.iterdir()))) == 3
    result = CliRunner().invoke(toy_bar.main, ["--checkpoint", str(tmp_path / "missing.safetensors")])
    assert result.exit_code == 2 and "make_toy_checkpoint" in result.output
