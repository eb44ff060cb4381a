"""Bad input, divergence and reproducibility of the gan tools (issues #18, #19, #20, #21).

Every refusal is exactly one ``Error:`` line with exit code 2, no traceback and nothing left behind.
"""

import dataclasses
import json
import struct
import zipfile
import zlib

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file, save_file

from gan import augment_preview, dataset_tool, generate, make_toy_checkpoint, toy_bar, train
from gan import loss as L
from gan.dataset import load_images
from gan.training import TrainConfig, Trainer

# 8 px, default toy channels (64): gan.toy_bar --resolution 8 builds the same architecture
SMALL = dict(data="toy", use_r1=True, use_diffaug=False, resolution=8, batch=4, seed=1)
TRAIN = ["--use_r1_regularization", "True", "--use_diffaug", "False", "--data", "toy", "--resolution", "8",
         "--batch", "4", "--fid_n", "0"]


def _one_error_line(result, needle: str) -> None:
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert result.exit_code == 2, result.output
    assert len(errors) == 1 and needle in errors[0], result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, (ValueError, RuntimeError))


def _png(path, size=8, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)


# ------------------------------------------------------------------------------------ non-finite options
@pytest.mark.parametrize("tool,args", [
    ("train", ["--lr", "inf"]), ("train", ["--ema_kimg", "nan"]), ("train", ["--gamma", "inf"]),
    ("train", ["--kimg", "nan"]), ("train", ["--kimg", "inf"]), ("generate", ["--trunc", "nan"]),
    ("toy_bar", ["--kimg", "nan"]), ("train", ["--style_mixing", "1.5"])])
def test_non_finite_or_out_of_range_floats_are_refused(tmp_path, tool, args):
    out = tmp_path / "out"
    command, base = {"train": (train.main, ["--outdir", str(out)] + TRAIN),
                     "generate": (generate.main, ["--checkpoint", str(tmp_path / "c.safetensors"), "--out", str(out)]),
                     "toy_bar": (toy_bar.main, ["--outdir", str(out)])}[tool]
    result = CliRunner().invoke(command, base + args)
    _one_error_line(result, args[0])
    assert not out.exists()  # validated before any run folder, config.json or log.txt


# ------------------------------------------------------------------------------------------ divergence
def test_huge_learning_rate_stops_with_the_step_and_cause(tmp_path):
    result = CliRunner().invoke(train.main, ["--outdir", str(tmp_path), "--lr", "1e8", "--kimg", "0.02",
                                             "--snap", "100"] + TRAIN)
    _one_error_line(result, "diverged")
    assert "at step 2" in result.output and "learning rate" in result.output
    assert not list(tmp_path.rglob("*.safetensors")) and not list(tmp_path.rglob("fakes*.png"))


# ------------------------------------------------------------------------------------------ bad datasets
def _zip(path, n=2):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(n):
            _png(path.parent / f"src{i}.png", value=40 * i)
            zf.write(path.parent / f"src{i}.png", f"img{i}.png")
    return path


