"""Blocks shared by the generators: ``NormAct`` (norm, optional residual, activation, with
the fused instance-norm path) and ``ConvNormAct`` (pad, conv, ``NormAct``).

``NormAct`` is also where :mod:`instyle.engine.inference.tiling` freezes whole-image statistics: while
``frozen_stats`` holds ``(mean, var)`` (each (C,)), the layer normalizes with them instead
of the input's own statistics. :class:`Tileable` and :class:`TilingStages` are what a generator
offers tiled inference: tiling reads these, never a generator's attributes or code.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch.nn import functional as TF

from instyle import functional as F
from instyle.nn import InstanceNorm2d, make_norm

__all__ = ["NormAct", "ConvNormAct", "Tileable", "TilingStages", "check_image", "kwargs_from_config", "receptive_radius"]

ACTIVATIONS = (None, "relu", "leaky_relu")


class NormAct(nn.Module):
    """``act(norm(x) + residual)``.

    With an instyle ``InstanceNorm2d`` that uses input statistics this is one call of
    :func:`instyle.functional.instance_norm` (ReLU and residual fused); any other norm runs
    as norm, then ``+ residual``, then the activation. LeakyReLU is never fused.
    """

    def __init__(self, norm: nn.Module, activation: str | None = "relu", negative_slope: float = 0.01) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.norm = norm
        self.activation = activation
        self.negative_slope = negative_slope
        # (mean, var) of the whole image, each (C,), set only by instyle.tiling; not state.
        self.frozen_stats: tuple[Tensor, Tensor] | None = None

    @property
    def uses_input_stats(self) -> bool:
        """Whether the norm normalizes with the statistics of its own input (so that its
        output at one pixel depends on the whole feature map)."""
        norm = self.norm
        return isinstance(norm, nn.InstanceNorm2d) and (norm.training or not norm.track_running_stats)

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        norm = self.norm
        fused = "relu" if self.activation == "relu" else None
        if self.frozen_stats is not None:
            mean, var = self.frozen_stats
            y = F.instance_norm(
                x, mean, var, norm.weight, norm.bias, False, 0.0, norm.eps,
                activation=fused, residual=residual, backend=getattr(norm, "backend", "auto"),
            )  # fmt: skip
        elif isinstance(norm, InstanceNorm2d) and not norm.track_running_stats:
            y = F.instance_norm(
                x, None, None, norm.weight, norm.bias, True, 0.0, norm.eps,
                activation=fused, residual=residual, backend=norm.backend,
            )  # fmt: skip
        else:
            y = norm(x)
            if residual is not None:
                y = y + residual
            if fused == "relu":
                y = torch.relu(y)
        if self.activation == "leaky_relu":
            y = TF.leaky_relu(y, self.negative_slope)
        return y

    def extra_repr(self) -> str:
        text = f"activation={self.activation!r}"
        if self.activation == "leaky_relu":
            text += f", negative_slope={self.negative_slope}"
        if self.frozen_stats is not None:
            text += ", frozen_stats=True"
        return text


def _fast_reflect_ok(x: Tensor, p: int) -> bool:
    """Inference on a 16-bit channels_last 4-D tensor whose sides exceed the pad (else torch's own
    pad, which is as fast in fp32)."""
    return (
        x.dim() == 4
        and x.dtype in (torch.bfloat16, torch.float16)
        and not (torch.is_grad_enabled() and x.requires_grad)
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
        and x.shape[1] > 1
        and x.is_contiguous(memory_format=torch.channels_last)
        and not x.is_contiguous()
        and p < x.shape[-2]
        and p < x.shape[-1]
    )


def reflect_pad_channels_last(x: Tensor, p: int) -> Tensor:
    """``F.pad(x, (p,) * 4, mode="reflect")`` for a channels_last tensor, written straight into a
    channels_last result: the interior in one copy, then the reflected rows and columns. torch's
    reflection_pad2d walks channels_last bf16 maps element by element, about 3x slower
    (docs/performance.md, "Reflection padding"); the values are the same bits."""
    n, c, h, w = x.shape
    out = torch.empty((n, c, h + 2 * p, w + 2 * p), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    out[:, :, p : p + h, p : p + w] = x
    out[:, :, :p, p : p + w] = x[:, :, 1 : p + 1].flip(2)
    out[:, :, p + h :, p : p + w] = x[:, :, h - p - 1 : h - 1].flip(2)
    out[:, :, :, :p] = out[:, :, :, p + 1 : 2 * p + 1].flip(3)
    out[:, :, :, p + w :] = out[:, :, :, w - 1 : w + p - 1].flip(3)
    return out


class ConvNormAct(nn.Module):
    """[nearest upsample] -> pad -> conv -> ``NormAct``; ``forward(x, residual=None)``.

    The conv has no bias when a norm follows (the norm's shift makes it redundant).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        *,
        upsample: int = 1,
        norm: str = "instance",
        activation: str | None = "relu",
        negative_slope: float = 0.01,
        padding_mode: str = "reflect",
    ) -> None:
        super().__init__()
        self.upsample = upsample
        self.padding = kernel_size // 2
        self.padding_mode = padding_mode
        norm_layer = make_norm(norm, out_channels)
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, bias=isinstance(norm_layer, nn.Identity)
        )
        self.norm_act = NormAct(norm_layer, activation, negative_slope)

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        if self.upsample != 1:
            x = TF.interpolate(x, scale_factor=self.upsample, mode="nearest")
        if self.padding:
            p = self.padding
            if self.padding_mode == "reflect" and _fast_reflect_ok(x, p):
                x = reflect_pad_channels_last(x, p)
            else:
                x = TF.pad(x, (p, p, p, p), mode=self.padding_mode)
        return self.norm_act(self.conv(x), residual)

    def extra_repr(self) -> str:
        return f"upsample={self.upsample}, padding={self.padding}, padding_mode={self.padding_mode!r}"


