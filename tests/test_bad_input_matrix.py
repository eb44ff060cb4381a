"""Issue #21: every kind of bad input at every entry point is one ``Error:`` line, exit code 2, no traceback, and
no file left behind -- refused before any model loads.

Kinds: NaN / inf / absurd values of every float option (found by introspecting each command), missing and corrupt
inputs (garbage ``.png``, truncated ``.safetensors``, corrupt ``.zip``, malformed JSON, text that is not UTF-8), a
decompression-bomb PNG (9000 x 9000, written once per session), pickles, and unknown items of the benchmarks'
comma lists; plus one positive case: a 16-bit PNG is read and rescaled, not clipped. Every command runs in process
(``click.testing.CliRunner``) with the working directory inside the test's tmp folder, so a default output path
that is written before the refusal is caught too. Model loads (``common.hub.from_source`` / ``from_hub``) raise
:class:`ModelLoaded` here: a refusal that needs a loaded model is a bug of the entry point.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import pickle
import re
import struct
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
GAN_CHECKPOINT = str(ROOT / "gan" / "checkpoints" / "toy_faces64_start.safetensors")
PROMPT = "a red circle on a blue background"
EDIT = ["--loss_type", "dds", "--edit_prompt", "a green circle on a blue background"]
_TRY = re.compile(r"^Try '.+' for help\.$")  # ends click's usage block: "Usage: ..." (maybe wrapped) then this


class ModelLoaded(Exception):
    """Raised by the guarded model loaders: the refusal came only after a model was being loaded."""


# ---------------------------------------------------------------------------------------------------------------
# Entry points: the click command objects, read from each module (benchmarks imported by path)
# ---------------------------------------------------------------------------------------------------------------

def _bench(name: str) -> click.Command:
    module_name = f"_bench_cli_test_{name}"  # the name tests/test_benchmark_clis.py uses: loaded once per session
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name].main


MODULES = {"distillation.main": "distillation.main", "distillation.evaluate": "distillation.evaluate",
           "ddpm_ddim.main": "ddpm_ddim.main", "ddpm_ddim.measure": "ddpm_ddim.measure", "dps.main": "dps.main",
           "dps.measure": "dps.measure", "gan.train": "gan.train", "gan.generate": "gan.generate",
           "gan.toy_bar": "gan.toy_bar", "gan.dataset_tool": "gan.dataset_tool",
           "gan.augment_preview": "gan.augment_preview", "gan.make_toy_checkpoint": "gan.make_toy_checkpoint",
           "synchronization.main": "synchronization.main", "synchronization.evaluate": "synchronization.evaluate",
           "common.toy": "common.toy.__main__", "common.eval": "common.eval.__main__", "grading": "grading.cli"}
BENCHMARKS = sorted(p.stem for p in (ROOT / "benchmarks").glob("bench_*.py"))


def command(entry: str) -> click.Command:
    """The click command of an entry point key (``common.toy`` and ``grading`` are groups)."""
    return _bench(entry) if entry in BENCHMARKS else importlib.import_module(MODULES[entry]).main


# Valid, tiny arguments per (entry point, subcommand): a case adds its bad option last (click keeps the last).
BASE: dict[tuple[str, str], list[str]] = {
    ("distillation.main", ""): ["--prompt", PROMPT, "--steps", "1", "--save_dir", "{out}/run"],
    ("distillation.evaluate", ""): ["--steps", "1", "--n_toy", "1", "--save_root", "{out}/eval"],
    ("ddpm_ddim.main", ""): ["-n", "DDIM", "--num_inference_steps", "1", "--num_samples", "1", "--save_dir",
                             "{out}/run"],
    ("ddpm_ddim.measure", ""): ["--num_samples", "2", "--ddpm_steps", "0", "--ddim_steps", "1", "--json",
                                "{out}/m.json"],
    ("dps.main", ""): ["--num_images", "1", "--num_inference_steps", "1", "--save_dir", "{out}/run"],
    ("dps.measure", ""): ["--num_images", "1", "--num_inference_steps", "1", "--json", "{out}/m.json"],
    ("gan.train", ""): ["--outdir", "{out}/runs", "--data", "toy", "--use_r1_regularization", "False",
                        "--use_diffaug", "False", "--kimg", "0.008", "--fid_n", "0"],
    ("gan.generate", ""): ["--checkpoint", GAN_CHECKPOINT, "--seeds", "0", "--out", "{out}/samples"],
    ("gan.toy_bar", ""): ["--outdir", "{out}/bar", "--kimg", "0.008", "--fid_n", "10"],
    ("gan.dataset_tool", ""): ["--source", "toy", "--dest", "{out}/ds"],
    ("gan.augment_preview", ""): ["--data", "toy", "--out", "{out}/aug.png"],
    ("gan.make_toy_checkpoint", ""): ["--steps", "1", "--workdir", "{out}/work", "--out", "{out}/c.safetensors"],
    ("synchronization.main", ""): ["--app", "wide_image", "--prompt", PROMPT, "--num_inference_steps", "1",
                                   "--save_dir", "{out}/run"],
    ("synchronization.evaluate", ""): ["--app", "wide_image", "--clip_model", "toy-clip", "--device", "cpu"],
    ("common.toy", "train sd"): ["train", "sd", "--steps", "1", "--device", "cpu", "--out",
                                 "{out}/sd"],
    ("common.toy", "train clip"): ["train", "clip", "--steps", "1", "--device", "cpu", "--out", "{out}/clip"],
    ("common.toy", "train pixel"): ["train", "pixel", "--steps", "1", "--device", "cpu", "--out", "{out}/pixel"],
    ("common.toy", "train faces"): ["train", "faces", "--steps", "1", "--device", "cpu", "--out", "{out}/faces"],
    ("common.toy", "sample"): ["sample", "--prompt", PROMPT, "--steps", "1", "--device", "cpu", "--out",
                               "{out}/s.png"],
    ("common.toy", "data"): ["data", "--n", "1", "--out", "{out}/data"],
    ("common.toy", "judge"): ["judge", "--n", "1", "--device", "cpu"],
    ("common.eval", ""): ["--clip_model", "toy-clip", "--device", "cpu"],
    ("grading", "similarity"): ["similarity", "umich-hw5-gan", "{corrupt_zip}", "--out", "{out}/sim"],
    ("grading", "check"): ["check", "umich-hw5-gan", "--path", "{in}/released"],
    ("grading", "grade"): ["grade", "umich-hw5-gan", "{corrupt_zip}", "--out", "{out}/graded"],
    ("grading", "submit"): ["submit", "umich-hw5-gan", "--name", "Kim", "--sid", "1", "--path", "{in}/released",
                            "--out", "{out}/s.zip"],
    ("grading", "release"): ["release", "umich-hw5-gan", "--out", "{out}/release"],
    ("bench_cpu_toy", ""): ["--steps", "1", "--reps", "1", "--json", "{out}/b.json"],
    ("bench_ddpm_dps", ""): ["--arch", "tiny", "--device", "cpu", "--json", "{out}/b.json"],
    ("bench_distillation", ""): ["--tiny", "--device", "cpu", "--steps", "1", "--json", "{out}/b.json"],
    ("bench_gan", ""): ["--device", "cpu", "--steps", "1", "--warmup", "0", "--json", "{out}/b.json"],
    ("bench_grading", ""): ["--json", "{out}/b.json"],
    ("bench_similarity", ""): ["--submissions", "4", "--copies", "1", "--json", "{out}/b.json"],
    ("bench_sync", ""): ["--tiny", "--device", "cpu", "--steps", "1", "--json", "{out}/b.json"],
}


@dataclass(frozen=True)
class Case:
    entry: str
    sub: str  # subcommand path ("" for a plain command)
    kind: str
    args: tuple[str, ...]

    @property
    def id(self) -> str:
        where = f"{self.entry} {self.sub}".strip().replace(" ", ".")
        return f"{where}-{self.kind}-{'_'.join(a.strip('-{}') for a in self.args[-2:])}"[:90]


def _subcommand(cmd: click.Command, sub: str) -> click.Command:
    for name in sub.split():
        cmd = cmd.commands[name]
    return cmd


def _float_values(ptype: click.ParamType) -> list[str]:
    """nan and inf always; an absurd magnitude beyond the range where the range has a bound."""
    values = ["nan", "inf"]
    if isinstance(ptype, click.FloatRange) and ptype.max is not None:
        values.append("1e30")
    elif isinstance(ptype, click.FloatRange) and ptype.min is not None:
        values.append("-1e30")
    return values


def float_cases() -> list[Case]:
    """One case per float option and value of every command (plain ``float`` options included: they must fail)."""
    out = []
    for (entry, sub), _ in BASE.items():
        for param in _subcommand(command(entry), sub).params:
            is_float = isinstance(param.type, (click.types.FloatParamType, click.FloatRange))
            if isinstance(param, click.Option) and is_float and not param.is_flag:
                out += [Case(entry, sub, "float", (param.opts[0], v)) for v in _float_values(param.type)]
    return out


def _cases(entry: str, sub: str, kind: str, *variants: list[str]) -> list[Case]:
    return [Case(entry, sub, kind, tuple(v)) for v in variants]


FILE_CASES = [
    *_cases("distillation.main", "", "image", EDIT + ["--src_img_path", "{garbage_png}"],
            EDIT + ["--src_img_path", "{bomb_png}"], EDIT + ["--src_img_path", "{in}/missing.png"]),
    *_cases("distillation.main", "", "json", ["--model", "{bad_json_model}"]),
    *_cases("distillation.main", "", "text", ["--prompts_file", "{not_utf8}"]),
    *_cases("distillation.evaluate", "", "json", ["--model", "{bad_json_model}"]),
    *_cases("ddpm_ddim.main", "", "json", ["--model", "{bad_json_model}"], ["--model", "{in}/missing_model"]),
    *_cases("ddpm_ddim.measure", "", "json", ["--model", "{bad_json_model}"]),
    *_cases("dps.main", "", "image", ["--images", "{garbage_dir}"], ["--images", "{bomb_dir}"],
            ["--images", "{in}/missing"]),
    *_cases("dps.main", "", "json", ["--model", "{bad_json_model}"]),
    *_cases("dps.measure", "", "json", ["--model", "{bad_json_model}"]),
    *_cases("gan.train", "", "data", ["--data", "{corrupt_zip}"], ["--data", "{garbage_dir}"],
            ["--data", "{bomb_dir}"], ["--data", "{in}/missing"]),
    *_cases("gan.train", "", "checkpoint", ["--checkpoint_path", "{pickle}"], ["--checkpoint_path", "{truncated}"],
            ["--checkpoint_path", "{bad_json_checkpoint}"]),
    *_cases("gan.generate", "", "checkpoint", ["--checkpoint", "{pickle}"], ["--checkpoint", "{truncated}"],
            ["--checkpoint", "{bad_json_checkpoint}"], ["--checkpoint", "{in}/missing.safetensors"]),
    *_cases("gan.toy_bar", "", "checkpoint", ["--checkpoint", "{pickle}"], ["--checkpoint", "{truncated}"]),
    *_cases("gan.dataset_tool", "", "data", ["--source", "{corrupt_zip}"], ["--source", "{garbage_dir}"],
            ["--source", "{bomb_dir}"], ["--source", "{in}/missing"]),
    *_cases("gan.augment_preview", "", "data", ["--data", "{corrupt_zip}"], ["--data", "{garbage_dir}"],
            ["--data", "{bomb_dir}"]),
    *_cases("gan.make_toy_checkpoint", "", "output", ["--out", "{in}"]),
    *_cases("synchronization.main", "", "json", ["--model", "{bad_json_model}"]),
    *_cases("synchronization.evaluate", "", "image", ["--fdir", "{garbage_dir}"], ["--fdir", "{bomb_dir}"],
            ["--fdir", "{in}/missing"]),
    *_cases("common.toy", "train sd", "clip", ["--clip", "{truncated_clip}"], ["--clip", "{bad_json_model}"]),
    *_cases("common.toy", "train clip", "int", ["--steps", "0"]),
    *_cases("common.toy", "train pixel", "int", ["--steps", "0"]),
    *_cases("common.toy", "train faces", "init", ["--init_from", "{truncated_dir}"],
            ["--init_from", "{pickle_dir}"]),
    *_cases("common.toy", "sample", "json", ["--model", "{bad_json_model}"]),
    *_cases("common.toy", "data", "output", ["--out", "{in}"]),
    *_cases("common.toy", "judge", "image", ["--images", "{garbage_dir}"], ["--images", "{bomb_dir}"]),
    *_cases("common.eval", "", "image", ["--fdir1", "{garbage_dir}"], ["--fdir1", "{bomb_dir}"],
            ["--fdir1", "{in}/missing"]),
    *_cases("grading", "similarity", "homework", ["similarity", "no-such-hw", "{corrupt_zip}", "--out", "{out}/s"]),
    *_cases("grading", "similarity", "zip", ["similarity", "umich-hw5-gan", "{corrupt_zip}", "{corrupt_zip2}",
                                             "--out", "{out}/s"]),
    *_cases("grading", "grade", "homework", ["grade", "no-such-hw", "{corrupt_zip}", "--out", "{out}/g"]),
    *_cases("grading", "check", "homework", ["check", "no-such-hw", "--path", "{in}/released"]),
    *_cases("grading", "submit", "homework", ["submit", "no-such-hw", "--name", "Kim", "--sid", "1", "--path",
                                              "{in}/released", "--out", "{out}/s.zip"]),
    *_cases("grading", "release", "homework", ["release", "no-such-hw", "--out", "{out}/r"]),
]
LIST_CASES = [
    *_cases("bench_distillation", "", "list", ["--methods", "sds,bogus"], ["--precisions", "fp8"],
            ["--graphs", "compiled"]),
    *_cases("bench_ddpm_dps", "", "list", ["--samplers", "DDIM,EULER"], ["--precisions", "fp8"],
            ["--modes", "batched,bogus"], ["--graphs", "compiled"]),
    *_cases("bench_sync", "", "list", ["--modes", "all,bogus"], ["--precisions", "fp8"], ["--graphs", "compiled"]),
    *_cases("bench_gan", "", "list", ["--precisions", "fp64"], ["--ops", "cuda,bogus"], ["--resolutions", "64,x"]),
    *_cases("bench_similarity", "", "list", ["--homeworks", "umich-hw5-gan,nope"]),
    *_cases("bench_cpu_toy", "", "list", ["--wait_policies", "default,BOGUS"]),
    *_cases("bench_grading", "", "list", ["--homework", "nope"]),
]
CASES = float_cases() + FILE_CASES + LIST_CASES


# ---------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------

def write_black_png(path: Path, width: int, height: int) -> Path:
    """A valid 8-bit grey PNG of zeros, streamed (no width x height array in memory): ~80 kB for 9000 x 9000."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    packer, row, parts = zlib.compressobj(9), b"\x00" * (width + 1), []  # filter byte 0 + width grey pixels
    for start in range(0, height, 500):
        parts.append(packer.compress(row * min(500, height - start)))
    parts.append(packer.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="session")
