"""Model files: safetensors weights plus JSON metadata (architecture, norm, widths, style
name and hash, training config, final losses, instyle version). Loading checks all of it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

FORMAT = "instyle-generator"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A model file that is missing, corrupt, or does not describe a usable generator."""


def save_model(model: torch.nn.Module, path: str | os.PathLike, metadata: dict, dtype: torch.dtype | None = None) -> None:
    """Write ``model`` (a generator with ``.config``) atomically as safetensors."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {}
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ModelFileError(f"refusing to save {path}: weight {name} has NaN or inf values")
        tensors[name] = t
    header = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(model.config),
        "instyle": json.dumps(metadata),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=header)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # a normal file, not the private mode of a temp file
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_model_file(path: str | os.PathLike) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    """Return (config, metadata, tensors) after checking the header and every tensor."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ModelFileError(f"model file {path} is not a readable safetensors file: {error}") from error
    problems = []
    if header.get("format") != FORMAT:
        problems.append(f"format is {header.get('format')!r}, expected {FORMAT!r}")
    version = header.get("format_version")
    if version is not None and version != str(FORMAT_VERSION):
        problems.append(f"unknown format version {version} (this instyle reads {FORMAT_VERSION})")
    try:
        config = json.loads(header.get("config", "null"))
        metadata = json.loads(header.get("instyle", "{}"))
    except json.JSONDecodeError as error:
        raise ModelFileError(f"model file {path}: metadata is not valid JSON ({error})") from error
    if not isinstance(config, dict):
        problems.append("no generator config in the metadata")
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            problems.append(f"weight {name} has NaN or inf values")
    if problems:
        raise ModelFileError(f"model file {path} is not usable: " + "; ".join(problems))
    return config, metadata, tensors


def load_generator(path: str | os.PathLike) -> tuple[torch.nn.Module, dict]:
    """Build the generator a model file describes and load its weights (strictly)."""
    from .models import generator_from_config

    config, metadata, tensors = read_model_file(path)
    try:
        model = generator_from_config(config)
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFileError(f"model file {path}: bad generator config {config}: {error}") from error
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [
        f"{k}: {tuple(tensors[k].shape)} instead of {tuple(expected[k].shape)}"
        for k in expected
        if k in tensors and tensors[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    if wrong:
        problems.append(f"wrong shapes {wrong[:5]}")
    if problems:
        raise ModelFileError(f"model file {path} does not match its config: " + "; ".join(problems))
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    model.eval()
    return model, metadata