def _bomb_png(path, side=20_000):
    """A valid-header PNG that claims side x side pixels (400 MP) in a few dozen bytes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("case", ["bad_crc", "truncated", "bomb"])
@pytest.mark.parametrize("tool", ["train", "dataset_tool", "augment_preview"])
def test_corrupt_datasets_are_one_line(tmp_path, case, tool):
    if case == "bomb":
        data = tmp_path / "bomb"
        _bomb_png(data / "a.png")
    else:
        data = _zip(tmp_path / "d.zip")
        raw = bytearray(data.read_bytes())
        if case == "bad_crc":
            raw[200] ^= 0xFF  # inside the first member's PNG bytes
        else:
            raw = raw[: len(raw) // 2] + raw[-22:]  # members cut off, end-of-directory record kept
        data.write_bytes(bytes(raw))
    out = tmp_path / "out"
    command, args = {"train": (train.main, ["--outdir", str(out), *TRAIN[:4], "--data", str(data), "--batch", "4"]),
                     "dataset_tool": (dataset_tool.main, ["--source", str(data), "--dest", str(out)]),
                     "augment_preview": (augment_preview.main, ["--data", str(data), "--out", str(out)])}[tool]
    result = CliRunner().invoke(command, args)
    _one_error_line(result, {"bad_crc": "d.zip", "truncated": "d.zip", "bomb": "a.png"}[case])
    assert not out.exists()


def test_16_bit_pngs_are_rescaled_not_clipped(tmp_path):
    Image.fromarray(np.full((8, 8), 32768, np.uint16)).save(tmp_path / "a.png")  # mode I;16, mid grey
    images = load_images(tmp_path)
    assert images.shape == (1, 3, 8, 8) and int(images.min()) == int(images.max()) == 128


# ------------------------------------------------------------------------------------------ checkpoints
def _tamper(src, dst, case):
    tensors = load_file(str(src))
    from safetensors import safe_open

    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
    arch = json.loads(meta["arch"])
    if case == "arch_extra":
        meta["arch"] = json.dumps(arch | {"channels_last": True})
    elif case == "arch_missing":
        meta["arch"] = json.dumps({k: v for k, v in arch.items() if k != "w_dim"})
    elif case == "rng_size":
        tensors["rng.data"] = torch.zeros(10, dtype=torch.uint8)
    elif case == "state_json":
        meta["state"] = '{"step": 3, '
    elif case == "state_step":
        meta["state"] = json.dumps({"step": "three"})
    save_file(tensors, str(dst), metadata=meta)
    return dst


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    return Trainer(TrainConfig(**SMALL)).save(tmp_path_factory.mktemp("ckpt") / "small.safetensors")


MALFORMED = [("arch_extra", "unknown keys: channels_last"), ("arch_missing", "missing keys: w_dim"),
             ("rng_size", "rng.data"), ("state_json", "not valid JSON"), ("state_step", "step")]


@pytest.mark.parametrize("tool,case,needle", [(tool, case, needle) for tool in ("train", "generate", "toy_bar")
                                              for case, needle in MALFORMED
                                              if (tool, case) != ("generate", "rng_size")])  # see the next test
def test_malformed_checkpoints_are_one_line(tmp_path, small_checkpoint, case, needle, tool):
    ckpt = _tamper(small_checkpoint, tmp_path / "bad.safetensors", case)
    out = tmp_path / "out"
    command, args = {
        "train": (train.main, ["--outdir", str(out), "--checkpoint_path", str(ckpt), "--kimg", "0.004"] + TRAIN),
        "generate": (generate.main, ["--checkpoint", str(ckpt), "--out", str(out), "--seeds", "0"]),
        "toy_bar": (toy_bar.main, ["--checkpoint", str(ckpt), "--outdir", str(out), "--resolution", "8",
                                   "--kimg", "0.004", "--batch", "4", "--fid_n", "10"])}[tool]
    _one_error_line(CliRunner().invoke(command, args), needle)
    assert not out.exists()


def test_generate_reads_only_g_ema_so_a_bad_rng_state_does_not_matter(tmp_path, small_checkpoint):
    """gan.generate samples G_ema and restores no RNG state (a slim export has none): with rng.data damaged, which
    train and toy_bar refuse above, it writes the same images as from the intact file."""
    images = {}
    for name, ckpt in (("intact", small_checkpoint), ("bad_rng", _tamper(small_checkpoint, tmp_path / "b.safetensors",
                                                                         "rng_size"))):
        result = CliRunner().invoke(generate.main, ["--checkpoint", str(ckpt), "--out", str(tmp_path / name),
                                                    "--seeds", "0,1", "--device", "cpu"])
        assert result.exit_code == 0 and not result.exception, result.output
        images[name] = [(tmp_path / name / f"seed{s:04d}.png").read_bytes() for s in (0, 1)]
    assert images["bad_rng"] == images["intact"] and images["intact"][0] != images["intact"][1]


def test_unwritable_out_is_refused_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("in the way")
    args = ["--steps", "1", "--batch", "4", "--resolution", "8", "--out", str(blocker / "start.safetensors"),
            "--workdir", str(tmp_path / "w")]
    _one_error_line(CliRunner().invoke(make_toy_checkpoint.main, args), "cannot write --out")
    assert not (tmp_path / "w").exists()  # no training happened


# ------------------------------------------------------------------------------------------ dataset_tool
def test_dataset_tool_is_atomic_and_checks_the_resolution(tmp_path, monkeypatch):
    dest = tmp_path / "faces"
    _one_error_line(CliRunner().invoke(dataset_tool.main, ["--source", "toy", "--dest", str(dest), "--resolution",
                                                           "48"]), "power of two")
    calls = []

    def failing_save(self, *args, **kwargs):  # a crash (or a kill) after two images
        calls.append(1)
        if len(calls) > 2:
            raise OSError("disk full")
        return save(self, *args, **kwargs)

    save = Image.Image.save
    monkeypatch.setattr(Image.Image, "save", failing_save)
    result = CliRunner().invoke(dataset_tool.main, ["--source", "toy", "--dest", str(dest), "--resolution", "8"])
    _one_error_line(result, "disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither a partial dest nor a temporary folder
    monkeypatch.setattr(Image.Image, "save", save)
    result = CliRunner().invoke(dataset_tool.main, ["--source", "toy", "--dest", str(dest), "--resolution", "8"])
    assert result.exit_code == 0, result.output
    config = json.loads((dest / "config.json").read_text())
    assert (config["num_images"], config["image_size"], config["seed"]) == (100, 8, 7000)
    assert load_images(dest).shape == (100, 3, 8, 8)
    _one_error_line(CliRunner().invoke(dataset_tool.main, ["--source", "toy", "--dest", str(dest)]), "--overwrite")


def test_hidden_partial_folders_are_not_read(tmp_path):
    _png(tmp_path / "a.png")
    _png(tmp_path / ".faces.x1y2.partial" / "00000" / "img00000000.png", size=16)
    assert load_images(tmp_path).shape == (1, 3, 8, 8)


def test_augment_preview_writes_its_config(tmp_path):
    out = tmp_path / "aug.png"
    result = CliRunner().invoke(augment_preview.main, ["--data", "toy", "--resolution", "8", "--n", "2", "--seed",
                                                       "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "aug.config.json").read_text())
    assert config["seed"] == 5 and config["n"] == 2 and config["_run"]["torch_threads"] == torch.get_num_threads()


# ------------------------------------------------------------------------------------------ reproducibility
def test_identical_runs_write_byte_identical_checkpoints(tmp_path):
    paths = []
    for i in range(2):
        trainer = Trainer(TrainConfig(**SMALL))
        trainer.train_step()
        paths.append(trainer.save(tmp_path / f"run{i}.safetensors"))
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert not list(tmp_path.glob("*.tmp"))


def test_resume_log_shows_the_true_kimg(tmp_path):
    first = Trainer(TrainConfig(**SMALL))
    first.train_step()  # 4 images
    ckpt = first.save(tmp_path / "c.safetensors")
    args = ["--outdir", str(tmp_path / "runs"), "--checkpoint_path", str(ckpt), "--kimg", "0.008", "--snap", "1",
            *TRAIN[:-3], "8", "--fid_n", "0"]  # --batch 8 now
    result = CliRunner().invoke(train.main, args)
    assert result.exit_code == 0, result.output
    log = next((tmp_path / "runs").glob("*/log.txt")).read_text()
    assert "start step 1, kimg 0.004" in log and "step 000002 kimg 0.012" in log, log


def test_loss_config_has_no_unused_r1_switch_and_use_r1_false_skips_d_reg():
    assert "use_r1" not in {f.name for f in dataclasses.fields(L.LossConfig)}
    trainer = Trainer(TrainConfig(**SMALL | {"use_r1": False}))
    trainer.loss.d_reg = lambda *a: pytest.fail("d_reg ran without R1")
    trainer.train_step()  # step 0 is a regularisation step when R1 is on
    assert trainer.d_interval is None
