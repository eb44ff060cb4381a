"""toy-sd: SD folder format, tokenizer and text-encoder conversion, loading, sampling, and (with weights) quality."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from diffusers import StableDiffusionPipeline

from common.hub import dtype_kw
from common.toy import sd_model, shapes
from common.toy.clip_model import create_toy_clip, get_tokenizer, save_toy_clip

PROMPTS = ["a red circle on a blue background", "", "A  Purple TRIANGLE on a white background.",
           "hello world, it's x123 e", "a " + "very " * 80 + "long prompt"]
HAVE_WEIGHTS = (sd_model.DEFAULT_FOLDER / "model_index.json").is_file()
needs_weights = pytest.mark.skipif(not HAVE_WEIGHTS, reason="toy-sd weights not trained in this checkout")


@pytest.fixture(scope="module")
def clip_model():
    torch.manual_seed(0)
    model = create_toy_clip().eval()
    with torch.no_grad():  # random init leaves tiny positional embeddings; make every input matter
        model.positional_embedding.normal_(0, 0.5)
    return model


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return sd_model.load_tokenizer(sd_model.write_tokenizer(tmp_path_factory.mktemp("tok")))


@pytest.fixture(scope="module")
def random_folder(tmp_path_factory, clip_model):
    pipe = sd_model.random_pipeline(seed=1, clip_model=clip_model)
    folder = sd_model.save_sd_folder(pipe, tmp_path_factory.mktemp("toy-sd-random"))
    return pipe, folder


def test_tokenizer_ids_equal_open_clip(tokenizer):
    expected = get_tokenizer()(PROMPTS)
    got = sd_model.tokenize(tokenizer, PROMPTS)
    assert got.shape == (len(PROMPTS), 77)
    assert torch.equal(got, expected)
    assert tokenizer.pad_token_id == 0 and tokenizer.bos_token_id == 49406 and tokenizer.eos_token_id == 49407


def test_text_encoder_matches_open_clip_tower(clip_model):
    text_encoder = sd_model.convert_text_tower(clip_model)
    tokens = get_tokenizer()(PROMPTS)
    with torch.no_grad():
        out = text_encoder(tokens)
        # final hidden states (ln_final output) for every token, before pooling/projection
        expected = sd_model.open_clip_hidden_states(clip_model, tokens)
        torch.testing.assert_close(out.last_hidden_state, expected, atol=1e-5, rtol=1e-5)
        # pooled EOT feature through open_clip's projection = open_clip's own encode_text
        torch.testing.assert_close(out.pooler_output @ clip_model.text_projection, clip_model.encode_text(tokens),
                                   atol=1e-5, rtol=1e-5)
    assert out.last_hidden_state[0].std() > 0.1  # a non-trivial comparison


def test_sd_folder_round_trip(random_folder):
    pipe, folder = random_folder
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and index["safety_checker"] == [None, None]
    assert index["requires_safety_checker"] is False
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (folder / "tokenizer" / name).is_file()
    loaded = StableDiffusionPipeline.from_pretrained(str(folder), **dtype_kw(torch.float32))
    assert isinstance(loaded.scheduler, type(pipe.scheduler))
    assert loaded.scheduler.config.beta_schedule == "scaled_linear" and loaded.scheduler.config.steps_offset == 1
    torch.testing.assert_close(loaded.scheduler.alphas_cumprod, pipe.scheduler.alphas_cumprod)
    for name in ("unet", "vae", "text_encoder"):
        ref = {k: v.half().float() for k, v in getattr(pipe, name).state_dict().items()}
        got = getattr(loaded, name).state_dict()
        assert got.keys() == ref.keys()
        for key in ref:
            assert got[key].dtype == torch.float32
            torch.testing.assert_close(got[key], ref[key], atol=0, rtol=0, msg=f"{name}.{key}")
    # same weights (fp16-rounded) -> same 2-step sample through the whole pipeline
    for name in ("unet", "vae", "text_encoder"):
        getattr(pipe, name).load_state_dict(getattr(loaded, name).state_dict())
    kwargs = {"num_inference_steps": 2, "guidance_scale": 7.5, "output_type": "pt"}
    a = pipe(PROMPTS[0], generator=torch.Generator().manual_seed(3), **kwargs).images
    b = loaded(PROMPTS[0], generator=torch.Generator().manual_seed(3), **kwargs).images
    assert a.shape == (1, 3, 64, 64)
    torch.testing.assert_close(a, b)


def test_registry_loads_random_folder(random_folder):
    from common import registry

    _, folder = random_folder
    pipe = registry.load_sd(str(folder))
    assert isinstance(pipe, StableDiffusionPipeline)
    assert pipe.unet.config.sample_size == 16 and pipe.vae.config.latent_channels == 4
    assert pipe.text_encoder.config.hidden_size == pipe.unet.config.cross_attention_dim == 64


def test_sample_cli_writes_image_from_folder(random_folder, tmp_path):
    from common.images import load_image
    from common.toy.__main__ import main

    _, folder = random_folder
    out = tmp_path / "img.png"
    result = CliRunner().invoke(main, ["sample", "--prompt", PROMPTS[0], "--out", str(out), "--steps", "2",
                                       "--model", str(folder), "--device", "cpu"])
    assert result.exit_code == 0 and not result.exception, result.output
    assert load_image(out).shape == (3, 64, 64)
    config = json.loads((tmp_path / "img.config.json").read_text())  # the run's configuration next to the image
    assert config["prompt"] == PROMPTS[0] and config["steps"] == 2 and config["model"] == str(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.config.json", "img.png"]


def test_caption_lut_matches_captions():
    from common.toy.train_sd import caption_lut

    _, params = shapes.sample_batch(64, 0)
    idx = caption_lut("cpu")[params["color"], params["shape"], params["background"]]
    captions = shapes.all_captions()
    specs = shapes.params_to_specs(params)
    assert [captions[i] for i in idx.tolist()] == [shapes.caption(s) for s in specs]


def test_training_smoke_writes_loadable_folder(tmp_path, monkeypatch):
    """A few steps of both stages on CPU (narrowed networks) produce a complete, loadable SD folder."""
    from common.toy.train_sd import train

    for config, channels in ((sd_model.VAE_CONFIG, [8, 16, 16]), (sd_model.UNET_CONFIG, [16, 32])):
        monkeypatch.setitem(config, "block_out_channels", channels)
        monkeypatch.setitem(config, "norm_num_groups", 8)
    torch.manual_seed(0)
    clip_folder = save_toy_clip(create_toy_clip(), tmp_path / "clip")
    out = tmp_path / "toy-sd"
    overrides = {"vae_batch_size": 2, "unet_batch_size": 4, "unet_pool_size": 8, "vae_warmup": 1,
                 "unet_warmup": 1, "vae_scale_images": 4}
    metrics = train(out, "cpu", steps=2, seed=0, stage="all", clip=clip_folder, evaluate=False, overrides=overrides)
    assert metrics["vae_steps"] == 2 and metrics["unet_steps"] == 2
    assert metrics["scaling_factor"] > 0
    assert json.loads((out / "training_metrics.json").read_text())["unet_steps"] == 2
    pipe = sd_model.load_sd_pipeline(out)
    assert pipe.vae.config.scaling_factor == metrics["scaling_factor"]


def test_sample_cli_rejects_bad_output_name(tmp_path):
    from common.toy.__main__ import main

    result = CliRunner().invoke(main, ["sample", "--prompt", "a red circle on a blue background",
                                       "--out", str(tmp_path / "x.txt"), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert "Error:" in result.output and not (tmp_path / "x.txt").exists()


@needs_weights
def test_shipped_pipeline_samples_on_cpu(tmp_path):
    from common.toy.__main__ import main

    out = tmp_path / "red.png"
    result = CliRunner().invoke(main, ["sample", "--prompt", "a red circle on a blue background", "--out", str(out),
                                       "--steps", "10", "--device", "cpu"])
    assert result.exit_code == 0 and not result.exception, result.output
    from common.images import load_image

    image = load_image(out)
    assert image.shape == (3, 64, 64)
    assert size_mb(sd_model.DEFAULT_FOLDER) <= 16.0


def size_mb(folder) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


@needs_weights
@pytest.mark.slow
def test_shipped_quality_small_sample():
    """Bars on a small sample (CPU budget): VAE PSNR >= 28 dB on 64 test images; >= 7 of 8 samples (25 DDIM steps,
    guidance 7.5) judged fully correct. ``python -m common.toy.measure_sd`` measures the full-size bars."""
    from common.toy.measure_sd import caption_correctness, vae_psnr

    pipe = sd_model.load_sd_pipeline()
    assert vae_psnr(pipe.vae, "cpu", n=64, batch_size=64) >= 28.0
    frac, images, _ = caption_correctness(pipe, None, n=8, device="cpu", num_inference_steps=25, guidance_scale=7.5)
    assert images.shape == (8, 3, 64, 64)
    assert frac >= 7 / 8
