"""The arbitrary model (AdaIN, any painting) in ONNX: ``instyle export adain`` writes two graphs
(:func:`export_adain`), :class:`OnnxAdaIN` runs them in onnxruntime.

- ``OUT.onnx``: (``image``, ``style_mean``, ``style_std``, ``strength``) -> ``stylized``:
  :class:`instyle.engine.inference.adain.AdaINModel`'s untiled path in fp32. The painting enters as
  its relu4_1 statistics, so one file serves every painting.
- ``OUT.style.onnx``: ``painting`` -> (``style_mean``, ``style_std``), so that a painting's
  statistics need no torch either. An ONNX model is one graph, and onnxruntime asks for every
  input of it, so the two cannot share a file.

The painting goes in already scaled to its style size (a long side of 512 px): resizing is the
caller's, as decoding is (:func:`instyle.engine.inference.adain.style_image` here, PIL's bicubic
resize elsewhere).

This module sits above :mod:`~instyle.engine.inference.adain` (the model, its preprocessing),
:mod:`~instyle.engine.inference.export` and :mod:`~instyle.engine.inference.onnx_runtime` (the
exporters' machinery, the sessions); none of them imports it, as ``adain`` imports ``stylize``,
which reaches the other two.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as TF

from instyle.engine.catalog import adain_decoder_path, resolve_model_path
from instyle.engine.config import ConfigError
from instyle.engine.fileio import WriteError
from instyle.engine.inference.adain import (
    DEFAULT_STYLE_SIZE, MIN_PAINTING_SIDE, MIN_SIDE, STRIDE, AdaINModel, load_adain, style_image,
)  # fmt: skip
from instyle.engine.inference.export import (
    OUTPUT_NAME, ExportError, Graph, check_exporter, described, export_model, exportable_copy, exported_graph,
    onnx_output, require_onnx, write_onnx,
)  # fmt: skip
from instyle.engine.inference.onnx_runtime import edge_padded, onnx_session
from instyle.engine.modelfile import read_model_file
from instyle.engine.models.adain import CONTENT_LAYER, ENCODER_WEIGHTS, EPS, AdaINDecoder, FastAdaIN, adain
from instyle.engine.weights import file_sha256

__all__ = [
    "ADAIN", "ADAIN_INPUTS", "PAINTING_INPUT", "STYLE_OUTPUTS", "OnnxAdaIN", "export_adain", "export_any",
    "style_graph_path",
]  # fmt: skip

ADAIN = "adain"  # `instyle export adain`: the arbitrary model, one file for every painting
ADAIN_INPUTS = ("image", "style_mean", "style_std", "strength")
PAINTING_INPUT = "painting"
STYLE_OUTPUTS = ("style_mean", "style_std")
STYLE_SUFFIX = ".style.onnx"


def style_graph_path(output: str | os.PathLike) -> Path:
    """The statistics graph beside the AdaIN graph ``output``: ``OUT.onnx`` -> ``OUT.style.onnx``."""
    output = Path(output)
    return output.with_name(output.name[: -len(".onnx")] + STYLE_SUFFIX)


# ---------------------------------------------------------------------------- the graphs


def _plane_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std = sqrt(var + eps) (the biased variance), each (N, C), as
    :func:`instyle.engine.models.adain.feature_stats` gives them, in two plain passes that every
    exporter writes as ReduceMean nodes. (feature_stats scales each plane by a power of two first,
    for planes near fp32's largest value, with ops no exporter knows; the relu4_1 features of an
    image in [0, 1] stay far below.)"""
    mean = features.mean((2, 3), keepdim=True)
    var = (features - mean).square().mean((2, 3))
    return mean.flatten(1), (var + EPS).sqrt()


class _AdaINGraph(nn.Module):
    """(image, style_mean, style_std, strength) -> stylized: AdaINModel's untiled path in fp32. The
    image is padded at its bottom and right to a multiple of ``stride`` by repeating its edge, as
    AdaINModel pads it, and the result cropped back and clamped to [0, 1]."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, stride: int) -> None:
        super().__init__()
        self.encoder, self.decoder, self.stride = encoder, decoder, stride

    def forward(self, image: Tensor, style_mean: Tensor, style_std: Tensor, strength: Tensor) -> Tensor:
        h, w = image.shape[-2:]
        x = TF.pad(image, (0, (-w) % self.stride, 0, (-h) % self.stride), mode="replicate")
        features = self.encoder(x)[CONTENT_LAYER]
        target = adain(features, style_mean, style_std, 1.0, _plane_stats(features))
        # alpha is an input, so always the blend: 1 * target + 0 * features is target exactly.
        mixed = strength * target + (1 - strength) * features
        return self.decoder(mixed)[:, :, :h, :w].clamp(0, 1)


class _StyleGraph(nn.Module):
    """painting -> (style_mean, style_std): its relu4_1 statistics, as AdaINModel.style takes them."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, painting: Tensor) -> tuple[Tensor, Tensor]:
        return _plane_stats(self.encoder(painting)[CONTENT_LAYER])


