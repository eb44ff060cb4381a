"""Model registry: one place mapping model names to their sources and loaders.

Every entry point defaults to an embedded toy model (``toy-*``, shipped under ``common/toy/models/<name>/``) and
takes a real model with ``--model <name>``; a local folder in a standard format works too:

- a diffusers folder with ``model_index.json`` (``StableDiffusionPipeline`` -> ``sd``, ``DDPMPipeline`` /
  ``DDIMPipeline`` -> ``ddpm``, any other pipeline with a text-conditioned ``unet/`` and no ``vae/`` -> ``pixel``);
- a bare ``UNet2DModel`` folder (``config.json``) -> ``ddpm``;
- an open_clip folder with ``open_clip_config.json`` + ``open_clip_model.safetensors`` -> ``clip``.

Local folders (toy models and the user's) load only safetensors (``use_safetensors=True``): pickled checkpoints
are refused, and a truncated safetensors file or one whose keys do not match its config is one line naming the
folder (:mod:`common.hub`). Only the registry's own Hub repositories may fall back to ``.bin`` weights when they
ship no safetensors, through torch's weights-only unpickler (``use_safetensors=False``), which runs no code.
Loading a real model without network access raises :class:`ModelLoadError` with one line naming the model and an
offline alternative. ``ModelLoadError`` is both a ``ValueError`` and a :class:`common.cli.UserError`, so a click
command prints ``Error: <line>`` with exit code 2 whether or not it is wrapped in :func:`common.cli.user_errors`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from common import hub
from common.clip_folder import CONFIG_FILE, WEIGHTS_FILE, load_clip_folder
from common.clip_folder import save_clip_folder as save_clip_folder  # re-exported: registry.save_clip_folder
from common.hub import ModelLoadError as ModelLoadError  # re-exported: registry.ModelLoadError

TOY_MODELS_DIR = Path(__file__).resolve().parent / "toy" / "models"
KINDS = ("sd", "clip", "ddpm", "pixel")
_SD_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline")


@dataclass(frozen=True)
class ModelSpec:
    """Where a named model comes from. Exactly one of ``hub_id``, ``open_clip``, ``folder`` is the source."""

    name: str
    kind: str  # "sd" | "clip" | "ddpm" | "pixel"
    description: str
    hub_id: str | None = None  # Hugging Face Hub repository (diffusers format)
    open_clip: tuple[str, str] | None = None  # (architecture, pretrained tag) for open_clip
    folder: Path | None = None  # shipped toy folder or a user's local folder
    stage2_hub_id: str | None = None  # DeepFloyd IF super-resolution stage
    text_from: str | None = None  # registry name whose tokenizer/text encoder this model uses
    toy: bool = False  # an embedded toy-world model (defaults, judges and CLIP follow the toy world)
    fp16_variant: bool = False  # the Hub repository ships ``*.fp16.safetensors`` variants (loaded in fp16)
    train: str | None = None  # ``python -m common.toy train <train>`` rebuilds the shipped weights

    @property
    def is_real(self) -> bool:
        """True when loading needs the Hub (or its local cache)."""
        return self.folder is None

    @property
    def source(self) -> str:
        """Human-readable source, used in messages."""
        if self.hub_id:
            return self.hub_id
        if self.open_clip:
            return f"open_clip {self.open_clip[0]}/{self.open_clip[1]}"
        return str(self.folder)


def _toy(name: str, kind: str, train: str, description: str, **kwargs: Any) -> ModelSpec:
    return ModelSpec(name, kind, description, folder=TOY_MODELS_DIR / name, toy=True, train=train, **kwargs)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("sd-2.1-base", "sd", "Stable Diffusion 2.1 base, 512 px, epsilon prediction (assignments' default)",
                  hub_id="stabilityai/stable-diffusion-2-1-base"),
        ModelSpec("sd-2-base", "sd", "Stable Diffusion 2 base, 512 px, epsilon prediction",
                  hub_id="stabilityai/stable-diffusion-2-base"),
        ModelSpec("sd-1.5", "sd", "Stable Diffusion 1.5, 512 px",
                  hub_id="stable-diffusion-v1-5/stable-diffusion-v1-5"),
        ModelSpec("clip-vit-b-32", "clip", "OpenAI CLIP ViT-B/32 (QuickGELU), the assignments' eval.py model",
                  open_clip=("ViT-B-32", "openai")),
        ModelSpec("ddpm-celebahq-256", "ddpm", "DDPM on CelebA-HQ 256 (Ho et al.)", hub_id="google/ddpm-celebahq-256"),
        ModelSpec("ddpm-ema-celebahq-256", "ddpm", "DDPM on CelebA-HQ 256, EMA weights",
                  hub_id="google/ddpm-ema-celebahq-256"),
        ModelSpec("deepfloyd-if", "pixel", "DeepFloyd IF stage I (64 px, T5-XXL text) + stage II upscaler",
                  hub_id="DeepFloyd/IF-I-XL-v1.0", stage2_hub_id="DeepFloyd/IF-II-L-v1.0", fp16_variant=True),
        _toy("toy-sd", "sd", "sd", "embedded latent text-to-image model on the shapes domain (64 px)"),
        _toy("toy-clip", "clip", "clip", "embedded CLIP trained on the shapes domain (64 px)"),
        _toy("toy-faces", "ddpm", "faces", "embedded unconditional pixel DDPM on procedural faces"),
        _toy("toy-pixel", "pixel", "pixel", "embedded pixel-space text-to-image model (64 px), text encoder from "
             "toy-sd", text_from="toy-sd"),
    )
}


def known_names(kind: str | None = None) -> list[str]:
    """Registry names, optionally only those of one kind."""
    return [name for name, spec in MODELS.items() if kind is None or spec.kind == kind]


# ---------------------------------------------------------------------------------------------------------------
# Resolving names and folders
# ---------------------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot read {path}: {err}") from err


def detect_folder_kind(folder: str | os.PathLike) -> str:
    """Kind of a local model folder from its format files (see the module docstring)."""
    folder = Path(folder)
    if (folder / "open_clip_config.json").is_file():
        return "clip"
    if (folder / "model_index.json").is_file():
        cls = _read_json(folder / "model_index.json").get("_class_name", "")
        if cls in _SD_PIPELINES or (folder / "vae").is_dir():
            return "sd"
        if cls in ("DDPMPipeline", "DDIMPipeline"):
            return "ddpm"
        unet_cfg = folder / "unet" / "config.json"
        if unet_cfg.is_file() and _read_json(unet_cfg).get("cross_attention_dim"):
            return "pixel"
        return "ddpm"
    for config in (folder / "config.json", folder / "unet" / "config.json"):
        if config.is_file() and _read_json(config).get("_class_name") == "UNet2DModel":
            return "ddpm"
    raise ModelLoadError(f"cannot tell the model format of folder {folder}: expected model_index.json "
                         "(diffusers), config.json of a UNet2DModel, or open_clip_config.json (open_clip)")


def resolve(name: str | os.PathLike, kind: str | None = None) -> ModelSpec:
    """Registry name or local folder -> :class:`ModelSpec`; ``kind`` checks that it is the expected kind."""
    key = str(name)
    if key in MODELS:
        spec = MODELS[key]
    elif Path(key).expanduser().is_dir():
        folder = Path(key).expanduser().resolve()
        spec = ModelSpec(key, detect_folder_kind(folder), f"local folder {folder}", folder=folder)
    else:
        names = ", ".join(known_names(kind))
        what = "folder not found" if ("/" in key or os.sep in key or key.startswith(".")) else "unknown model"
        raise ModelLoadError(f"{what} {key!r}; known {kind + ' ' if kind else ''}models: {names} "
                             "(or a local model folder)")
    if kind is not None and spec.kind != kind:
        raise ModelLoadError(f"model {key!r} is a {spec.kind} model, expected a {kind} model; "
                             f"known {kind} models: {', '.join(known_names(kind))}")
    return spec


def _missing_toy_message(spec: ModelSpec) -> str:
    hint = f"; train it with `python -m common.toy train {spec.train} --out common/toy/models/{spec.name} --force`" \
        if spec.train else ""
    return f"weights of {spec.name!r} not found in {spec.folder}{hint}"


def _check_folder(spec: ModelSpec) -> Path:
    assert spec.folder is not None
    try:
        if spec.folder.is_dir() and detect_folder_kind(spec.folder) == spec.kind:
            return spec.folder
    except ModelLoadError:
        pass
    raise ModelLoadError(_missing_toy_message(spec))


# ---------------------------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------------------------


def load_local_weights(from_pretrained: Any, folder: str | os.PathLike, **kwargs: Any) -> Any:
    """The checked local ``from_pretrained`` (:func:`common.hub.load_local`) for any diffusers/transformers folder,
    e.g. ``load_local_weights(AutoencoderKL.from_pretrained, out / "vae", dtype=torch.float32)``."""
    folder = Path(folder)
    return hub.load_local(ModelSpec(str(folder), "local", f"local folder {folder}", folder=folder), from_pretrained,
                          folder, **kwargs)


def load_sd(name: str | os.PathLike = "toy-sd", device: torch.device | str = "cpu",
            dtype: torch.dtype = torch.float32) -> Any:
    """Load a Stable Diffusion pipeline (``diffusers.StableDiffusionPipeline``) by name or folder."""
    from diffusers import StableDiffusionPipeline

    spec = resolve(name, "sd")
    if spec.is_real:
        pipe = hub.from_hub(spec, StableDiffusionPipeline.from_pretrained, spec.hub_id, **hub.dtype_kw(dtype),
                            use_safetensors=True)
    else:
        pipe = hub.load_local(spec, StableDiffusionPipeline.from_pretrained, _check_folder(spec),
                              **hub.dtype_kw(dtype))
    return pipe.to(device)


class ClipBundle(NamedTuple):
    """An open_clip model with its eval preprocessing (PIL -> tensor) and tokenizer (texts -> ids)."""

    model: torch.nn.Module
    preprocess: Any
    tokenizer: Any
    name: str


def _load_clip_folder(spec: ModelSpec, folder: Path, device: torch.device | str) -> ClipBundle:
    if not (folder / WEIGHTS_FILE).is_file():
        raise ModelLoadError(f"{folder} has no {WEIGHTS_FILE} (only safetensors weights are loaded)")
    hub.check_weight_files(folder)
    if "model_cfg" not in _read_json(folder / CONFIG_FILE):
        raise ModelLoadError(f"{folder / CONFIG_FILE} has no 'model_cfg' (expected open_clip's Hub "
                             "format {'model_cfg': ..., 'preprocess_cfg': ...}, as written by save_clip_folder)")
    model, preprocess, tokenizer = hub.from_source(spec, load_clip_folder, folder, device=device)
    return ClipBundle(model, preprocess, tokenizer, spec.name)


def _load_clip_hub(spec: ModelSpec, device: torch.device | str) -> ClipBundle:
    """open_clip architecture + pretrained tag, fetched as safetensors from the tag's Hub repository.

    ``create_model_and_transforms('ViT-B-32', pretrained='openai')`` alone builds the GELU variant and only warns
    that OpenAI's weights were trained with QuickGELU; we force QuickGELU (as OpenAI's ``clip.load`` does, which
    the assignments' eval.py uses) and take mean/std/interpolation/resize mode from the tag's config.
    """
    import huggingface_hub
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    arch, tag = spec.open_clip  # type: ignore[misc]
    cfg = get_pretrained_cfg(arch, tag)
    if not cfg or not cfg.get("hf_hub"):
        raise ModelLoadError(f"open_clip has no Hub weights for {arch}/{tag}")
    repo = cfg["hf_hub"].rstrip("/").split("/")
    repo_id = "/".join(repo[:2])
    weights = hub.from_hub(spec, huggingface_hub.hf_hub_download, repo_id, filename="open_clip_model.safetensors")
    model, _, preprocess = hub.from_source(
        spec, open_clip.create_model_and_transforms, arch, pretrained=weights, device=device,
        force_quick_gelu=bool(cfg.get("quick_gelu")), image_mean=cfg.get("mean"), image_std=cfg.get("std"),
        image_interpolation=cfg.get("interpolation"), image_resize_mode=cfg.get("resize_mode"))
    return ClipBundle(model.eval(), preprocess, open_clip.get_tokenizer(arch), spec.name)


def load_clip(name: str | os.PathLike = "clip-vit-b-32", device: torch.device | str = "cpu") -> ClipBundle:
    """Load a CLIP model as a :class:`ClipBundle` (fp32, eval mode) by registry name or open_clip folder."""
    spec = resolve(name, "clip")
    if spec.is_real:
        return _load_clip_hub(spec, device)
    return _load_clip_folder(spec, _check_folder(spec), device)  # toy-clip too: the same open_clip folder format


def _ddpm_layout(folder: Path) -> tuple[Path, Path]:
    """(unet folder, scheduler config file) for a pipeline folder with ``unet/`` or a root-level UNet folder."""
    unet = folder / "unet" if (folder / "unet" / "config.json").is_file() else folder
    for sched in (folder / "scheduler" / "scheduler_config.json", folder / "scheduler_config.json"):
        if sched.is_file():
            return unet, sched
    raise ModelLoadError(f"{folder} has no scheduler/scheduler_config.json or scheduler_config.json")


def load_ddpm(name: str | os.PathLike = "toy-faces", device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32) -> tuple[Any, dict[str, Any]]:
    """Load an unconditional pixel DDPM: ``(UNet2DModel, scheduler config dict)``.

    Hub repositories ``google/ddpm-*`` keep the UNet and ``scheduler_config.json`` at the repository root.
    """
    from diffusers import DDPMScheduler, UNet2DModel

    spec = resolve(name, "ddpm")
    if spec.is_real:
        unet = hub.from_hub(spec, UNet2DModel.from_pretrained, spec.hub_id, **hub.dtype_kw(dtype),
                            use_safetensors=True)
        config = hub.from_hub(spec, DDPMScheduler.load_config, spec.hub_id)
    else:
        unet_dir, sched_file = _ddpm_layout(_check_folder(spec))
        unet = hub.load_local(spec, UNet2DModel.from_pretrained, unet_dir, **hub.dtype_kw(dtype))
        config = _read_json(sched_file)
    return unet.to(device).eval(), dict(config)


class PixelModel(NamedTuple):
    """A text-conditioned pixel-space diffusion model (toy-pixel or DeepFloyd IF stage I)."""

    unet: torch.nn.Module
    tokenizer: Any
    text_encoder: torch.nn.Module
    scheduler: Any


def _load_scheduler(spec: ModelSpec, source: str) -> Any:
    import diffusers

    config = hub.from_hub(spec, diffusers.DDPMScheduler.load_config, source, subfolder="scheduler")
    cls = getattr(diffusers, str(config.get("_class_name", "DDPMScheduler")), None)
    if cls is None or not hasattr(cls, "from_config"):
        raise ModelLoadError(f"unknown scheduler class {config.get('_class_name')!r} in {spec.source}")
    return cls.from_config(config)


def load_pixel(name: str | os.PathLike = "toy-pixel", device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> PixelModel:
    """Load ``(unet, tokenizer, text_encoder, scheduler)`` of a pixel-space text-to-image model.

    toy-pixel takes its tokenizer and text encoder from toy-sd (to keep the shipped folder small); DeepFloyd IF
    uses its T5 tokenizer and encoder from the stage I repository.
    """
    from diffusers import UNet2DConditionModel

    spec = resolve(name, "pixel")
    source = spec.hub_id if spec.is_real else str(_check_folder(spec))
    variant = _fp16_variant(spec, dtype)
    unet = _load_part(spec, UNet2DConditionModel.from_pretrained, source, "unet", dtype, variant)
    scheduler = _load_scheduler(spec, source)
    if spec.text_from is not None:
        text_spec = resolve(spec.text_from)
        text_source = str(_check_folder(text_spec))
    else:
        text_spec, text_source = spec, source
    tokenizer, text_encoder = _load_text(text_spec, text_source, dtype, variant)
    return PixelModel(unet.to(device).eval(), tokenizer, text_encoder.to(device).eval(), scheduler)


def _fp16_variant(spec: ModelSpec, dtype: torch.dtype) -> dict[str, str]:
    """``*.fp16.safetensors`` variants (DeepFloyd IF) in fp16: half the (T5-XXL) download."""
    return {"variant": "fp16"} if spec.fp16_variant and dtype == torch.float16 else {}


def _load_part(spec: ModelSpec, from_pretrained: Any, source: str, part: str, dtype: torch.dtype,
               variant: dict[str, str], library: str = "diffusers") -> Any:
    """One weighted component (``unet``, ``text_encoder``) of a Hub repository or a checked local folder."""
    if spec.is_real:
        return hub.from_hub(spec, from_pretrained, source, subfolder=part, **hub.dtype_kw(dtype, library),
                            use_safetensors=True, **variant)
    return hub.load_local(spec, from_pretrained, Path(source) / part, **hub.dtype_kw(dtype, library))


def _load_text(spec: ModelSpec, source: str, dtype: torch.dtype,
               variant: dict[str, str]) -> tuple[Any, torch.nn.Module]:
    """Tokenizer and text encoder from a diffusers folder; the classes are named in its model_index.json."""
    import transformers
    from diffusers import DiffusionPipeline

    index = hub.from_hub(spec, DiffusionPipeline.load_config, source)
    classes = []
    for part in ("tokenizer", "text_encoder"):
        entry = index.get(part) or [None, None]
        cls = getattr(transformers, str(entry[1]), None)
        if cls is None:
            raise ModelLoadError(f"{spec.source} has no usable {part} (model_index.json says {entry})")
        classes.append(cls)
    tokenizer_cls, encoder_cls = classes
    tokenizer = hub.from_hub(spec, tokenizer_cls.from_pretrained, source, subfolder="tokenizer")  # text files only
    text_encoder = _load_part(spec, encoder_cls.from_pretrained, source, "text_encoder", dtype, variant,
                              "transformers")
    return tokenizer, text_encoder


def load_pixel_upscaler(name: str = "deepfloyd-if", device: torch.device | str = "cpu",
                        dtype: torch.dtype = torch.float16) -> Any:
    """DeepFloyd IF stage II (``IFSuperResolutionPipeline``, 64 -> 256 px) without its own T5 encoder.

    Pass stage I's prompt embeddings to it (``prompt_embeds=``), as in the diffusers IF docs.
    """
    from diffusers import IFSuperResolutionPipeline

    spec = resolve(name, "pixel")
    if spec.stage2_hub_id is None:
        raise ModelLoadError(f"model {spec.name!r} has no super-resolution stage")
    pipe = hub.from_hub(spec, IFSuperResolutionPipeline.from_pretrained, spec.stage2_hub_id, text_encoder=None,
                        **hub.dtype_kw(dtype), use_safetensors=True, **_fp16_variant(spec, dtype))
    return pipe.to(device)
