"""One validated configuration per app: :class:`WideConfig` (handout Task 1) and :class:`AmbiguousConfig` (Tasks 2-3).

``main.py`` builds one from its click options (:func:`build_config`), every check of the options happens in
``__post_init__`` (a one-line ``ValueError``), the generators take it whole, and ``config.json`` records it
(:meth:`SamplingConfig.record`). Model-dependent checks (panorama size vs. the UNet window, stage II) run when the
model is loaded, still before anything is written.

Output folders follow the KAIST skeleton (``BaseModel.initialize``): ``--tag T`` writes to ``<save_top_dir>/T``
and ``--save_dir_now`` adds a time stamp folder ``%m-%d-%H%M%S`` below it, so repeated runs of one tag never
overwrite each other; ``--save_dir DIR`` names the folder directly (plus the time stamp with ``--save_dir_now``).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
from pathlib import Path
from typing import Any

from common.gpu import PRECISION_CHOICES
from synchronization.core import INITS, SYNC_VARIABLES
from synchronization.views import VIEW_NAMES, View, get_view

MAX_GUIDANCE = 1e8  # far above any useful CFG scale (7.5-30) yet finite in fp32 after (eps_c - eps_u) * s
DECODES = ("full", "windows")
TIME_FORMAT = "%m-%d-%H%M%S"  # the skeleton's get_current_time()


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """Options shared by both apps: model, DDIM sampling, synchronization, device (handout defaults per app)."""

    model: str = "toy-sd"
    num_inference_steps: int = 50
    guidance_scale: float = 7.5  # CFG scale s (Ho & Salimans 2022 Eq. 6)
    negative_prompt: str = ""
    seed: int = 1
    sync: str = "x0"  # SyncTweedies case: eps (1), x0 (2), xt (3), none (0)
    canonical_denoising: bool = False  # cases 4-6: denoise the canonical sample
    init: str = "canonical"
    max_batch: int | None = None
    device: str = "auto"
    precision: str = "auto"
    cuda_graphs: bool = True  # replay the UNet's calls as CUDA graphs (common.graphs; CUDA only)
    compile: bool = False  # torch.compile the UNet too (common.compiled; CUDA only)
    progress: bool = True

    def __post_init__(self) -> None:
        _check_int("num_inference_steps", self.num_inference_steps, 1)
        _check_float("guidance_scale", self.guidance_scale, 0.0, MAX_GUIDANCE)
        _check_choice("sync", self.sync, SYNC_VARIABLES)
        _check_choice("init", self.init, INITS)
        _check_choice("precision", self.precision, PRECISION_CHOICES)
        if self.max_batch is not None:
            _check_int("max_batch", self.max_batch, 1)
        if self.canonical_denoising and (self.init != "canonical" or self.sync == "none"):
            raise ValueError("--canonical_denoising needs --init canonical and --sync x0, eps or xt")

    def record(self) -> dict[str, Any]:
        """The config as JSON-ready values (tuples as lists), for ``config.json``."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass(frozen=True)
class WideConfig(SamplingConfig):
    """A wide image: one prompt, a panorama of ``width`` x ``height`` image px covered by UNet-sized windows."""

    prompt: str = ""
    width: int | None = None  # image px [default: 6 windows]
    height: int | None = None  # image px [default: 1 window]
    stride: int | None = None  # latent px [default: window / 8]
    circular: bool = False
    decode: str = "full"
    eval_pos: tuple[int, ...] | None = None  # x offsets (image px) of the evaluation crops

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError("--app wide_image needs one non-empty --prompt")
        for name in ("width", "height", "stride"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1)
        _check_choice("decode", self.decode, DECODES)
        if self.eval_pos is not None:
            object.__setattr__(self, "eval_pos", tuple(self.eval_pos))
            if not self.eval_pos or any(not isinstance(p, int) or p < 0 for p in self.eval_pos):
                raise ValueError(f"--eval_pos needs non-negative integer offsets, got {list(self.eval_pos)}")


