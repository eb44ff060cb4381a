"""Checkpoints as one safetensors file: network weights, Adam state and RNG states as tensors, the rest as JSON.

Never pickle: ``safetensors`` stores only tensors plus a str->str metadata header. Tensor names:
``G.*``, ``D.*``, ``G_ema.*`` (state dicts), ``opt.G.<i>.<key>`` / ``opt.D.<i>.<key>`` (Adam state of parameter i),
``rng.<name>`` (``torch.Generator.get_state()`` bytes), ``loss.pl_mean``. Metadata: ``format``, ``arch`` (the
:class:`gan.networks.ArchConfig` as JSON) and ``state`` (step, images seen, training options).
Files go through ``common.files.save_safetensors``: a byte-stable header (two identical runs write identical
bytes) written to a temporary file and moved into place with ``os.replace`` (atomic on POSIX). Reading
validates everything a hand-edited or foreign file can get wrong (metadata, architecture keys, RNG state sizes,
optimiser shapes) and reports it as one-line ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open

from common.files import refuse_pickle, save_safetensors
from gan.networks import ArchConfig

FORMAT = "genmodels-stylegan2/1"
SAFETENSORS_HINT = ("use a checkpoint-XXXXXX.safetensors that gan.train wrote, the shipped "
                    "gan/checkpoints/toy_faces64_start.safetensors (the toy stand-in for the handout's 10K-iteration "
                    "pickle), or train a start with `python -m gan.make_toy_checkpoint`")


def save_checkpoint(path: str | Path, arch: ArchConfig, nets: dict, optimizers: dict | None = None,
                    rng: dict | None = None, extra: dict | None = None, state: dict | None = None,
                    dtype: torch.dtype | None = None) -> Path:
    """Write nets (name -> module), optimizers (name -> Adam), rng (name -> Generator) and extra tensors."""
    tensors = {}
    for name, net in nets.items():
        for key, value in net.state_dict().items():
            value = value.detach()
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
            tensors[f"{name}.{key}"] = value.cpu().contiguous()
    for name, opt in (optimizers or {}).items():
        for i, param_state in opt.state_dict()["state"].items():
            for key, value in param_state.items():
                tensors[f"opt.{name}.{i}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    for name, gen in (rng or {}).items():
        tensors[f"rng.{name}"] = gen.get_state().cpu()
    for name, value in (extra or {}).items():
        tensors[name] = value.detach().cpu().contiguous()
    return _write(tensors, arch, state or {}, path)


def _write(tensors: dict, arch: ArchConfig, state: dict, path: str | Path) -> Path:
    """Atomic, byte-stable write (sorted header keys) through ``common.files.save_safetensors``."""
    metadata = {"format": FORMAT, "arch": json.dumps(dataclasses.asdict(arch)),
                "state": json.dumps(state, sort_keys=True, allow_nan=False)}
    return save_safetensors(tensors, path, metadata)


def _json_object(text: str | None, key: str, path: Path) -> dict:
    try:
        value = json.loads(text) if text is not None else None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: metadata {key!r} is not valid JSON ({err.msg})") from err
    if not isinstance(value, dict):
        raise ValueError(f"{path}: metadata {key!r} must be a JSON object, got {type(value).__name__}")
    return value


def _parse_arch(metadata: dict, path: Path) -> ArchConfig:
    """ArchConfig from the metadata; missing or unknown keys and bad values are one line naming them."""
    arch = _json_object(metadata.get("arch"), "arch", path)
    names = {f.name for f in dataclasses.fields(ArchConfig)}
    if set(arch) != names:
        missing, extra = sorted(names - set(arch)), sorted(set(arch) - names)
        raise ValueError(f"{path}: metadata 'arch' does not describe a gan.networks.ArchConfig (missing keys: "
                         f"{', '.join(missing) or 'none'}; unknown keys: {', '.join(extra) or 'none'})")
    ints = [k for k in names - {"conv_clamp"} if type(arch[k]) is not int or arch[k] < 1]
    clamp = arch["conv_clamp"]
    if ints or not (clamp is None or (isinstance(clamp, (int, float)) and 0 < clamp < float("inf"))):
        raise ValueError(f"{path}: metadata 'arch' has invalid values for {', '.join(sorted(ints) or ['conv_clamp'])}")
    return ArchConfig(**arch)  # checks the resolution (power of two)


def _parse_state(metadata: dict, path: Path) -> dict:
    state = _json_object(metadata.get("state", "{}"), "state", path)
    for key in ("step", "nimg"):
        if key in state and (type(state[key]) is not int or state[key] < 0):
            raise ValueError(f"{path}: metadata 'state' has {key} = {state[key]!r}, expected an integer >= 0")
    if not isinstance(state.get("config", {}), dict):
        raise ValueError(f"{path}: metadata 'state' has a 'config' that is not a JSON object")
    return state


def read_checkpoint(path: str | Path) -> tuple[dict, ArchConfig, dict]:
    """(tensors, arch, state) from a checkpoint; one-line ValueError/FileNotFoundError on bad files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    refuse_pickle(path, SAFETENSORS_HINT)  # e.g. the handout's checkpoint/part1-10K.pkl
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is not a safetensors checkpoint ({err})") from err
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is not a gan checkpoint (format {metadata.get('format')!r}, expected {FORMAT!r})")
    return tensors, _parse_arch(metadata, path), _parse_state(metadata, path)