def _graphs(channels: int) -> tuple[Graph, Graph]:
    """The inputs and outputs of the stylizing graph and of the statistics graph."""
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 64, 64, generator=g)
    axes = {0: ("batch", 1), 2: ("height", MIN_SIDE), 3: ("width", MIN_SIDE)}
    styles = {0: ("style_batch", 1)}
    stylize = Graph(
        {
            "image": (image, axes),
            "style_mean": (torch.rand(1, channels, generator=g), styles),
            "style_std": (torch.rand(1, channels, generator=g) + 0.5, styles),
            "strength": (torch.tensor(0.5), {}),
        },
        {OUTPUT_NAME: {a: name for a, (name, _) in axes.items()}},
    )
    # 8 px: one relu4_1 cell, the encoder's least; instyle asks more of a painting (see the metadata).
    painting = {0: ("batch", 1), 2: ("height", STRIDE), 3: ("width", STRIDE)}
    style = Graph({PAINTING_INPUT: (image, painting)}, {name: {0: "batch"} for name in STYLE_OUTPUTS})
    return stylize, style


def _props(model: AdaINModel, output: Path, exporter: str) -> tuple[dict[str, str], dict[str, str]]:
    """The metadata of the stylizing graph and of the statistics graph."""
    import instyle

    style_file, c = style_graph_path(output).name, model.decoder.in_channels
    common = {
        "instyle_version": instyle.__version__, "style_name": ADAIN, "arch": ADAIN, "exporter": exporter,
        "decoder_config": json.dumps(model.decoder.config, sort_keys=True),
        "encoder": "the distilled pair's own (in the source model)" if model.fast else f"{ENCODER_WEIGHTS} to {CONTENT_LAYER}",
        "encoder_sha256": str(getattr(model.encoder, "weights_sha256", None)),
        "style_size": str(DEFAULT_STYLE_SIZE),
    }  # fmt: skip
    if model.source is not None:
        common.update(source_model=Path(model.source).name, source_sha256=file_sha256(model.source))
    stylize = {
        **common, "graph": "stylize", "style_graph": style_file, "min_size": str(MIN_SIDE),
        "input": f"image: float32 (N, 3, H, W) RGB in [0, 1], H and W >= {MIN_SIDE} (padded inside to a multiple of "
        f"{STRIDE}); style_mean, style_std: float32 (N or 1, {c}), the painting's {CONTENT_LAYER} statistics "
        f"({style_file}); strength: float32 scalar in [0, 1] (alpha: 0 the photo as the decoder rebuilds it)",
        "output": f"{OUTPUT_NAME}: float32 (N, 3, H, W) RGB in [0, 1]",
    }  # fmt: skip
    style = {
        **common, "graph": "style", "stylize_graph": output.name, "min_size": str(MIN_PAINTING_SIDE),
        "input": f"{PAINTING_INPUT}: float32 (N, 3, H, W) RGB in [0, 1], scaled to a long side of {DEFAULT_STYLE_SIZE} "
        f"px (antialiased bicubic, as PIL's resize), H and W >= {MIN_PAINTING_SIDE}",
        "output": f"style_mean, style_std: float32 (N, {c}), the painting's {CONTENT_LAYER} mean and std, "
        f"for {output.name}",
    }  # fmt: skip
    return stylize, style


# ---------------------------------------------------------------------------- export


def export_adain(
    model: AdaINModel, output: str | os.PathLike, *, metadata: dict[str, str] | None = None, exporter: str = "dynamo"
) -> tuple[Path, Path]:
    """Export ``model`` as ``output`` (.onnx) and :func:`style_graph_path` (``OUT.style.onnx``),
    both or neither written (atomically); returns their paths. ``metadata`` entries are added to
    both files' ``metadata_props``."""
    require_onnx("onnx")
    check_exporter(exporter)
    output = onnx_output(output)
    style_output = style_graph_path(output)
    encoder, decoder = exportable_copy(model.encoder), exportable_copy(model.decoder)
    stylize_graph, style_graph = _graphs(decoder.in_channels)
    stylize_proto = exported_graph(_AdaINGraph(encoder, decoder, STRIDE).eval(), exporter, stylize_graph)
    style_proto = exported_graph(_StyleGraph(encoder).eval(), exporter, style_graph)
    stylize_props, style_props = _props(model, output, exporter)
    extra = {str(k): str(v) for k, v in (metadata or {}).items()}
    data = described(stylize_proto, {**stylize_props, **extra}, "instyle AdaIN: any painting, given as its statistics")
    style_data = described(style_proto, {**style_props, **extra}, "instyle AdaIN: a painting's statistics")
    existed = style_output.exists()
    write_onnx(style_output, style_data)
    try:
        write_onnx(output, data)
    except WriteError:  # the pair or nothing: a new statistics graph alone is taken back
        if not existed:
            style_output.unlink(missing_ok=True)
        raise
    return output, style_output


