"""Model registry: names, folder detection, save -> load round trips, one-line offline errors."""

from __future__ import annotations

import json
import warnings

import diffusers.configuration_utils  # noqa: F401  (binds the real hf_hub_download before a test patches it)
import open_clip
import pytest
import torch

from common import hub, registry
from common.registry import ModelLoadError, load_clip, load_ddpm, load_sd, resolve, save_clip_folder

TINY_CLIP_CFG = {
    "embed_dim": 16,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


def test_known_names_and_sources():
    assert resolve("sd-2.1-base").hub_id == "stabilityai/stable-diffusion-2-1-base"
    assert resolve("sd-2-base").hub_id == "stabilityai/stable-diffusion-2-base"
    assert resolve("sd-1.5").hub_id == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert resolve("clip-vit-b-32").open_clip == ("ViT-B-32", "openai")
    assert resolve("deepfloyd-if").stage2_hub_id == "DeepFloyd/IF-II-L-v1.0"
    assert resolve("toy-pixel").text_from == "toy-sd"
    for name in ("toy-sd", "toy-clip", "toy-faces", "toy-pixel"):
        assert resolve(name).folder == registry.TOY_MODELS_DIR / name and not resolve(name).is_real
    assert {s.kind for s in registry.MODELS.values()} == set(registry.KINDS)


def test_behaviour_follows_spec_fields_not_names(tmp_path, monkeypatch):
    """fp16 variants and retraining hints are explicit ModelSpec fields (issue #20: no keying on stage2_hub_id)."""
    assert [n for n, s in registry.MODELS.items() if s.fp16_variant] == ["deepfloyd-if"]
    assert registry._fp16_variant(resolve("deepfloyd-if"), torch.float16) == {"variant": "fp16"}
    assert registry._fp16_variant(resolve("deepfloyd-if"), torch.float32) == {}
    upscaler_only = registry.ModelSpec("x", "pixel", "t", hub_id="a/b", stage2_hub_id="a/c")
    assert registry._fp16_variant(upscaler_only, torch.float16) == {}
    assert {n: s.train for n, s in registry.MODELS.items() if s.toy} == {
        "toy-sd": "sd", "toy-clip": "clip", "toy-faces": "faces", "toy-pixel": "pixel"}
    monkeypatch.setitem(registry.MODELS, "toy-new", registry.ModelSpec("toy-new", "clip", "t", folder=tmp_path / "no",
                                                                       toy=True, train="clip"))
    with pytest.raises(ModelLoadError, match=r"train it with `python -m common.toy train clip --out "
                                              r"common/toy/models/toy-new --force`"):
        load_clip("toy-new")
    sdxl = tmp_path / "sdxl"
    sdxl.mkdir()
    (sdxl / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    assert registry.detect_folder_kind(sdxl) != "sd"  # not by its class name's prefix: no vae/, not an SD 1/2 class
    (sdxl / "vae").mkdir()
    assert registry.detect_folder_kind(sdxl) == "sd"


def test_unknown_name_lists_known_names():
    with pytest.raises(ModelLoadError) as info:
        resolve("sd-9")
    msg = info.value.format_message()
    assert "\n" not in msg and "sd-9" in msg and "sd-2.1-base" in msg and "toy-clip" in msg
    assert isinstance(info.value, ValueError) and info.value.exit_code == 2
    with pytest.raises(ModelLoadError, match="expected a clip model"):
        resolve("sd-2.1-base", "clip")


def test_folder_detection(tmp_path):
    def folder(name, files):
        path = tmp_path / name
        for rel, content in files.items():
            (path / rel).parent.mkdir(parents=True, exist_ok=True)
            (path / rel).write_text(json.dumps(content))
        return str(path)

    assert resolve(folder("sd", {"model_index.json": {"_class_name": "StableDiffusionPipeline"}})).kind == "sd"
    assert resolve(folder("ddpm", {"model_index.json": {"_class_name": "DDPMPipeline"}})).kind == "ddpm"
    assert resolve(folder("unet", {"config.json": {"_class_name": "UNet2DModel"}})).kind == "ddpm"
    assert resolve(folder("clip", {"open_clip_config.json": {"model_cfg": {}}})).kind == "clip"
    pixel = folder("pix", {"model_index.json": {"_class_name": "IFPipeline"},
                           "unet/config.json": {"cross_attention_dim": 64}})
    assert resolve(pixel, "pixel").kind == "pixel"
    with pytest.raises(ModelLoadError, match="cannot tell the model format"):
        resolve(folder("empty", {"notes.json": {}}))
    with pytest.raises(ModelLoadError, match="folder not found"):
        resolve(str(tmp_path / "missing"))


@pytest.fixture
def tiny_sd(tiny_sd_folder, load_tiny_sd):
    """The shared tiny SD folder (tests/conftest.py) and the pipeline diffusers itself loads from it."""
    return load_tiny_sd(), tiny_sd_folder


def test_sd_pipeline_save_and_load_round_trip(tiny_sd):
    pipe, folder = tiny_sd
    assert not list(folder.rglob("*.bin"))
    loaded = load_sd(str(folder), "cpu", torch.float32)
    assert type(loaded).__name__ == "StableDiffusionPipeline"
    for a, b in ((pipe.unet, loaded.unet), (pipe.vae, loaded.vae), (pipe.text_encoder, loaded.text_encoder)):
        sd_a, sd_b = a.state_dict(), b.state_dict()
        assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    kwargs = dict(prompt="a red circle", num_inference_steps=2, height=32, width=32, guidance_scale=3.0,
                  output_type="pt")
    ref = pipe(generator=torch.Generator().manual_seed(1), **kwargs).images
    out = loaded(generator=torch.Generator().manual_seed(1), **kwargs).images
    assert out.shape == (1, 3, 32, 32) and torch.allclose(ref, out, atol=1e-6)


def test_pixel_model_takes_text_encoder_from_toy_sd_and_ddpm_layouts(tiny_sd, tmp_path, monkeypatch):
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel, UNet2DModel

    pipe, sd_folder = tiny_sd
    pixel = tmp_path / "pixel"
    UNet2DConditionModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 8),
                         norm_num_groups=4, cross_attention_dim=8, attention_head_dim=2,
                         down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).save_pretrained(pixel / "unet")
    DDIMScheduler(beta_schedule="scaled_linear").save_pretrained(pixel / "scheduler")
    (pixel / "model_index.json").write_text(json.dumps({"_class_name": "ToyPixelPipeline"}))
    monkeypatch.setitem(registry.MODELS, "toy-sd", registry.ModelSpec("toy-sd", "sd", "test", folder=sd_folder))
    monkeypatch.setitem(registry.MODELS, "toy-pixel", registry.ModelSpec("toy-pixel", "pixel", "test", folder=pixel,
                                                                         text_from="toy-sd"))
    model = registry.load_pixel("toy-pixel")
    assert resolve(str(pixel)).kind == "pixel" and isinstance(model.scheduler, DDIMScheduler)
    assert model.unet.config.in_channels == 3 and model.tokenizer("ab").input_ids == pipe.tokenizer("ab").input_ids
    ids = pipe.tokenizer(["a b"], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model.text_encoder(ids)[0], pipe.text_encoder(ids)[0])
    unet = UNet2DModel(sample_size=8, block_out_channels=(8, 8), norm_num_groups=4, layers_per_block=1,
                       down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2)
    for layout in ("root", "pipeline"):  # google/ddpm-* keep the UNet at the root; DDPMPipeline folders in unet/
        folder = tmp_path / layout
        unet.save_pretrained(folder if layout == "root" else folder / "unet")
        DDPMScheduler(beta_end=0.02).save_pretrained(folder if layout == "root" else folder / "scheduler")
        loaded, config = load_ddpm(str(folder))
        assert config["beta_end"] == 0.02 and config["_class_name"] == "DDPMScheduler"
        assert all(torch.equal(a, b) for a, b in zip(unet.state_dict().values(), loaded.state_dict().values()))