def check_arch(saved: ArchConfig, current: ArchConfig, path) -> None:
    """ValueError naming the differing fields when a checkpoint belongs to another architecture."""
    diffs = [f"{f.name} {getattr(saved, f.name)} vs {getattr(current, f.name)}" for f in dataclasses.fields(saved)
             if getattr(saved, f.name) != getattr(current, f.name)]
    if diffs:
        raise ValueError(f"checkpoint {path} is for another architecture (checkpoint vs this run: {'; '.join(diffs)})")


def load_net(net: torch.nn.Module, tensors: dict, prefix: str) -> None:
    state = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    ref = net.state_dict()
    if set(state) != set(ref) or any(state[k].shape != ref[k].shape for k in ref):
        raise ValueError(f"checkpoint weights for {prefix} do not match the network")
    net.load_state_dict({k: v.to(ref[k].dtype) for k, v in state.items()})


def has_optimizer(tensors: dict, name: str) -> bool:
    return any(k.startswith(f"opt.{name}.") for k in tensors)


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict, name: str) -> None:
    """Restore Adam moments and step counts; lr/betas keep the values this run configured."""
    params = [p for group in opt.param_groups for p in group["params"]]
    state = {}
    for key, value in tensors.items():
        if key.startswith(f"opt.{name}."):
            idx, field = key[len(f"opt.{name}."):].split(".", 1)
            state.setdefault(int(idx) if idx.isdigit() else idx, {})[field] = value
    for idx, fields in state.items():
        ok = isinstance(idx, int) and idx < len(params) and set(fields) == {"step", "exp_avg", "exp_avg_sq"}
        if not ok or fields["step"].numel() != 1 or any(fields[k].shape != params[idx].shape
                                                        for k in ("exp_avg", "exp_avg_sq")):
            raise ValueError(f"checkpoint optimiser state opt.{name}.{idx} does not match the network")
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})


def load_rng(gen: torch.Generator, tensors: dict, name: str) -> bool:
    """Restore a generator state; a state of another size or kind is a one-line ValueError."""
    key = f"rng.{name}"
    if key not in tensors:
        return False
    saved, current = tensors[key], gen.get_state()
    if saved.dtype != torch.uint8 or saved.shape != current.shape:
        raise ValueError(f"checkpoint {key} is not a {gen.device.type} generator state ({saved.numel()} "
                         f"{saved.dtype} values, expected {current.numel()} uint8)")
    try:
        gen.set_state(saved)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {key} is not a valid generator state ({str(err).splitlines()[0]})") from err
    return True


def export_slim(src: str | Path, dst: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Copy only the networks (G, D, G_ema) of a checkpoint, cast to ``dtype``: a small file to ship and resume."""
    tensors, arch, state = read_checkpoint(src)
    keep = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in tensors.items()
            if k.split(".", 1)[0] in ("G", "D", "G_ema")}
    state = {k: v for k, v in state.items() if k != "train_rng_device"}
    return _write(keep, arch, state, dst)
