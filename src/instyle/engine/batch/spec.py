"""The model of a batch job as one picklable value: :class:`ModelSpec`.

The driver loads the model once (so that a bad name or file is refused before any work) and turns
it into a spec: the kind of model, the bytes of its file (a bundled file goes by its place in the
package, which every worker has), the name its outputs take and the arguments of ``stylize`` that
belong to the model (a painting's statistics, a mask, a style of a multi-style model). Each Ray
actor turns the spec back into a loaded model, once (:meth:`ModelSpec.load`): workers need neither
the driver's files nor its paintings.

A new kind of model plugs in with one line in :data:`KINDS`: the class the driver holds and the
function that loads it from a file on a worker; its ``stylize(image, **options)`` must take an
ndarray and return one, as :class:`instyle.engine.inference.stylize.StyleModel` does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["KINDS", "ModelSpec", "spec_of", "digest"]

# kind -> (the class of a loaded model, "module:function" that loads one from a model file)
KINDS: dict[str, tuple[str, str]] = {
    "generator": ("instyle.engine.inference.stylize:StyleModel", "instyle.engine.inference.stylize:load_model"),
    "adain": ("instyle.engine.inference.adain:AdaINModel", "instyle.engine.inference.adain:load_adain"),
}

PACKAGE = Path(__file__).resolve().parents[2]  # src/instyle: bundled files are found beside it on every worker


def _resolve(target: str):
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class ModelSpec:
    """A loaded model as a value to ship to workers (see the module's docstring)."""

    kind: str  # a key of KINDS
    name: str  # outputs are STEM_NAME.SUFFIX
    source: str  # the model file as the user gave it (for messages), or its place in the package
    data: bytes | None = None  # the file's bytes; None for a file bundled with instyle (``source`` in the package)
    options: Mapping[str, Any] = field(default_factory=dict)  # stylize's arguments that belong to the model

    def load(self) -> tuple[Any, tempfile.TemporaryDirectory | None]:
        """The model, loaded from the shipped bytes (kept in a temporary folder the caller holds as
        long as the model: the ONNX cache reads the file again) or from the package."""
        loader = _resolve(KINDS[self.kind][1])
        if self.data is None:
            return loader(PACKAGE / self.source), None
        folder = tempfile.TemporaryDirectory(prefix="instyle-model-")
        path = Path(folder.name) / (Path(self.source).name or "model.safetensors")
        path.write_bytes(self.data)
        return loader(path), folder


def _kind_of(model: Any) -> str:
    for kind, (cls, _) in KINDS.items():
        if isinstance(model, _resolve(cls)):
            return kind
    raise TypeError(f"model: expected one of {', '.join(KINDS)} (a StyleModel or an AdaINModel), got {type(model).__name__}")


def spec_of(model: Any, options: Mapping[str, Any] | None = None, *, name: str | None = None) -> ModelSpec:
    """The spec of a model loaded in the driver (``load_model``, ``load_adain``), with the arguments
    of its ``stylize`` that belong to it (``style``, ``mask``; ``runtime``); ``name`` (default: the
    model's) names the outputs. The model file is read here, once."""
    options = dict(options or {})
    style = getattr(model, "style", None)
    if isinstance(style, str) and "style" not in options:  # a multi-style model loaded as FILE:STYLE
        options["style"] = style
    path = Path(model.source).resolve()
    try:
        relative, data = path.relative_to(PACKAGE).as_posix(), None
    except ValueError:
        relative = os.fspath(model.source)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ValueError(f"model {model.source}: cannot read it ({error.strerror or error})") from error
    return ModelSpec(_kind_of(model), name or model.name, relative, data, options)


def digest(*values: Any) -> str:
    """A stable hash of ``values`` (specs, options: numbers, strings, bytes, tensors, dataclasses,
    mappings, sequences): the same job hashes the same in every run."""
    h = hashlib.sha256()
    for value in values:
        _feed(h, value)
    return h.hexdigest()[:16]


def _feed(h, value: Any) -> None:
    if isinstance(value, bytes):
        h.update(b"b%d:" % len(value) + hashlib.sha256(value).digest())
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        h.update(type(value).__name__.encode())
        _feed(h, {f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    elif isinstance(value, Mapping):
        h.update(b"{")
        for key in sorted(value, key=str):
            _feed(h, str(key)), _feed(h, value[key])
        h.update(b"}")
    elif isinstance(value, (list, tuple)):
        h.update(b"[")
        for item in value:
            _feed(h, item)
        h.update(b"]")
    elif hasattr(value, "numpy") and hasattr(value, "dtype"):  # a tensor: its values, not its id
        array = value.detach().cpu().contiguous().numpy()
        h.update(f"t{array.dtype}{array.shape}".encode() + array.tobytes())
    else:
        h.update(repr(value).encode() + b";")
