"""toy-clip: open_clip config and loading, training pieces against closed forms, the judge.

Tests marked with ``needs_weights`` run on the shipped weights and skip cleanly while they are absent.
"""

import math

import open_clip
import pytest
import torch
import torch.nn.functional as F

from common.images import tensor_to_pil
from common.toy import clip_model, judge, shapes, train_clip

needs_weights = pytest.mark.skipif(
    not (clip_model.DEFAULT_FOLDER / clip_model.WEIGHTS_FILE).is_file(),
    reason=f"toy-clip weights not shipped yet ({clip_model.DEFAULT_FOLDER}); run: {clip_model.TRAIN_COMMAND}")


@pytest.fixture(scope="module")
def random_clip():
    torch.manual_seed(0)
    return clip_model.create_toy_clip().eval()


@pytest.fixture(scope="module")
def saved_folder(random_clip, tmp_path_factory):
    return clip_model.save_toy_clip(random_clip, tmp_path_factory.mktemp("toy-clip"), dtype=torch.float32)


def test_config_matches_spec(random_clip):
    cfg = clip_model.model_config()
    assert cfg == {"embed_dim": 64, "quick_gelu": True,
                   "vision_cfg": {"image_size": 64, "layers": 4, "width": 128, "patch_size": 8, "head_width": 32},
                   "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 4}}
    assert "toy-clip" in open_clip.list_models()
    assert random_clip.token_embedding.weight.shape == (49408, 64) and random_clip.visual.output_dim == 64
    n_params = sum(p.numel() for p in random_clip.parameters())
    assert 2 * n_params < 8.5e6  # fp16 file stays within the toy-clip budget (~8 MB)


def test_save_load_roundtrip_through_open_clip(random_clip, saved_folder):
    tokens = clip_model.get_tokenizer()(["a red circle on a blue background", ""])
    images = clip_model.images_to_clip_input(shapes.sample_batch(3, 0)[0])
    with torch.no_grad():
        ref = random_clip.encode_image(images), random_clip.encode_text(tokens)
        loaded, preprocess, tokenizer = clip_model.load_toy_clip(saved_folder)  # open_clip 'local-dir:' loader
        assert torch.equal(tokenizer(["a red circle"]), clip_model.get_tokenizer()(["a red circle"]))
        by_name, _, _ = open_clip.create_model_and_transforms(
            "toy-clip", pretrained=str(saved_folder / clip_model.WEIGHTS_FILE))
        for model in (loaded, by_name.eval()):
            assert torch.allclose(model.encode_image(images), ref[0], atol=1e-5)
            assert torch.allclose(model.encode_text(tokens), ref[1], atol=1e-5)
    assert tokens[1, 2:].eq(0).all()  # pads with id 0


def test_fp16_save_halves_the_file(random_clip, saved_folder, tmp_path):
    half = clip_model.save_toy_clip(random_clip, tmp_path / "half")
    small, big = (f / clip_model.WEIGHTS_FILE for f in (half, saved_folder))
    assert abs(small.stat().st_size / big.stat().st_size - 0.5) < 0.01


def test_missing_folder_has_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m common.toy train clip"):
        clip_model.load_toy_clip(tmp_path)


def test_tensor_input_equals_open_clip_preprocess(saved_folder):
    _, preprocess, _ = clip_model.load_toy_clip(saved_folder)
    images = shapes.sample_batch(4, 1)[0]
    ours = clip_model.images_to_clip_input(images)
    theirs = torch.stack([preprocess(img) for img in tensor_to_pil(images)])
    assert torch.allclose(ours, theirs, atol=2 / 255 / 0.26)  # 8-bit rounding of the PIL path, over CLIP std
    assert clip_model.images_to_clip_input(F.interpolate(images, size=128)).shape == (4, 3, 64, 64)


def test_trimmed_text_encoder_is_exact(random_clip):
    tokens = clip_model.get_tokenizer()(shapes.all_captions()[:20] + ["", "a"])
    with torch.no_grad():
        full = random_clip.encode_text(tokens, normalize=True)
        trimmed = clip_model.encode_text_trimmed(random_clip, tokens)
    assert torch.allclose(full, trimmed, atol=1e-5)


def test_caption_labels_match_caption_index():
    params = shapes.sample_params(300, 4)
    labels = train_clip.caption_labels(params)
    for spec, label in zip(shapes.params_to_specs(params), labels.tolist()):
        assert label == shapes.caption_index(spec.color, spec.shape, spec.background)
    table = judge.caption_table()[labels]
    assert torch.equal(table, torch.stack([params["color"], params["shape"], params["background"]], dim=1))


def test_contrastive_loss_reduces_to_clip_with_unique_captions():
    torch.manual_seed(0)
    img, txt = F.normalize(torch.randn(6, 8), dim=1), F.normalize(torch.randn(6, 8), dim=1)
    scale = torch.tensor(math.log(10.0))
    logits = 10.0 * img @ txt.T
    clip = (F.cross_entropy(logits, torch.arange(6)) + F.cross_entropy(logits.T, torch.arange(6))) / 2
    assert torch.allclose(train_clip.contrastive_loss(img, txt, torch.arange(6), scale), clip, atol=1e-6)


def test_contrastive_loss_with_duplicate_captions_by_hand():
    torch.manual_seed(1)
    img, txt = F.normalize(torch.randn(5, 8), dim=1), F.normalize(torch.randn(4, 8), dim=1)
    labels = torch.tensor([2, 0, 2, 2, 0])  # captions 1 and 3 absent from the batch
    logits = 3.0 * img @ txt.T
    i2t = sum(-torch.log_softmax(logits[i], 0)[labels[i]] for i in range(5)) / 5
    t2i = 0.0
    for k in (0, 2):
        members = (labels == k).nonzero().flatten()
        t2i += -torch.log_softmax(logits[:, k], 0)[members].mean() / 2
    expected = (i2t + t2i) / 2
    got = train_clip.contrastive_loss(img, txt, labels, torch.tensor(math.log(3.0)))
    assert torch.allclose(got, expected, atol=1e-6)


def test_gaussian_blur_matches_torchvision():
    torchvision_f = pytest.importorskip("torchvision.transforms.functional")
    images = shapes.sample_batch(3, 2)[0]
    sigma = torch.tensor([0.0, 0.7, 1.2])
    out = train_clip.gaussian_blur(images, sigma)
    assert torch.allclose(out[0], images[0], atol=1e-6)
    for i in (1, 2):
        ref = torchvision_f.gaussian_blur(images[i:i + 1], kernel_size=7, sigma=float(sigma[i]))
        assert torch.allclose(out[i:i + 1], ref, atol=1e-5)
    aug = train_clip.augment(images, torch.Generator().manual_seed(0))
    assert aug.shape == images.shape and aug.min() >= -1 and aug.max() <= 1


def test_lr_schedule():
    lrs = [train_clip.lr_at(s, 100, 10, 1e-3) for s in range(100)]
    assert lrs[9] == pytest.approx(1e-3) and lrs[0] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] < 1e-5