def test_open_clip_save_and_load_round_trip(tmp_path):
    open_clip.factory._MODEL_CONFIGS["test-tiny-clip"] = TINY_CLIP_CFG
    try:
        model = open_clip.create_model("test-tiny-clip").eval()
    finally:
        open_clip.factory._MODEL_CONFIGS.pop("test-tiny-clip")
    save_clip_folder(model, TINY_CLIP_CFG, tmp_path / "clip")
    bundle = load_clip(str(tmp_path / "clip"), "cpu")
    assert bundle.name == str(tmp_path / "clip") and not bundle.model.training
    ref, new = model.state_dict(), bundle.model.state_dict()
    assert ref.keys() == new.keys() and all(torch.equal(ref[k], new[k]) for k in ref)
    tokens = bundle.tokenizer(["a red circle on a blue background"])
    assert torch.equal(tokens, open_clip.tokenize(["a red circle on a blue background"]))
    from PIL import Image

    pixels = bundle.preprocess(Image.new("RGB", (48, 40), (200, 30, 30)))
    assert pixels.shape == (3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(bundle.model.encode_text(tokens), model.encode_text(tokens))


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "unreachable"])
def test_real_models_fail_offline_with_one_line(monkeypatch, tmp_path, how):
    import huggingface_hub

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))  # empty cache
    if how == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    else:  # no env var, but the Hub cannot be reached: the cache is used and nothing waits for retries
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
        monkeypatch.setattr(hub, "hub_unreachable", lambda: True)

    def no_download(*args, **kwargs):
        assert kwargs.get("local_files_only") is True
        raise huggingface_hub.errors.LocalEntryNotFoundError("cannot find the requested files in the local cache")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    cases = [(load_sd, "sd-2.1-base", "stabilityai/stable-diffusion-2-1-base", "toy-sd"),
             (load_clip, "clip-vit-b-32", "ViT-B-32", "toy-clip"),
             (load_ddpm, "ddpm-celebahq-256", "google/ddpm-celebahq-256", "toy-faces"),
             (registry.load_pixel, "deepfloyd-if", "DeepFloyd/IF-I-XL-v1.0", "toy-pixel")]
    for load, name, source, alternative in cases:
        with pytest.raises(ModelLoadError) as info, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            load(name)
        assert not [w for w in caught if "local_dir_use_symlinks" in str(w.message)], name  # one line, no warning
        msg = info.value.format_message()
        assert "\n" not in msg and name in msg and source in msg and alternative in msg, msg
        assert "no network access" in msg, msg


