"""Hugging Face Hub plumbing for the registry: offline detection, error classification, dtype keywords."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import socket
import warnings
from collections.abc import Iterator

import torch


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
