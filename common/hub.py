"""Hugging Face Hub plumbing for the registry: offline detection, error classification, dtype keywords, and the
checks around a local ``from_pretrained`` (pickles refused, corrupt safetensors and key mismatches in one line, the
libraries' log lines held back until the load succeeded)."""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import re
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from common.cli import UserError
from common.files import refuse_pickle


def env_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=1)
def hub_unreachable() -> bool:
    """True when the Hub endpoint cannot be reached (checked once, 3 s at most): loads then use the local cache
    only (``local_files_only=True``) instead of waiting for the Hub client's retries to time out."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=3).close()
        return False
    except OSError:
        return True


_NOISE = re.compile(r"local_dir_use_symlinks")  # huggingface_hub deprecation of an argument diffusers still passes


@contextlib.contextmanager
def held_warnings() -> Iterator[None]:
    """Hold back the warnings of a Hub load: dropped when the load raises (its one-line error says it all),
    re-issued when it succeeds, except huggingface_hub's ``local_dir_use_symlinks`` deprecation notice."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        if not _NOISE.search(str(w.message)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def is_network_error(err: BaseException | None) -> bool:
    """Whether ``err`` or anything in its cause/context chain is a connection or offline-cache error."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        names = {cls.__name__ for cls in type(err).__mro__}
        if isinstance(err, (ConnectionError, TimeoutError, socket.gaierror)) or names & {
                "ConnectError", "ConnectTimeout", "ConnectionError", "OfflineModeIsEnabled", "LocalEntryNotFoundError",
                "URLError"}:
            return True
        err = err.__cause__ or err.__context__
    return False


def dtype_kw(dtype: torch.dtype, library: str = "diffusers") -> dict[str, torch.dtype]:
    """``dtype=`` for newer diffusers/transformers (where ``torch_dtype`` is deprecated), else ``torch_dtype=``."""
    if library == "diffusers":
        from diffusers.utils import deprecation_utils

        new = hasattr(deprecation_utils, "_resolve_dtype")
    else:
        from importlib import metadata

        new = tuple(int(p) for p in metadata.version(library).split(".")[:2]) >= (4, 56)
    return {"dtype" if new else "torch_dtype": dtype}


def hub_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, RuntimeError, ValueError]
    try:
        from huggingface_hub import errors as hub_errors

        errors.append(hub_errors.HfHubHTTPError)
    except ImportError:  # pragma: no cover - huggingface_hub always ships with diffusers
        pass
    return tuple(errors)


# ---------------------------------------------------------------------------------------------------------------
# Local weight files: checked before and after a from_pretrained, so a bad folder is one line, not a traceback
# ---------------------------------------------------------------------------------------------------------------


class ModelLoadError(UserError, ValueError):
    """A model name or folder that cannot be resolved or loaded (one line, exit code 2 in a CLI)."""


_PICKLED_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_LIBRARIES = ("diffusers", "transformers")
SAFETENSORS_HINT = ("re-save it with save_pretrained(..., safe_serialization=True) in an environment you trust, or "
                    "use a Hub repository that ships safetensors")


def check_weight_files(folder: str | os.PathLike, how_to_get_safetensors: str = SAFETENSORS_HINT) -> None:
    """Refuse, before loading, a local model folder whose weights cannot be loaded safely and cleanly.

    Each ``*.safetensors`` file must have a readable header (a truncated or garbage file is one line here instead
    of a Rust ``SafetensorError`` traceback), and a folder whose weights are only pickles (``*.bin``, ``*.pt``, ...)
    is refused with :func:`common.files.refuse_pickle` (loading one can run code).
    """
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for path in files:
        if path.suffix == ".safetensors":
            try:
                with safe_open(str(path), framework="pt"):
                    pass
            except (SafetensorError, OSError, ValueError) as err:
                raise ModelLoadError(f"{path} is not a valid safetensors file ({' '.join(str(err).split())}); "
                                     "it is truncated or corrupt: copy or save it again") from err
    with_safetensors = {p.parent for p in files if p.suffix == ".safetensors"}
    for path in files:
        if path.suffix in _PICKLED_WEIGHTS and path.parent not in with_safetensors:
            refuse_pickle(path, how_to_get_safetensors)
            raise ModelLoadError(f"{path.parent} has weights only in {path.name}, not in safetensors; only "
                                 f"safetensors are loaded from local folders; {how_to_get_safetensors}")


def _safetensors_keys(folder: Path) -> set[str]:
    from safetensors import safe_open

    keys: set[str] = set()
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            keys.update(f.keys())
    return keys


def check_loaded(module: torch.nn.Module, folder: str | os.PathLike) -> None:
    """Raise one line when ``from_pretrained`` left tensors without data: the safetensors keys of ``folder`` do not
    match the model its config describes (diffusers then fails later with "Cannot copy out of meta tensor")."""
    state = module.state_dict()
    missing = sorted(name for name, tensor in state.items() if tensor.is_meta)
    if not missing:
        return
    unexpected = sorted(_safetensors_keys(Path(folder)) - set(state))

    def some(names: list[str]) -> str:
        return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")

    extra = f"; {len(unexpected)} unexpected ({some(unexpected)})" if unexpected else ""
    raise ModelLoadError(f"{folder}: the weights do not match its config.json: {len(missing)} tensor(s) missing "
                         f"({some(missing)}){extra}")


def _library_root_loggers() -> list[logging.Logger]:
    loggers = []
    for name in _LIBRARIES:
        try:
            module = importlib.import_module(f"{name}.utils.logging")
        except ImportError:  # pragma: no cover - both ship with the repo's dependencies
            continue
        module.get_logger(name)  # configures the library's root logger (its stderr handler) now, not mid-load
        loggers.append(logging.getLogger(name))
    return loggers


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def held_output() -> Iterator[None]:
    """:func:`held_warnings` plus the log lines of diffusers and transformers ("Some weights of ... were not
    initialized", "An error occurred while trying to fetch ..."): dropped when the load raises, so the user sees
    our one line only; replayed to the libraries' own handlers when it succeeds."""
    loggers = _library_root_loggers()
    saved = [(lg, lg.handlers, lg.propagate) for lg in loggers]
    collector = _Collector()
    for lg in loggers:
        lg.handlers, lg.propagate = [collector], False
    try:
        with held_warnings():
            yield
    finally:
        for lg, handlers, propagate in saved:
            lg.handlers, lg.propagate = handlers, propagate
    for record in collector.records:  # only reached on success
        for handler in logging.getLogger(record.name.split(".")[0]).handlers:
            if record.levelno >= handler.level:
                handler.handle(record)


def missing_safetensors(err: BaseException | None) -> bool:
    """Whether a load failed because the repository has no safetensors weights (only ``.bin``)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        text = str(err)
        if "safetensors" in text and any(s in text for s in ("no file named", "does not appear to have",
                                                              "Could not find", "not found")):
            return True
        err = err.__cause__ or err.__context__
    return False


# ---------------------------------------------------------------------------------------------------------------
# Calling loaders: one line per failure, naming the model and what to use instead
# ---------------------------------------------------------------------------------------------------------------

OFFLINE_ALTERNATIVE = {
    "sd": "use --model toy-sd (embedded) or a local Stable Diffusion folder",
    "clip": "use --clip_model toy-clip (embedded) or a local open_clip folder",
    "ddpm": "use --model toy-faces (embedded) or a local UNet2DModel folder",
    "pixel": "use --model toy-pixel (embedded) or a local folder",
}


def offline_error(spec: Any, err: BaseException, offline: bool) -> ModelLoadError:
    """One line: which model failed, why (offline or other), and what to use instead."""
    if offline or is_network_error(err):
        why = "no network access to the Hugging Face Hub (and not in the local cache)"
    else:
        why = " ".join(str(err).split())[:200] or type(err).__name__
    alternative = OFFLINE_ALTERNATIVE.get(spec.kind, "use a local model folder")
    return ModelLoadError(f"could not load {spec.name!r} ({spec.source}): {why}; {alternative}")


def from_source(spec: Any, load: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a loader on local files (no weights, or weights already checked), mapping its failures to one line;
    the libraries' warnings and log lines are shown only when it succeeds. ``spec``: a registry ModelSpec."""
    try:
        with held_output():
            return load(*args, **kwargs)
    except ModelLoadError:
        raise
    except hub_errors() as err:
        if spec.is_real:
            raise offline_error(spec, err, offline=False) from err
        raise ModelLoadError(f"could not load {spec.name!r} from {spec.source}: "
                             f"{' '.join(str(err).split())[:300]}") from err


def load_local(spec: Any, from_pretrained: Any, folder: Path, **kwargs: Any) -> Any:
    """``from_pretrained(folder, use_safetensors=True)`` of a local model or pipeline folder: pickles and corrupt
    safetensors refused before, tensors left without data (keys that do not match the config) refused after."""
    check_weight_files(folder)
    with held_output():  # "Some weights of ... were not initialized" is dropped when check_loaded refuses
        model = from_source(spec, from_pretrained, str(folder), use_safetensors=True, **kwargs)
        parts = model.components.items() if hasattr(model, "components") else [("", model)]
        for name, part in parts:
            if isinstance(part, torch.nn.Module):
                check_loaded(part, folder / name)
    return model


def from_hub(spec: Any, load: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a Hub loader (``from_pretrained``, ``load_config``, ``hf_hub_download``) for a real model: the local
    cache only when offline, and one line naming the model and the offline alternative when it fails. Local
    models (toy or folder) go straight to :func:`from_source`.

    Real models are the registry's own Hub repositories (a user's folder is never real). One that ships no
    safetensors (only ``.bin``) is loaded with ``use_safetensors=False``: diffusers and transformers then read the
    ``.bin`` with torch's weights-only unpickler, which builds tensors and runs no code.
    """
    if not spec.is_real:
        return from_source(spec, load, *args, **kwargs)
    offline = env_offline() or hub_unreachable()
    if offline:
        kwargs["local_files_only"] = True
    try:
        try:
            with held_output():
                return load(*args, **kwargs)
        except hub_errors() as err:
            if not (kwargs.get("use_safetensors") and missing_safetensors(err)):
                raise
        with held_output():
            return load(*args, **{**kwargs, "use_safetensors": False})
    except ModelLoadError:
        raise
    except hub_errors() as err:
        raise offline_error(spec, err, offline) from err