@dataclasses.dataclass(frozen=True)
class AmbiguousConfig(SamplingConfig):
    """An ambiguous image: one prompt per view (canonical first), views of one pixel-space image."""

    model: str = "toy-pixel"
    num_inference_steps: int = 30
    guidance_scale: float = 10.0
    prompts: tuple[str, ...] = ()
    views_names: tuple[str, ...] = ("identity", "rotate_cw")
    rotate_angle: float = 90.0  # inner_rotate, degrees clockwise (the handout's Task 3 value)
    stage2: bool | None = None  # IF stage II [default: on when the model has one]
    stage2_noise_level: int = 50

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "prompts", tuple(self.prompts))
        object.__setattr__(self, "views_names", tuple(self.views_names))
        _check_float("rotate_angle", self.rotate_angle, -360.0, 360.0)
        _check_int("stage2_noise_level", self.stage2_noise_level, 0, 999)
        views = self.views()  # unknown names: one line listing the known ones
        if len(self.prompts) != len(views):
            raise ValueError(f"got {len(self.prompts)} prompt(s) for {len(views)} views "
                             f"({' '.join(self.views_names)}); give one --prompts value per view")
        if any(not isinstance(p, str) or not p.strip() for p in self.prompts):
            raise ValueError("--prompts values must be non-empty")

    def views(self) -> list[View]:
        if not self.views_names:
            raise ValueError(f"--views_names needs at least one view ({', '.join(VIEW_NAMES)})")
        return [get_view(name, self.rotate_angle) for name in self.views_names]


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"--{name} must be an integer {bound}, got {value!r}")


def _check_float(name: str, value: Any, low: float, high: float) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not low <= value <= high:
        raise ValueError(f"--{name} must be a finite number in [{low:g}, {high:g}], got {value!r}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"--{name} must be one of {', '.join(choices)}, got {value!r}")


WIDE_ONLY = {"width": None, "height": None, "stride": None, "circular": False, "decode": "full", "eval_pos": None}
AMBIGUOUS_ONLY = {"views_names": (), "stage2": None}
RUN_ONLY = ("app", "save_dir", "save_top_dir", "tag", "save_dir_now", "no_progress")


def build_config(opts: dict[str, Any]) -> WideConfig | AmbiguousConfig:
    """The app's config from ``main``'s click options (``None`` = the app's default); one-line ``ValueError``."""
    app = opts["app"]
    own, other = (WIDE_ONLY, AMBIGUOUS_ONLY) if app == "wide_image" else (AMBIGUOUS_ONLY, WIDE_ONLY)
    given = [k for k, default in other.items() if opts.get(k, default) not in (default, ())]
    if given:
        raise ValueError(f"--{given[0]} is not an option of --app {app}")
    if app == "wide_image" and opts.get("prompts"):
        raise ValueError("--app wide_image takes one --prompt (not --prompts)")
    if app == "ambiguous_image" and opts.get("prompt"):
        raise ValueError("--app ambiguous_image takes --prompts (one per view), not --prompt")
    cls = WideConfig if app == "wide_image" else AmbiguousConfig
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in opts.items() if k in names and v is not None and v != ()}
    values["progress"] = not opts.get("no_progress", False)
    if app == "wide_image":
        values["eval_pos"] = parse_positions(opts.get("eval_pos"))
    return cls(**values)


def parse_positions(text: str | None) -> tuple[int, ...] | None:
    """``"0,128"`` -> (0, 128); None stays None (the default positions)."""
    if text is None:
        return None
    try:
        return tuple(int(p) for p in text.replace(" ", "").split(",") if p)
    except ValueError as err:
        raise ValueError(f"--eval_pos must be comma-separated integers, got {text!r}") from err


def output_dir(app: str, save_dir: str | None = None, tag: str | None = None, save_dir_now: bool = False,
               save_top_dir: str = "outputs", now: _dt.datetime | None = None) -> Path:
    """The run's output folder: ``save_dir``, or ``save_top_dir/tag`` (tag defaults to the app name); with
    ``save_dir_now`` a time stamp folder (``%m-%d-%H%M%S``, as the KAIST skeleton) below it."""
    if save_dir is not None and tag is not None:
        raise ValueError("give --save_dir DIR or --tag NAME (folder SAVE_TOP_DIR/NAME), not both")
    if tag is not None and (not tag.strip() or Path(tag).name != tag or tag in (".", "..")):
        raise ValueError(f"--tag must be a plain folder name (no '/'), got {tag!r}")
    folder = Path(save_dir) if save_dir is not None else Path(save_top_dir) / (tag or app)
    if save_dir_now:
        folder = folder / (now or _dt.datetime.now()).strftime(TIME_FORMAT)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"output folder {folder} exists and is not a folder")
    return folder