def receptive_radius(convs: list[ConvNormAct], scale: int = 1) -> int:
    """Image pixels that the output of ``convs`` (run in order, norms pointwise: eval-mode batch
    norm or frozen instance-norm statistics) reaches, read from a map of ``scale`` image pixels
    per pixel."""
    radius = 0
    for layer in convs:
        if layer.upsample != 1:
            radius += scale  # nearest: fine pixel j reads coarse pixel j // 2
            scale //= layer.upsample
        radius += layer.padding * scale
        if layer.conv.stride[0] != 1:
            radius += scale  # rounding of the strided grid
            scale *= layer.conv.stride[0]
    return radius


@dataclass(frozen=True)
class TilingStages:
    """A generator's forward as the stages that staged tiling runs, standing for
    ``output(head(decode(trunk(encode(x)))[..., :H, :W]))``:

    - ``encoder``: convolutions run in order on the image; their strides multiply to the
      generator's ``tile_stride``;
    - ``residual``: the trunk's blocks, each ``(conv1, conv2)`` computing
      ``conv2(conv1(x), residual=x)`` with stride-1 convolutions and no upsampling;
    - ``decoder``: convolutions run in order on the trunk's output;
    - ``head`` then ``output``: applied to the decoder's output cropped to the image's size
      (so that the head's padding mirrors the image's own border).
    """

    encoder: tuple[ConvNormAct, ...]
    residual: tuple[tuple[ConvNormAct, ConvNormAct], ...]
    decoder: tuple[ConvNormAct, ...]
    head: ConvNormAct
    output: Callable[[Tensor], Tensor] = torch.sigmoid


@runtime_checkable
class Tileable(Protocol):
    """A generator that tiled inference can cut into windows (every input-statistics norm
    inside a :class:`NormAct`, which accepts frozen statistics):

    - ``tile_stride``: its total downsampling; windows start at multiples of it so that every
      strided grid lines up with the untiled one;
    - ``receptive_radius``: input pixels an output pixel depends on, with norms frozen;
    - ``tiling_stages()``: its forward as :class:`TilingStages`, or None where it has none (a
      subclass whose forward differs from them): the staged path runs only on stages.
    """

    @property
    def tile_stride(self) -> int: ...

    @property
    def receptive_radius(self) -> int: ...

    def tiling_stages(self) -> TilingStages | None: ...


def check_image(x: Tensor, channels: int, name: str = "input") -> None:
    """Raise a clear error unless ``x`` is a float (N, channels, H, W) tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} must have shape (N, {channels}, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor in [0, 1], got {x.dtype}")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{name} has an empty spatial size {tuple(x.shape[2:])}")


# Model files written before the architecture had one name say "transformer_net" / "texture_net".
LEGACY_ARCH_NAMES = {"transformer_net": "transformer", "texture_net": "texture"}


def canonical_arch(name: Any) -> Any:
    """The architecture's one name (``transformer``, ``texture``) for a name a model file may carry."""
    return LEGACY_ARCH_NAMES.get(name, name) if isinstance(name, str) else name


def kwargs_from_config(cls: type, config: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor keywords in ``config`` (a model's ``config`` dict), checked against
    ``cls``'s ``arch`` and signature so that a wrong or stale config fails with one message."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping, got {type(config).__name__}")
    arch = canonical_arch(config.get("arch", cls.arch))
    if arch != cls.arch:
        raise ValueError(f"config is for arch {arch!r}, not {cls.arch!r}")
    params = inspect.signature(cls.__init__).parameters
    kwargs = {key: value for key, value in config.items() if key != "arch"}
    unknown = sorted(set(kwargs) - set(params) - {"self"})
    if unknown:
        raise ValueError(f"{cls.__name__} config has unknown keys: {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
    return kwargs
