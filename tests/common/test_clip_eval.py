"""CLIP evaluation (python -m common.eval): score = hand-computed cosine, eval.json format, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import open_clip
import pytest
import torch
from click.testing import CliRunner
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image

from common.eval import clip_score_folder, is_final_image, prompt_from_filename
from common.eval.__main__ import main
from common.eval.clip_score import clip_for_images
from common.registry import TOY_MODELS_DIR, load_clip, save_clip_folder

SIZE = 32
TINY_CFG = {
    "embed_dim": 24,
    "quick_gelu": True,
    "vision_cfg": {"image_size": SIZE, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
FINAL = ["A_red_bus_driving_on_a_desert_road.png", "a_v1.5_car.png", "a cat.png", "a_cat.png"]
SKIPPED = ["0.png", "25.png", "src_img.png", "src_img_1.png", "notes.txt", "progress/a_dog.png"]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A random open_clip model saved as open_clip_config.json + safetensors; (original model, folder)."""
    open_clip.factory._MODEL_CONFIGS["test-eval-clip"] = TINY_CFG
    try:
        torch.manual_seed(0)
        model = open_clip.create_model("test-eval-clip").eval()
    finally:
        open_clip.factory._MODEL_CONFIGS.pop("test-eval-clip")
    folder = save_clip_folder(model, TINY_CFG, tmp_path_factory.mktemp("clip") / "tiny")
    return model, str(folder)


def _write_images(folder, names):
    rng = np.random.default_rng(0)
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".png"):
            Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)
        else:
            path.write_text("not an image")


def _hand_cosine(model, path, text):
    """Independent computation: ToTensor + CLIP normalisation (images are already SIZE x SIZE), encode,
    L2-normalise, dot product."""
    arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    mean, std = np.array(OPENAI_DATASET_MEAN, np.float32), np.array(OPENAI_DATASET_STD, np.float32)
    pixels = torch.from_numpy((arr - mean) / std).permute(2, 0, 1)[None]
    with torch.no_grad():
        img = model.encode_image(pixels)[0]
        txt = model.encode_text(open_clip.tokenize([text]))[0]
    return float(img / img.norm() @ (txt / txt.norm()))


def test_prompt_rules():
    assert prompt_from_filename("out/A_red_bus_driving_on_a_desert_road.png") == "A red bus driving on a desert road"
    assert prompt_from_filename("a_v1.5_car.png") == "a v1.5 car"
    assert prompt_from_filename(r"C:\runs\sds\A_Dog.png".replace("\\", "/")) == "A Dog"
    assert prompt_from_filename("A_city_skyline_1667.png", "wide_images") == "A city skyline"
    assert all(is_final_image(n) for n in FINAL)
    assert not any(is_final_image(n) for n in SKIPPED[:5])
    assert not is_final_image("A_beach_scene_with_golden_sands.png", "wide_images")  # full panorama
    assert not is_final_image("generated_image.png") and not is_final_image("out/generated_progressive.png")


def test_score_matches_hand_computation(tiny_clip, tmp_path):
    model, clip_folder = tiny_clip
    _write_images(tmp_path, FINAL + SKIPPED)
    bundle = load_clip(clip_folder, "cpu")
    result = clip_score_folder(tmp_path, bundle)
    assert list(result)[0] == "source_dir" and list(result)[-1] == "score"
    assert result["source_dir"] == tmp_path.as_posix()
    scored = {k: v for k, v in result.items() if k not in ("source_dir", "score")}
    assert sorted(scored) == sorted((tmp_path / n).as_posix() for n in FINAL)  # snapshots, src_img not scored
    hand = {n: _hand_cosine(model, tmp_path / n, prompt_from_filename(n)) for n in FINAL}
    for name, cos in hand.items():
        assert scored[(tmp_path / name).as_posix()] == pytest.approx(cos, abs=1e-5)
    # "a cat.png" and "a_cat.png" are one prompt: mean per prompt, then mean over the 3 prompts.
    cat = (hand["a cat.png"] + hand["a_cat.png"]) / 2
    expected = (hand[FINAL[0]] + hand[FINAL[1]] + cat) / 3
    assert result["score"] == pytest.approx(expected, abs=1e-5)
    assert result["score"] != pytest.approx(sum(hand.values()) / 4, abs=1e-7)


def test_cli_writes_eval_json(tiny_clip, tmp_path):
    _, clip_folder = tiny_clip
    _write_images(tmp_path, FINAL[:2] + SKIPPED)
    result = CliRunner().invoke(main, ["--fdir1", str(tmp_path), "--clip_model", clip_folder, "--device", "cpu"])
    assert result.exit_code == 0 and not result.exception, result.output
    text = (tmp_path / "eval.json").read_text()
    data = json.loads(text)
    assert text.startswith('{\n  "source_dir"')  # strict JSON (common.runs.write_json_atomic), source_dir first
    assert len(data) == 5 and -1.0 <= data["score"] <= 1.0 and data["clip_model"] == clip_folder
    assert result.stdout.strip() == f"Cosine similarity {data['score']}"  # stdout exactly eval.py's line
    assert result.stderr.strip() == f"CLIP model: {clip_folder} (--clip_model)"
    config = json.loads((tmp_path / "eval_config.json").read_text())
    assert config["clip_model"] == clip_folder and config["score"] == data["score"] and "versions" in config["_run"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".json", ".tmp")) == ["eval.json",
                                                                                            "eval_config.json"]