def bomb_png(tmp_path_factory) -> Path:
    """A 9000 x 9000 black PNG (81 megapixels, above common.images.MAX_PIXELS), written once per session."""
    return write_black_png(tmp_path_factory.mktemp("bomb") / "bomb.png", 9000, 9000)


def _truncated(path: Path) -> Path:
    from common.files import save_safetensors

    save_safetensors({"weight": torch.zeros(256)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 512])  # header intact, data cut short
    return path


def _corrupt_zip(path: Path) -> Path:
    """A zip whose directory is intact but whose member's deflated data is garbage (CRC and inflate fail)."""
    member = b"".join(bytes([i % 251]) for i in range(4096))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("gan/img00000000.png", member)
    data = bytearray(path.read_bytes())
    start = 30 + len("gan/img00000000.png")  # the local header, then the compressed data
    data[start:start + 64] = b"\xff\x00garbage!" * 6 + b"\xff" * 4
    path.write_bytes(bytes(data))
    return path


def make_inputs(root: Path, bomb: Path) -> dict[str, str]:
    """Every bad input a case can name, as ``{key}`` -> path (small files; the bomb is copied)."""
    from common.files import save_safetensors
    from gan.checkpoint import FORMAT

    root.mkdir()
    paths = {"in": root}
    (root / "garbage.png").write_bytes(b"this is not a PNG file\n" * 8)
    paths["garbage_png"] = root / "garbage.png"
    paths["bomb_png"] = root / "a_red_circle_on_a_blue_background.png"
    paths["bomb_png"].write_bytes(bomb.read_bytes())
    for name, src in (("garbage_dir", paths["garbage_png"]), ("bomb_dir", paths["bomb_png"])):
        folder = paths[name] = root / name
        folder.mkdir()
        (folder / "a_red_circle_on_a_blue_background_0.png").write_bytes(src.read_bytes())
        (folder / "captions.txt").write_text(f"a_red_circle_on_a_blue_background_0.png\t{PROMPT}\n")
    paths["not_utf8"] = root / "prompts.txt"
    paths["not_utf8"].write_bytes(b"\xff\xfe\x00a red\x80 circle\n")
    for name in ("corrupt_zip", "corrupt_zip2"):
        paths[name] = _corrupt_zip(root / f"Kim_2026000{len(name)}_hw5_gan.zip")  # umich-hw5-gan names
    paths["pickle"] = root / "network.pkl"
    paths["pickle"].write_bytes(pickle.dumps({"G_ema": [1.0, 2.0]}, protocol=4))
    paths["truncated"] = _truncated(root / "truncated.safetensors")
    paths["bad_json_checkpoint"] = root / "bad_json.safetensors"
    save_safetensors({"x": torch.zeros(1)}, paths["bad_json_checkpoint"], {"format": FORMAT, "arch": "{not json"})
    paths["bad_json_model"] = root / "bad_json_model"
    paths["bad_json_model"].mkdir()
    (paths["bad_json_model"] / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline",')
    paths["truncated_clip"] = root / "truncated_clip"
    paths["truncated_clip"].mkdir()
    (paths["truncated_clip"] / "open_clip_config.json").write_text(json.dumps({"model_cfg": {}}))
    _truncated(paths["truncated_clip"] / "open_clip_model.safetensors")
    paths["truncated_dir"] = root / "truncated_dir"
    (paths["truncated_dir"] / "unet").mkdir(parents=True)
    _truncated(paths["truncated_dir"] / "unet" / "diffusion_pytorch_model.safetensors")
    paths["pickle_dir"] = root / "pickle_dir"
    (paths["pickle_dir"] / "unet").mkdir(parents=True)
    (paths["pickle_dir"] / "unet" / "diffusion_pytorch_model.bin").write_bytes(paths["pickle"].read_bytes())
    (root / "released").mkdir()
    return {k: str(v) for k, v in paths.items()}


@pytest.fixture
def workspace(tmp_path, bomb_png, monkeypatch):
    """(inputs by key, the output folder): the working directory is the empty output folder; model loads raise."""
    from common import hub

    def refuse(*args, **kwargs):
        raise ModelLoaded("a model was being loaded before the bad input was refused")

    monkeypatch.setattr(hub, "from_source", refuse)
    monkeypatch.setattr(hub, "from_hub", refuse)
    inputs = make_inputs(tmp_path / "in", bomb_png)
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)
    return {**inputs, "out": str(out)}, tmp_path


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def _without_usage(lines: list[str]) -> list[str]:
    """``lines`` without click's usage block: ``Usage: ...``, its wrapped lines, ``Try ... for help.``."""
    kept, in_usage = [], False
    for line in lines:
        in_usage = in_usage or line.startswith("Usage: ")
        if not in_usage:
            kept.append(line)
        elif _TRY.match(line):
            in_usage = False
    return kept