def export_any(
    name_or_path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    exporter: str = "dynamo",
    decoder: str | os.PathLike | None = None,
) -> Path:
    """What ``instyle export MODEL`` writes; returns the (first) file. A bundled style or a
    generator file: :func:`instyle.engine.inference.export.export_model`. :data:`ADAIN` with
    ``decoder`` (a file from ``instyle train-adain``; default: the bundled one), or a decoder file
    given as the model: :func:`export_adain`. ``decoder`` goes with :data:`ADAIN` only; ConfigError
    naming it otherwise, or when none is given and none is bundled."""
    name = os.fspath(name_or_path)
    if decoder is not None and name != ADAIN:
        raise ConfigError("decoder", f"goes with the model {ADAIN!r} (any painting), not with {name!r}")
    if name == ADAIN:
        path = adain_decoder_path(decoder)
    else:
        path = resolve_model_path(name_or_path)
        if read_model_file(path)[0].get("arch") not in (AdaINDecoder.arch, FastAdaIN.arch):
            return export_model(path, output, exporter=exporter)
    check_exporter(exporter)
    output = onnx_output(output)
    for written in (output, style_graph_path(output)):
        if written.exists() and written.resolve() == path.resolve():
            raise ValueError(f"ONNX output {written} is the model file itself")
    return export_adain(load_adain(path), output, exporter=exporter)[0]


# ---------------------------------------------------------------------------- onnxruntime


class OnnxAdaIN:
    """The two files of ``instyle export adain`` run by onnxruntime on the CPU: ``style(painting)``
    gives a painting's statistics (``OUT.style.onnx``), ``run(batch, mean, std, strength)`` stylizes
    with them (``OUT.onnx``), as ``AdaINModel`` does untiled in fp32. ``style_path`` defaults to the
    file beside ``onnx_path``."""

    def __init__(
        self, onnx_path: str | os.PathLike, style_path: str | os.PathLike | None = None, *, threads: int | None = None
    ) -> None:
        self.path = Path(onnx_path)
        self.style_path = style_graph_path(self.path) if style_path is None else Path(style_path)
        self.session, self.metadata = onnx_session(self.path, threads)
        self.style_session, style_metadata = onnx_session(self.style_path, threads)
        for path, meta, graph in ((self.path, self.metadata, "stylize"), (self.style_path, style_metadata, "style")):
            if (meta.get("arch"), meta.get("graph")) != (ADAIN, graph):
                arch = meta.get("arch")
                raise ExportError(f"{path} is not the {graph} graph of `instyle export adain` (arch {arch!r})")
        self.min_size = int(self.metadata.get("min_size", MIN_SIDE))
        self.style_size = int(self.metadata.get("style_size", DEFAULT_STYLE_SIZE))

    def __repr__(self) -> str:
        return f"OnnxAdaIN({str(self.path)!r}, {str(self.style_path)!r})"

    def style(self, painting: Any, *, style_size: int | None = None) -> tuple[Tensor, Tensor]:
        """The relu4_1 mean and std, each (1, C), of ``painting`` (a path, PIL image, ndarray or
        (3, H, W) tensor in [0, 1]), read and scaled as ``AdaINModel.style`` does (``style_size``:
        the long side, by default the one the file records)."""
        image, _ = style_image(painting, self.style_size if style_size is None else style_size)
        mean, std = self.style_session.run(list(STYLE_OUTPUTS), {PAINTING_INPUT: image[None].contiguous().numpy()})
        return torch.from_numpy(mean), torch.from_numpy(std)

    def run(self, batch: Tensor, style_mean: Tensor, style_std: Tensor, strength: float = 1.0) -> Tensor:
        """Stylize ``batch`` (N, 3, H, W) float in [0, 1] with a painting's ``style_mean`` and
        ``style_std`` (each (N or 1, C), from :meth:`style`); ``strength``: alpha in [0, 1].
        Returns a float32 CPU tensor in [0, 1]."""
        x = edge_padded(batch, self.min_size)  # to the decoder's least; the graph pads to a multiple of 8
        stats = [torch.as_tensor(t, dtype=torch.float32) for t in (style_mean, style_std)]
        stats = [t.reshape(-1, t.shape[-1]).contiguous() for t in stats]
        if any(t.shape[0] not in (1, x.shape[0]) for t in stats) or stats[0].shape != stats[1].shape:
            shapes = " and ".join(str(tuple(t.shape)) for t in stats)
            raise ValueError(f"style_mean and style_std must be (1 or N, C) for N = {x.shape[0]} images, got {shapes}")
        if not 0.0 <= float(strength) <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength!r}")
        alpha = np.asarray(strength, dtype=np.float32)
        feeds = dict(zip(ADAIN_INPUTS, (x.numpy(), stats[0].numpy(), stats[1].numpy(), alpha)))
        (y,) = self.session.run([OUTPUT_NAME], feeds)
        return torch.from_numpy(y)[..., : batch.shape[-2], : batch.shape[-1]]