def test_weight_decay_groups_go_by_shape(random_clip):
    """open_clip's rule: decay exactly the >= 2-d parameters; biases, LayerNorm gains and logit_scale get none."""
    decay, no_decay = train_clip.param_groups(random_clip, 0.2)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.2, 0.0)
    named = dict(random_clip.named_parameters())
    exempt = {n for n, p in named.items() if any(p is q for q in no_decay["params"])}
    assert {"logit_scale", "ln_final.weight", "ln_final.bias"} <= exempt
    assert exempt == {n for n, p in named.items() if p.ndim < 2} and len(decay["params"]) + len(exempt) == len(named)
    kiln = torch.nn.Sequential()  # a matrix whose name holds "ln" and "bias" is still decayed
    kiln.add_module("kiln_bias", torch.nn.Linear(3, 2))
    shapes_of = [[tuple(p.shape) for p in group["params"]] for group in train_clip.param_groups(kiln, 0.1)]
    assert shapes_of == [[(2, 3)], [(2,)]]


def test_training_smoke_writes_loadable_folder(tmp_path):
    metrics = train_clip.train(tmp_path / "clip", device="cpu", steps=2, seed=0, batch_size=8, eval_images=8)
    assert math.isfinite(metrics["final_loss"]) and metrics["weights_dtype"] in ("torch.float16", "torch.float32")
    for row in metrics["accuracy"].values():
        assert set(row) == {"color", "shape", "background", "all"}
    model, _, _ = clip_model.load_toy_clip(tmp_path / "clip")
    assert (tmp_path / "clip" / "train_config.json").is_file()
    with pytest.raises(ValueError, match="unknown toy-clip training options"):
        train_clip.train(tmp_path / "x", device="cpu", steps=1, bacth_size=8)


def test_judge_api_on_random_weights(saved_folder):
    specs = shapes.sample_specs(6, 9)
    images = shapes.render(specs)
    names = judge.classify(images, folder=saved_folder)
    assert set(names) == {"color", "shape", "background"} and all(len(v) == 6 for v in names.values())
    assert all(c != b for c, b in zip(names["color"], names["background"]))
    ok = judge.fully_correct(images, specs, folder=saved_folder)
    assert ok.dtype == torch.bool and ok.shape == (6,)
    expected = [(names["color"][i], names["shape"][i], names["background"][i]) == (s.color, s.shape, s.background)
                for i, s in enumerate(specs)]
    assert ok.tolist() == expected
    # captions and PIL images are accepted too, with the same answers
    captions = [shapes.caption(s) for s in specs]
    assert judge.fully_correct(tensor_to_pil(images), captions, folder=saved_folder).tolist() == expected
    with pytest.raises(ValueError):
        judge.fully_correct(images, specs[:2], folder=saved_folder)


@needs_weights
def test_shipped_toy_clip_zero_shot_accuracy():
    model, _, tokenizer = clip_model.load_toy_clip()
    acc = train_clip.evaluate(model, tokenizer, torch.device("cpu"), n=200)
    assert min(acc["color"], acc["shape"], acc["background"]) >= 0.97, acc


@needs_weights
def test_shipped_judge_accepts_right_and_rejects_wrong_captions():
    specs = shapes.sample_specs(48, shapes.split_seed("test", 1))
    images = shapes.render(specs)
    assert judge.fully_correct(images, specs).float().mean() >= 0.95
    wrong = [shapes.ShapeSpec(s.color, shapes.SHAPES[(shapes.SHAPES.index(s.shape) + 1) % 3], s.background,
                              s.center, s.size) for s in specs]
    assert judge.fully_correct(images, wrong).float().mean() <= 0.05
    blurred = train_clip.gaussian_blur(images, torch.full((48,), 0.8))
    assert judge.fully_correct(blurred, specs).float().mean() >= 0.9