def assert_refused(result, entry: str, new_files: set[str]) -> None:
    """Exit code 2, the last line ``Error: ...`` and the only line but click's usage lines, no traceback, no file."""
    text = result.output
    if isinstance(result.exception, ModelLoaded):
        pytest.fail(f"{entry}: {result.exception}; output:\n{text}")
    assert "Traceback" not in text and isinstance(result.exception, (SystemExit, type(None))), \
        f"{entry}: {type(result.exception).__name__}: {result.exception}\n{text}"
    assert result.exit_code == 2, f"{entry}: exit code {result.exit_code}, output:\n{text}"
    lines = [line for line in text.splitlines() if line.strip()]
    kept = _without_usage(lines)
    assert lines and lines[-1].startswith("Error:"), f"{entry}: the last line is not 'Error: ...':\n{text}"
    assert len(kept) == 1, f"{entry}: {len(kept)} lines besides click's usage lines:\n{text}"
    assert not new_files, f"{entry}: left {sorted(new_files)[:5]} behind"


@pytest.mark.timeout(20)  # a refusal takes well under a second; a bad one runs the command
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_one_error_line_and_leaves_nothing(case, workspace):
    paths, root = workspace
    base = BASE[(case.entry, case.sub)]
    args = list(case.args) if case.args and case.args[0] == base[0] and case.sub else base + list(case.args)
    args = [a.format(**paths) for a in args]
    before = _files(root)
    result = CliRunner().invoke(command(case.entry), args)
    assert_refused(result, f"{case.entry} {' '.join(args)}", _files(root) - before)


def test_a_16_bit_png_is_rescaled_not_clipped(tmp_path, monkeypatch):
    """gan.dataset_tool reads a 16-bit grey PNG through common.images.read_pil: 65535 -> 255, 32896 -> 128."""
    levels = np.array([0, 257, 32896, 65535], dtype=np.uint16)  # x 255 / 65535 = 0, 1, 128, 255
    img16 = np.tile(np.repeat(levels, 2), (8, 1))  # [8, 8]
    source = tmp_path / "faces16"
    source.mkdir()
    Image.fromarray(img16).save(source / "face.png")
    with Image.open(source / "face.png") as check:
        assert check.mode.startswith("I")  # really a 16-bit file
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(command("gan.dataset_tool"), ["--source", str(source), "--dest", "ds"])
    assert result.exit_code == 0 and not result.exception, result.output
    written = np.asarray(Image.open(tmp_path / "ds" / "00000" / "img00000000.png").convert("RGB"))
    assert written.shape == (8, 8, 3)
    assert written[0, ::2, 0].tolist() == [0, 1, 128, 255]
