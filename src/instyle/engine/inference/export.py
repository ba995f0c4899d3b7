"""ONNX export of generator model files (run by :mod:`instyle.engine.inference.onnx_runtime`).

The exported graph takes ``image`` (N, 3, H, W) float32 RGB in [0, 1] and returns
``stylized`` with the same shape, with batch, height and width dynamic. instyle's
``InstanceNorm2d`` dispatches to custom kernels (the C++ CPU op, triton) that no exporter
knows; the export runs on a copy of the generator whose instance norms are
``torch.nn.InstanceNorm2d`` with the same parameters, which every exporter writes as the
standard ``InstanceNormalization`` node. The residual add and ReLU that instyle fuses into
the norm become separate ``Add`` and ``Relu`` nodes.

A multi-style ``TransformerNet`` (conditional instance norms, one (gamma, beta) row per style) is
exported whole: its graph takes ``image`` and ``style_weights`` (N or 1, S) float32, and each norm
is an ``InstanceNormalization`` without scale and shift followed by gamma = weights @ rows and beta
likewise, as ``ConditionalInstanceNorm2d`` mixes its rows for float weights (as given: a caller
that wants a mix normalizes it to sum 1). The metadata ``styles`` lists the style names, one per
column of ``style_weights``, as JSON.

Only ``TransformerNet`` is exported: ``TextureNet`` draws noise inside ``forward``, which an
exported graph would freeze into a constant. The arbitrary model (AdaIN) is exported by
:mod:`instyle.engine.inference.onnx_adain` with the same machinery: a :class:`Graph` says what a
graph takes and gives, :func:`exported_graph` runs either exporter and checks the result,
:func:`described` adds the metadata, :func:`write_onnx` writes the file.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from instyle.engine.fileio import WriteError, write_atomic
from instyle.engine.modelfile import load_generator
from instyle.engine.models.blocks import canonical_arch
from instyle.engine.models.transformer import StyledNormAct
from instyle.engine.paths import cache_dir
from instyle.engine.weights import file_sha256 as sha256_file
from instyle.nn import InstanceNorm2d

__all__ = [
    "OPSET",
    "EXPORTERS",
    "ExportError",
    "Graph",
    "check_exporter",
    "described",
    "exportable_copy",
    "exported_graph",
    "export_generator",
    "export_model",
    "onnx_output",
    "STYLE_WEIGHTS",
    "write_onnx",
    "cached_onnx_path",
    "onnx_cache_dir",
    "onnx_metadata",
    "require_onnx",
]

# InstanceNormalization exists since opset 6; 18 is the dynamo exporter's native opset and
# the first with Pad's ``axes`` input, so neither exporter needs an opset conversion.
OPSET = 18
EXPORTERS = ("dynamo", "torchscript")
INPUT_NAME = "image"
OUTPUT_NAME = "stylized"
STYLE_WEIGHTS = "style_weights"  # a multi-style graph's second input: (N or 1, S) mixing weights
EXPORTABLE_ARCHS = ("transformer",)


class ExportError(RuntimeError):
    """The exporter failed, or produced a graph that does not describe the generator."""


def require_onnx(*modules: str) -> list:
    """The named modules, imported; ExportError (with the install command) for a missing one."""
    import importlib

    loaded = []
    for name in modules:
        try:
            loaded.append(importlib.import_module(name))
        except ImportError as error:
            raise ExportError(
                f"ONNX support needs the {name!r} package ({error}); install it with: pip install 'instyle[onnx]'"
            ) from error
    return loaded


def exportable_copy(generator: nn.Module) -> nn.Module:
    """A deep copy of ``generator`` in eval mode whose instyle ``InstanceNorm2d`` layers are
    ``torch.nn.InstanceNorm2d`` (same eps, affine parameters and running stats)."""
    model = copy.deepcopy(generator).cpu().float().eval()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, InstanceNorm2d):
                plain = nn.InstanceNorm2d(
                    child.num_features, child.eps, child.momentum if child.momentum is not None else 0.1,
                    child.affine, child.track_running_stats,
                )  # fmt: skip
                plain.load_state_dict(child.state_dict())
                setattr(parent, name, plain.eval())
    return model


def _count_instance_norms(generator: nn.Module) -> int:
    return sum(isinstance(m, nn.InstanceNorm2d) for m in generator.modules())


@contextlib.contextmanager
def _quiet_exporter():
    """The exporters log and warn about things that do not concern the user (missing
    torchvision ops, tracer notes, the TorchScript exporter's deprecation)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=".*operator 'instance_norm' is set to train=True.*")
            warnings.filterwarnings("ignore", message=".*Constant folding.*")
            # Two dynamic sizes that broadcast (AdaIN's style batch, 1 or N, against N images):
            # _export_proto names the axes itself.
            warnings.filterwarnings("ignore", message=".*axis name.*will not be used.*")
            yield
    finally:
        logger.setLevel(level)


@dataclass(frozen=True)
class Graph:
    """What an exported graph takes and gives: each input's name, example and dynamic axes
    (axis -> (dimension name, smallest size)); each output's name and dynamic axes."""

    inputs: dict[str, tuple[Tensor, dict[int, tuple[str, int]]]]
    outputs: dict[str, dict[int, str]]


def _image_graph(min_size: int) -> Graph:
    """A generator's graph: ``image`` (N, 3, H, W) -> ``stylized`` of the same shape."""
    example = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    axes = {0: ("batch", 1), 2: ("height", min_size), 3: ("width", min_size)}
    return Graph({INPUT_NAME: (example, axes)}, {OUTPUT_NAME: {a: name for a, (name, _) in axes.items()}})


class _WeightsSlot:
    """The ``style_weights`` input of the forward under way, read by every :class:`_MixedNormAct`."""

    weights: Tensor | None = None


class _MixedNormAct(nn.Module):
    """A :class:`StyledNormAct` in exportable ops: a plain instance norm, then the rows mixed by the
    weights of each image (N or 1, S) as scale and shift, the residual, the activation."""

    def __init__(self, layer: StyledNormAct, slot: _WeightsSlot) -> None:
        super().__init__()
        norm = layer.norm
        self.norm = nn.InstanceNorm2d(norm.num_features, norm.eps, affine=False)
        self.register_buffer("rows_weight", norm.weight.detach().float().clone())  # (S, C)
        self.register_buffer("rows_bias", norm.bias.detach().float().clone())
        self.activation, self.negative_slope, self._slot = layer.activation, layer.negative_slope, slot

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        weights = self._slot.weights
        gamma, beta = weights @ self.rows_weight, weights @ self.rows_bias  # (N or 1, C)
        y = self.norm(x) * gamma[:, :, None, None] + beta[:, :, None, None]
        if residual is not None:
            y = y + residual
        if self.activation == "relu":
            return torch.relu(y)
        return torch.nn.functional.leaky_relu(y, self.negative_slope) if self.activation == "leaky_relu" else y


class _MultiStyleGraph(nn.Module):
    """(image, style_weights) -> stylized: a multi-style TransformerNet with the weights an input."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = copy.deepcopy(generator).cpu().float().eval()
        self._slot = _WeightsSlot()
        for parent in list(self.generator.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, StyledNormAct):
                    setattr(parent, name, _MixedNormAct(child, self._slot))

    def forward(self, image: Tensor, style_weights: Tensor) -> Tensor:
        self._slot.weights = style_weights
        try:
            return self.generator._forward(image)  # its forward checks a style the graph takes as input
        finally:
            self._slot.weights = None


def _multi_style_graph(min_size: int, num_styles: int) -> Graph:
    """A multi-style generator's graph: ``image`` and ``style_weights`` (N or 1, S) -> ``stylized``."""
    image = _image_graph(min_size)
    weights = torch.full((1, num_styles), 1.0 / num_styles)
    return Graph({**image.inputs, STYLE_WEIGHTS: (weights, {0: ("style_batch", 1)})}, image.outputs)


def _export_proto(model: nn.Module, exporter: str, graph: Graph):
    """Run ``exporter`` on ``model`` and return the ONNX ModelProto, its inputs' and outputs'
    dynamic dimensions named as ``graph`` names them."""
    (onnx,) = require_onnx("onnx")
    examples = tuple(example for example, _ in graph.inputs.values())
    names = dict(input_names=list(graph.inputs), output_names=list(graph.outputs))
    with _quiet_exporter(), torch.no_grad():
        if exporter == "dynamo":
            require_onnx("onnxscript")
            dims: dict[str, Any] = {}  # one Dim per name: "batch" of the image is "batch" of the output
            shapes = tuple(
                {a: dims.setdefault(name, torch.export.Dim(name, min=low)) for a, (name, low) in axes.items()} or None
                for _, axes in graph.inputs.values()
            )  # fmt: skip
            program = torch.onnx.export(
                model, examples, dynamo=True, opset_version=OPSET, dynamic_shapes=shapes, verbose=False, optimize=True,
                **names,
            )  # fmt: skip
            proto = program.model_proto
        elif exporter == "torchscript":
            axes = {name: {a: dim for a, (dim, _) in spec.items()} for name, (_, spec) in graph.inputs.items() if spec}
            buffer = io.BytesIO()
            torch.onnx.export(
                model, examples, buffer, dynamo=False, opset_version=OPSET, dynamic_axes={**axes, **graph.outputs},
                **names,
            )  # fmt: skip
            proto = onnx.load_model_from_string(buffer.getvalue())
        else:
            raise ValueError(f"exporter must be one of {', '.join(EXPORTERS)}; got {exporter!r}")
    # torch.export takes two dynamic sizes that broadcast together for one (a style batch of 1 or
    # N against N images): the graph broadcasts them all the same; its declared names say so.
    declared = {name: {a: dim for a, (dim, _) in spec.items()} for name, (_, spec) in graph.inputs.items()}
    for value in (*proto.graph.input, *proto.graph.output):
        for axis, dim in {**declared, **graph.outputs}.get(value.name, {}).items():
            value.type.tensor_type.shape.dim[axis].dim_param = dim
    return proto


def exported_graph(model: nn.Module, exporter: str, graph: Graph):
    """``model`` exported and checked: every instance norm a standard node, no custom op."""
    try:
        proto = _export_proto(model, exporter, graph)
    except ExportError:
        raise
    except Exception as error:  # the exporters raise many types; name the stage and the cause
        raise ExportError(f"{exporter} ONNX export failed: {type(error).__name__}: {error}") from error

    # Every instance norm must be a standard node (GroupNorm may add more: torch writes it
    # as reshape + InstanceNormalization), and no node may need a custom-op runtime.
    expected = _count_instance_norms(model)
    found = sum(node.op_type == "InstanceNormalization" for node in proto.graph.node)
    custom = sorted({f"{n.domain}::{n.op_type}" for n in proto.graph.node if n.domain not in ("", "ai.onnx")})
    if found < expected or custom:
        raise ExportError(
            f"{exporter} export wrote {found} InstanceNormalization nodes for {expected} instance-norm layers"
            + (f" and custom ops {custom}" if custom else "")
        )
    return proto


def described(proto, props: dict[str, str], doc: str) -> bytes:
    """``proto`` with ``props`` as its metadata and ``doc`` as its doc string, checked, serialized."""
    (onnx,) = require_onnx("onnx")
    onnx.helper.set_model_props(proto, props)
    proto.doc_string = doc
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def write_onnx(output: Path, data: bytes) -> Path:
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # name the file asked for, not the folder
        raise WriteError(error.errno, f"cannot write {output}: {error.strerror or error}") from error
    return write_atomic(output, data)  # a WriteError names the output too


def check_exporter(exporter: str) -> None:
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {', '.join(EXPORTERS)}; got {exporter!r}")


def onnx_output(output: str | os.PathLike) -> Path:
    output = Path(output)
    if output.suffix.lower() != ".onnx":
        raise ValueError(f"ONNX output {output}: the file name must end in .onnx")
    return output


def export_generator(
    generator: nn.Module,
    output: str | os.PathLike,
    *,
    metadata: dict[str, str] | None = None,
    exporter: str = "dynamo",
) -> Path:
    """Export ``generator`` (a ``TransformerNet``) to ``output`` atomically; returns the path.

    ``metadata`` entries become ONNX ``metadata_props`` (strings), next to the generator's
    config, the instyle version and the smallest side the graph accepts.
    """
    import instyle

    require_onnx("onnx")
    check_exporter(exporter)
    config = dict(getattr(generator, "config", {}) or {})
    if canonical_arch(config.get("arch")) not in EXPORTABLE_ARCHS:
        raise ExportError(
            f"ONNX export supports {', '.join(EXPORTABLE_ARCHS)} generators, not {config.get('arch')!r}"
        )
    output = onnx_output(output)
    # Below this size TransformerNet edge-pads in Python, a branch the graph cannot hold.
    min_size = int(getattr(generator, "MIN_SIZE", 1))
    styles = config.get("num_styles")
    if styles:
        model, graph = _MultiStyleGraph(generator).eval(), _multi_style_graph(min_size, styles)
    else:
        model, graph = exportable_copy(generator), _image_graph(min_size)
    proto = exported_graph(model, exporter, graph)
    props = {
        "instyle_version": instyle.__version__,
        "arch": str(config.get("arch")),
        "generator_config": json.dumps(config, sort_keys=True),
        "input": f"{INPUT_NAME}: float32 (N, 3, H, W) RGB in [0, 1], H and W >= {min_size}",
        "output": f"{OUTPUT_NAME}: float32 (N, 3, H, W) RGB in [0, 1]",
        "min_size": str(min_size),
        "exporter": exporter,
    }
    if styles:
        props["styles"] = json.dumps([str(i) for i in range(styles)])  # the caller's names replace these
        props[STYLE_WEIGHTS] = f"{STYLE_WEIGHTS}: float32 (N or 1, {styles}), a weight per style of `styles`; gamma and beta are their weighted sums"
    props.update({str(k): str(v) for k, v in (metadata or {}).items()})
    doc = f"instyle {config.get('arch')} style model {props.get('style_name', '')}".strip()
    return write_onnx(output, described(proto, props, doc))


def export_model(
    name_or_path: str | os.PathLike, output: str | os.PathLike, *, exporter: str = "dynamo"
) -> Path:
    """Export a model file or bundled style to ``output`` (.onnx); a style inside a bundled
    multi-style file exports that whole file, its styles mixed by ``style_weights``. (The arbitrary model, AdaIN:
    :mod:`instyle.engine.inference.onnx_adain`.)"""
    from instyle.engine.catalog import resolve_model_path

    check_exporter(exporter)
    output = onnx_output(output)
    path = resolve_model_path(name_or_path)
    if output.exists() and output.resolve() == path.resolve():
        raise ValueError(f"ONNX output {output} is the model file itself")
    generator, metadata = load_generator(path)
    props = {
        "style_name": metadata.get("style_name") or path.stem,
        "source_model": path.name,
        "source_sha256": sha256_file(path),
    }
    if metadata.get("styles"):  # a multi-style model: the names of style_weights' columns
        props["styles"] = json.dumps([entry["name"] for entry in metadata["styles"]])
    return export_generator(generator, output, metadata=props, exporter=exporter)


def onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file, as a dict."""
    (onnx,) = require_onnx("onnx")
    model = onnx.load_model(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def onnx_cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """Where exported generators are cached: ``cache / "onnx"``, by default
    :func:`instyle.engine.paths.cache_dir` ``("onnx")`` (``$INSTYLE_HOME/onnx``)."""
    return Path(cache) / "onnx" if cache is not None else cache_dir("onnx")


def cached_onnx_path(model_path: str | os.PathLike, cache: str | os.PathLike | None = None) -> Path:
    """``$INSTYLE_HOME/onnx/<sha256 of the model file>.onnx``."""
    return onnx_cache_dir(cache) / f"{sha256_file(model_path)}.onnx"