@pytest.mark.parametrize("cli", ["ddpm_ddim", "dps"])
def test_offline_refusal_of_a_real_model_is_exactly_one_line(monkeypatch, tmp_path, cli):
    """Issue #20: huggingface_hub's ``local_dir_use_symlinks`` deprecation warning came before the error line."""
    from click.testing import CliRunner

    from ddpm_ddim.main import main as ddpm_main
    from dps.main import main as dps_main

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))  # empty cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    main, args = {"ddpm_ddim": (ddpm_main, ["-n", "DDIM"]), "dps": (dps_main, ["--task", "inpainting"])}[cli]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(main, args + ["--model", "ddpm-celebahq-256", "--save_dir", str(tmp_path / "o")])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output.startswith("Error: could not load 'ddpm-celebahq-256'") and "toy-faces" in result.output
    assert not [str(w.message) for w in caught if "local_dir_use_symlinks" in str(w.message)]


def test_clip_vit_b_32_uses_quick_gelu_safetensors_and_openai_preprocessing(monkeypatch, tmp_path):
    """The real path without a download: the Hub file asked for and the open_clip arguments are checked, then a
    tiny model is built with exactly those arguments (plain 'ViT-B-32' + 'openai' would give GELU, not QuickGELU)."""
    import huggingface_hub
    from torchvision import transforms

    asked, real_create = {}, open_clip.create_model_and_transforms

    def fake_download(repo_id, filename=None, **kwargs):
        asked.update(repo_id=repo_id, filename=filename)
        return str(tmp_path / filename)

    def create(arch, pretrained=None, **kwargs):
        asked.update(arch=arch, pretrained=pretrained)
        open_clip.factory._MODEL_CONFIGS["test-tiny-clip"] = {**TINY_CLIP_CFG, "quick_gelu": False}
        try:
            return real_create("test-tiny-clip", **kwargs)
        finally:
            open_clip.factory._MODEL_CONFIGS.pop("test-tiny-clip")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(hub, "hub_unreachable", lambda: False)
    monkeypatch.setattr(open_clip, "create_model_and_transforms", create)
    bundle = load_clip("clip-vit-b-32")
    assert asked == {"repo_id": "timm/vit_base_patch32_clip_224.openai", "filename": "open_clip_model.safetensors",
                     "arch": "ViT-B-32", "pretrained": str(tmp_path / "open_clip_model.safetensors")}
    assert isinstance(bundle.model.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    steps = {type(t): t for t in bundle.preprocess.transforms}
    assert steps[transforms.Resize].interpolation == transforms.InterpolationMode.BICUBIC
    assert transforms.CenterCrop in steps
    assert tuple(steps[transforms.Normalize].mean) == open_clip.constants.OPENAI_DATASET_MEAN
    assert tuple(steps[transforms.Normalize].std) == open_clip.constants.OPENAI_DATASET_STD
