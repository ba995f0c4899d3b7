"""Exported generators run by onnxruntime on the CPU: ``OnnxStyleModel`` and the cache of
exported model files behind ``StyleModel.stylize(runtime="onnxruntime")``. (The arbitrary model's
files: :mod:`instyle.engine.inference.onnx_adain`, which uses the sessions made here.)

Imports run one way: this module uses :mod:`instyle.engine.inference.export`, never the reverse.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as TF

from instyle.engine.inference.export import (
    INPUT_NAME,
    OUTPUT_NAME,
    STYLE_WEIGHTS,
    ExportError,
    require_onnx,
    cached_onnx_path,
    export_generator,
    onnx_cache_dir,
)

__all__ = ["OnnxStyleModel", "edge_padded", "load_cached_onnx", "onnx_session"]


def onnx_session(path: Path, threads: int | None):
    """An onnxruntime CPU session of ``path`` and the file's metadata; ExportError naming it."""
    (ort,) = require_onnx("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ExportError(f"onnxruntime cannot load {path}: {error}") from error
    return session, dict(session.get_modelmeta().custom_metadata_map)


def edge_padded(batch: Tensor, min_size: int) -> Tensor:
    """``batch`` (N, 3, H, W) as float32 on the CPU, sides under ``min_size`` edge-padded to it."""
    if batch.dim() != 4 or batch.shape[1] != 3:
        raise ValueError(f"batch must have shape (N, 3, H, W), got {tuple(batch.shape)}")
    h, w = batch.shape[-2:]
    x = batch.detach().to("cpu", torch.float32)
    if h < min_size or w < min_size:
        x = TF.pad(x, (0, max(0, min_size - w), 0, max(0, min_size - h)), mode="replicate")
    return x.contiguous()


class OnnxStyleModel:
    """An exported generator run by onnxruntime on the CPU: ``run(batch) -> batch``, and
    ``run(batch, style_weights)`` for a multi-style graph (:attr:`styles`, its metadata's names).

    Inputs smaller than the graph's ``min_size`` are edge-padded first and cropped back,
    as ``TransformerNet`` itself does.
    """

    def __init__(self, onnx_path: str | os.PathLike, *, threads: int | None = None) -> None:
        self.path = Path(onnx_path)
        self.session, self.metadata = onnx_session(self.path, threads)
        self.min_size = int(self.metadata.get("min_size", "1"))
        inputs = {i.name for i in self.session.get_inputs()}
        # the columns of style_weights, in order; () for a single-style graph
        self.styles = tuple(json.loads(self.metadata.get("styles", "[]"))) if STYLE_WEIGHTS in inputs else ()

    def __repr__(self) -> str:
        return f"OnnxStyleModel({str(self.path)!r})"

    def run(self, batch: Tensor, style_weights=None) -> Tensor:
        """Stylize ``batch`` (N, 3, H, W) float in [0, 1]; returns a float32 CPU tensor. A
        multi-style graph needs ``style_weights``: (S,), (1, S) or (N, S), a weight per style of
        :attr:`styles` (used as given: a mix normalized to sum 1 is the caller's)."""
        x = edge_padded(batch, self.min_size)
        feeds = {INPUT_NAME: x.numpy()}
        if self.styles:
            feeds[STYLE_WEIGHTS] = self._weights(style_weights, x.shape[0]).numpy()
        elif style_weights is not None:
            raise ValueError(f"{STYLE_WEIGHTS}: {self.path} is a single-style graph; it takes no style weights")
        (y,) = self.session.run([OUTPUT_NAME], feeds)
        return torch.from_numpy(y)[..., : batch.shape[-2], : batch.shape[-1]]

    def _weights(self, style_weights, n: int) -> Tensor:
        """``style_weights`` as a float32 (1 or N, S) tensor; ValueError naming it otherwise."""
        count = len(self.styles)
        if style_weights is None:
            raise ValueError(f"{STYLE_WEIGHTS} is needed: {self.path} holds {count} styles ({', '.join(self.styles)})")
        weights = torch.as_tensor(style_weights, dtype=torch.float32).detach().cpu()
        weights = weights.unsqueeze(0) if weights.dim() == 1 else weights
        if weights.dim() != 2 or weights.shape[1] != count or weights.shape[0] not in (1, n):
            raise ValueError(
                f"{STYLE_WEIGHTS} must have shape ({count},), (1, {count}) or ({n}, {count}): one weight per style "
                f"({', '.join(self.styles)}) for all {n} images or for each; got {tuple(weights.shape)}"
            )
        if not torch.isfinite(weights).all():
            raise ValueError(f"{STYLE_WEIGHTS}: the weights must be finite, got {weights.tolist()}")
        return weights.contiguous()


def _weights_digest(generator: nn.Module) -> str:
    """sha256 of a generator's config and weights, for generators without a model file."""
    digest = hashlib.sha256(json.dumps(getattr(generator, "config", {}), sort_keys=True).encode())
    for name, t in generator.state_dict().items():
        digest.update(name.encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_cached_onnx(
    generator: nn.Module,
    source: str | os.PathLike | None = None,
    metadata: dict[str, str] | None = None,
    *,
    cache: str | os.PathLike | None = None,
    exporter: str = "dynamo",
) -> OnnxStyleModel:
    """``generator`` in onnxruntime, exported once into the cache (keyed by the sha256 of its
    model file ``source``, or of its weights; see :func:`instyle.engine.inference.export.onnx_cache_dir`).
    A cached file is used only when onnxruntime loads it and the source hash it records is the
    key's: the file name alone proves nothing (a copied or stale file). Any other is exported again."""
    if source is not None:
        path = cached_onnx_path(source, cache)
        digest = path.stem
    else:
        digest = _weights_digest(generator)
        path = onnx_cache_dir(cache) / f"{digest}.onnx"
    if path.exists():
        try:
            cached = OnnxStyleModel(path)
        except ExportError:
            cached = None  # truncated or not ONNX: replace it
        if cached is not None and cached.metadata.get("source_sha256") == digest:
            return cached
    export_generator(generator, path, metadata={**(metadata or {}), "source_sha256": digest}, exporter=exporter)
    return OnnxStyleModel(path)