def test_default_clip_follows_the_images(tmp_path):
    assert clip_for_images(tmp_path) == ("clip-vit-b-32", "no readable config.json next to the images")
    for model, expected in (("toy-sd", "toy-clip"), ("toy-pixel", "toy-clip"), ("sd-2.1-base", "clip-vit-b-32"),
                            ("deepfloyd-if", "clip-vit-b-32"), ("my/missing/folder", "clip-vit-b-32")):
        (tmp_path / "config.json").write_text(json.dumps({"model": model, "seed": 0}))
        name, reason = clip_for_images(tmp_path)
        assert name == expected and model in reason, (model, name, reason)
    (tmp_path / "config.json").write_text("[1, 2]")
    assert clip_for_images(tmp_path)[0] == "clip-vit-b-32"


def test_cli_wide_images_groups_crops(tiny_clip, tmp_path):
    model, clip_folder = tiny_clip
    crops = ["A_city_skyline_86.png", "A_city_skyline_1667.png", "A_lake_38.png"]
    _write_images(tmp_path, crops + ["A_city_skyline.png"])
    result = CliRunner().invoke(main, ["--fdir1", str(tmp_path), "--clip_model", clip_folder, "--app",
                                       "wide_images"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "eval.json").read_text())
    hand = [_hand_cosine(model, tmp_path / n, p) for n, p in zip(crops, ["A city skyline"] * 2 + ["A lake"])]
    assert len(data) == 3 + len(crops)
    assert data["score"] == pytest.approx(((hand[0] + hand[1]) / 2 + hand[2]) / 2, abs=1e-5)


@pytest.mark.parametrize("case", ["missing", "empty", "only_snapshots", "not_image", "unknown_model", "is_file",
                                  "eval_json_is_a_folder", "garbage_weights"])
def test_cli_bad_input_one_line_exit_2(tiny_clip, tmp_path, case):
    _, clip_folder = tiny_clip
    folder, model = tmp_path / "imgs", clip_folder
    folder.mkdir()
    if case == "missing":
        folder = tmp_path / "nowhere"
    elif case == "only_snapshots":
        _write_images(folder, ["0.png", "50.png", "src_img.png"])
    elif case == "not_image":
        _write_images(folder, ["a_dog.png"])
        (folder / "a_cat.png").write_bytes(b"\x89PNG but truncated")
    elif case == "unknown_model":
        _write_images(folder, ["a_dog.png"])
        model = "clip-vit-z-99"
    elif case == "is_file":
        folder = tmp_path / "file.png"
        folder.write_text("x")
    elif case == "eval_json_is_a_folder":
        _write_images(folder, ["a_dog.png"])
        (folder / "eval.json").mkdir()
    elif case == "garbage_weights":
        _write_images(folder, ["a_dog.png"])
        model = str(tmp_path / "bad-clip")
        shutil.copytree(clip_folder, model)
        (tmp_path / "bad-clip" / "open_clip_model.safetensors").write_bytes(b"\x10" + bytes(7) + b"{garbage")
    result = CliRunner().invoke(main, ["--fdir1", str(folder), "--clip_model", model])
    assert result.exit_code == 2, result.output
    lines = result.stdout.strip().splitlines() + [line for line in result.stderr.strip().splitlines()
                                                  if not line.startswith("CLIP model: ")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    if case == "eval_json_is_a_folder":
        assert "eval.json: it is a folder" in lines[0]
        assert sorted(p.name for p in folder.iterdir()) == ["a_dog.png", "eval.json"]  # no eval.json.tmp left
    elif case == "garbage_weights":
        assert "open_clip_model.safetensors is not a valid safetensors file" in lines[0]
    else:
        assert not (folder / "eval.json").exists() if folder.is_dir() else True
    if case == "unknown_model":
        assert "clip-vit-z-99" in lines[0] and "clip-vit-b-32" in lines[0] and "toy-clip" in lines[0]


@pytest.mark.skipif(not (TOY_MODELS_DIR / "toy-clip" / "open_clip_model.safetensors").is_file(),
                    reason="toy-clip weights not trained yet")
def test_toy_clip_scores_true_captions_higher(tmp_path, monkeypatch):
    """Toy outputs (config.json naming toy-sd) are scored with toy-clip by default, offline too (issue #20)."""
    from common.images import tensor_to_pil
    from common.toy.shapes import caption, render, sample_specs

    specs = sample_specs(8, 123)
    images = tensor_to_pil(render(specs))
    true_dir, wrong_dir = tmp_path / "true", tmp_path / "wrong"
    for folder, shift in ((true_dir, 0), (wrong_dir, 1)):
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model": "toy-sd", "seed": 0}))
        for i, img in enumerate(images):
            img.save(folder / (caption(specs[(i + shift) % len(specs)]).replace(" ", "_") + f"_{i}.png"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    per_image = []
    for folder in (true_dir, wrong_dir):
        result = CliRunner().invoke(main, ["--fdir1", str(folder), "--app", "wide_images"])
        assert result.exit_code == 0, result.output
        assert result.stderr.startswith("CLIP model: toy-clip (config.json names the toy model 'toy-sd')")
        data = json.loads((folder / "eval.json").read_text())
        per_image.append({k.rsplit("_", 1)[1]: v for k, v in data.items() if k.endswith(".png")})
    wins = sum(per_image[0][i] > per_image[1][i] for i in per_image[0])
    assert wins >= 7, per_image  # the true caption scores higher for (nearly) every image
