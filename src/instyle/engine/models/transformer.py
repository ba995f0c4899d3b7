"""The image transformation network of Johnson et al. 2016 ("Perceptual Losses for
Real-Time Style Transfer and Super-Resolution"), with instance norm (Ulyanov et al. 2016).

Layers (channels for ``width=1``): c9s1-32, d64, d128, ``num_residual`` x R128,
u64, u32, c9s1-3. Departures from the paper and from pytorch/examples fast_neural_style:

- input and output are RGB in [0, 1]; the output goes through a sigmoid (the paper's
  scaled tanh on 0-255 pixels, in [0, 1] units, is ``(tanh(x) + 1) / 2 = sigmoid(2x)``);
- upsampling is nearest + conv (Odena et al. 2016), not transposed convolution;
- any H, W: stride-2 convs round up, the output is cropped back to the input's size, and
  inputs smaller than ``MIN_SIZE`` are edge-padded first;
- the conv before each norm has no bias (the norm's shift makes it redundant).

Many styles in one network (Dumoulin, Shlens and Kudlur 2017, "A Learned Representation for
Artistic Style"): with ``norm="conditional_instance"`` and ``num_styles=S`` every instance norm is an
:class:`instyle.nn.ConditionalInstanceNorm2d` with one (gamma, beta) row per style, and
``forward(x, style)`` runs the whole batch in one style: an index, or mixing weights (S,) that
interpolate the rows. :meth:`TransformerNet.single_style` bakes a style (or a mix) into a plain
single-style network, which is what inference, tiling and export run.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as TF

from instyle import functional as F
from instyle.engine.models.blocks import (
    ConvNormAct, NormAct, TilingStages, check_image, kwargs_from_config, receptive_radius,
)  # fmt: skip
from instyle.engine.models.settings import CONDITIONAL, Entry, Setting, check_norm, check_settings, conv_state
from instyle.nn import ConditionalInstanceNorm2d

__all__ = ["TransformerNet", "ResidualBlock", "StyledNormAct", "mix_rows"]

# Styles one network may hold (and a model file may ask for).
MAX_STYLES = 1024


def mix_rows(rows: Tensor, weights: Tensor) -> Tensor:
    """``sum_s weights[s] * rows[s]``: (S, C) rows, (S,) weights -> (C,), in the rows' dtype and
    outside autocast (the scale and shift stay fp32 as a single-style network's do). One-hot weights
    give the row itself, bit for bit, and gradients only to it."""
    with torch.autocast(rows.device.type, enabled=False):
        return (weights.to(rows.dtype)[:, None] * rows).sum(0)


class _StyleSlot:
    """The style weights (S,) of the forward under way, read by every :class:`StyledNormAct` of a network."""

    def __init__(self) -> None:
        self.weights: Tensor | None = None


class StyledNormAct(NormAct):
    """A :class:`NormAct` whose norm is a :class:`~instyle.nn.ConditionalInstanceNorm2d`: each forward
    interpolates its (gamma, beta) from the rows by the weights of the style the network runs with, then
    normalizes, shifts, adds the residual and applies the ReLU in the fused call a single-style layer makes."""

    def __init__(self, channels: int, num_styles: int, activation: str | None, slot: _StyleSlot) -> None:
        super().__init__(ConditionalInstanceNorm2d(channels, num_styles), activation)
        self._slot = slot

    @property
    def uses_input_stats(self) -> bool:
        return True

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        weights = self._slot.weights
        if weights is None:
            raise ValueError(
                "style is needed: a multi-style TransformerNet runs as model(x, style), "
                "or as one style baked in by model.single_style(style)"
            )
        norm = self.norm
        gamma, beta = mix_rows(norm.weight, weights), mix_rows(norm.bias, weights)
        stats = self.frozen_stats if self.frozen_stats is not None else (None, None)
        y = F.instance_norm(
            x, stats[0], stats[1], gamma, beta, self.frozen_stats is None, 0.0, norm.eps,
            activation="relu" if self.activation == "relu" else None, residual=residual, backend=norm.backend,
        )  # fmt: skip
        return TF.leaky_relu(y, self.negative_slope) if self.activation == "leaky_relu" else y


class ResidualBlock(nn.Module):
    """x + IN(conv(relu(IN(conv(x))))), the second norm fused with the residual add."""

    def __init__(self, channels: int, norm: str = "instance") -> None:
        super().__init__()
        self.conv1 = ConvNormAct(channels, channels, 3, norm=norm, activation="relu")
        self.conv2 = ConvNormAct(channels, channels, 3, norm=norm, activation=None)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x), residual=x)


class TransformerNet(nn.Module):
    """Feed-forward stylization network: (N, 3, H, W) in [0, 1] -> (N, 3, H, W) in [0, 1].

    ``width`` scales every channel count (32 * width, 64 * width, 128 * width);
    ``norm`` is any name of :func:`instyle.nn.make_norm` ("instance", "batch", "none", ...), or
    ``"conditional_instance"`` with ``num_styles``: a multi-style network, run as ``model(x, style)``.
    """

    arch = "transformer"
    # Edge-pad inputs below this size: the 9x9 reflection pad needs at least 5 pixels.
    MIN_SIZE = 5

    # Bounds for the constructor and for model files: 32 * width channels at the first layer.
    SETTINGS = (Setting("width", float, 1 / 32, 16.0), Setting("num_residual", int, 0, 64))
    STYLES = Setting("num_styles", int, 1, MAX_STYLES)  # with norm "conditional_instance" only

    def __init__(
        self, *, norm: str = "instance", width: float = 1.0, num_residual: int = 5, num_styles: int | None = None
    ) -> None:
        super().__init__()
        self.check_inputs(width=width, num_residual=num_residual)
        self._check_styles(norm, num_styles)
        self._config = {"arch": self.arch, "norm": norm, "width": float(width), "num_residual": num_residual}
        if num_styles is not None:
            self._config["num_styles"] = num_styles
        layer_norm = "instance" if norm == CONDITIONAL else norm
        c1, c2, c3 = self.channels(width)
        self.down = nn.Sequential(
            ConvNormAct(3, c1, 9, norm=layer_norm),
            ConvNormAct(c1, c2, 3, stride=2, norm=layer_norm),
            ConvNormAct(c2, c3, 3, stride=2, norm=layer_norm),
        )
        self.residual = nn.Sequential(*(ResidualBlock(c3, layer_norm) for _ in range(num_residual)))
        self.up = nn.Sequential(
            ConvNormAct(c3, c2, 3, upsample=2, norm=layer_norm),
            ConvNormAct(c2, c1, 3, upsample=2, norm=layer_norm),
        )
        self.head = ConvNormAct(c1, 3, 9, norm="none", activation=None)
        self._slot = _StyleSlot()
        if num_styles is not None:
            for layer in self._convs()[:-1]:  # every norm but the head's (it has none)
                layer.norm_act = StyledNormAct(layer.conv.out_channels, num_styles, layer.norm_act.activation, self._slot)

    @staticmethod
    def _check_styles(norm: Any, num_styles: Any, prefix: str = "") -> None:
        if norm == CONDITIONAL:
            TransformerNet.STYLES.check(num_styles, prefix)
        elif num_styles is not None:
            raise ValueError(f"{prefix}num_styles is only for norm {CONDITIONAL}, got norm {norm!r}")

    @property
    def config(self) -> dict[str, Any]:
        """The constructor's arguments plus ``arch``: JSON-serializable, for model files."""
        return dict(self._config)

    @property
    def num_styles(self) -> int | None:
        """The styles this network holds; None for a single-style network (which takes no ``style``)."""
        return self._config.get("num_styles")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TransformerNet:
        return cls(**kwargs_from_config(cls, config))

    @classmethod
    def check_inputs(cls, prefix: str = "", **settings: Any) -> None:
        """ValueError naming the setting (after ``prefix``) unless the numeric settings make a generator."""
        check_settings(cls.SETTINGS, settings, prefix)

    @classmethod
    def stored_state(cls, config: Any, prefix: str = "") -> tuple[dict[str, Any], dict[str, Entry]]:
        """The checked settings of a stored ``config`` (its norm one a model file may name, the
        conditional one included) and the state dict they imply, derived without building anything."""
        settings = {"norm": "instance", "width": 1.0, "num_residual": 5, "num_styles": None}
        settings.update(kwargs_from_config(cls, config))
        check_norm(settings["norm"], prefix, extra=(CONDITIONAL,))
        cls._check_styles(settings["norm"], settings["num_styles"], prefix)
        cls.check_inputs(prefix, **{s.name: settings[s.name] for s in cls.SETTINGS})
        if settings["num_styles"] is None:
            del settings["num_styles"]
        return {"arch": cls.arch, **settings}, cls.state_entries(**settings)

    @staticmethod
    def channels(width: float) -> tuple[int, int, int]:
        """The channel counts of the three encoder stages for ``width``."""
        base = round(32 * width)
        return base, 2 * base, 4 * base

    @classmethod
    def state_entries(
        cls, *, norm: str, width: float, num_residual: int, num_styles: int | None = None
    ) -> dict[str, Entry]:
        """The state dict of ``cls(norm=norm, width=width, num_residual=num_residual, num_styles=...)``
        (names, shapes, kinds), derived from the settings alone: nothing is built."""
        c1, c2, c3 = cls.channels(width)
        state = {}
        for i, (cin, cout, k) in enumerate([(3, c1, 9), (c1, c2, 3), (c2, c3, 3)]):
            state.update(conv_state(f"down.{i}", cin, cout, k, norm, num_styles))
        for i in range(num_residual):
            for conv in ("conv1", "conv2"):
                state.update(conv_state(f"residual.{i}.{conv}", c3, c3, 3, norm, num_styles))
        for i, (cin, cout) in enumerate([(c3, c2), (c2, c1)]):
            state.update(conv_state(f"up.{i}", cin, cout, 3, norm, num_styles))
        state.update(conv_state("head", c1, 3, 9, "none"))
        return state

    @property
    def tile_stride(self) -> int:
        """Total downsampling factor: tiles must start at multiples of it to line up."""
        return 4

    @property
    def receptive_radius(self) -> int:
        """An upper bound on how far (in input pixels) an output pixel's value reaches, when
        every norm is pointwise (eval-mode batch norm, frozen instance-norm statistics)."""
        return receptive_radius(self._convs())

    def tiling_stages(self) -> TilingStages | None:
        """This network's forward as stages for staged tiling (:class:`Tileable`). A subclass
        that overrides ``forward``, or whose residual blocks override theirs, computes something
        the stages do not describe: it gets None (the generic tiled path) unless it overrides
        this method too."""
        if type(self).forward is not TransformerNet.forward:
            return None
        if any(type(block).forward is not ResidualBlock.forward for block in self.residual):
            return None
        return TilingStages(
            encoder=tuple(self.down),
            residual=tuple((block.conv1, block.conv2) for block in self.residual),
            decoder=tuple(self.up),
            head=self.head,
            output=torch.sigmoid,
        )

    def _convs(self) -> list[ConvNormAct]:
        return [m for m in self.modules() if isinstance(m, ConvNormAct)]

    def forward(self, x: Tensor, style: int | Tensor | None = None) -> Tensor:
        """``x`` stylized; a multi-style network needs ``style`` (see :meth:`style_weights`), and the
        whole batch takes that style."""
        check_image(x, 3)
        if self.num_styles is None:
            if style is not None:
                raise ValueError("style is only for a multi-style TransformerNet (norm conditional_instance)")
            return self._forward(x)
        self._slot.weights = self.style_weights(style)
        try:
            return self._forward(x)
        finally:
            self._slot.weights = None

    def _forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        if h < self.MIN_SIZE or w < self.MIN_SIZE:
            x = TF.pad(x, (0, max(0, self.MIN_SIZE - w), 0, max(0, self.MIN_SIZE - h)), mode="replicate")
        hp, wp = x.shape[-2:]
        y = self.up(self.residual(self.down(x)))  # (N, C1, 4 * ceil(hp / 4), 4 * ceil(wp / 4))
        # Crop before the head so that its reflection pad mirrors the image's own border.
        y = self.head(y[..., :hp, :wp])
        return torch.sigmoid(y[..., :h, :w])

    # ---------------------------------------------------------------------------- many styles

    def _tables(self) -> list[ConditionalInstanceNorm2d]:
        return [m for m in self.modules() if isinstance(m, ConditionalInstanceNorm2d)]

    def _table_names(self) -> set[str]:
        """The module names of the conditional norms (their weight and bias are the style rows)."""
        return {name for name, m in self.named_modules() if isinstance(m, ConditionalInstanceNorm2d)}

    def style_parameters(self) -> list[nn.Parameter]:
        """The style rows: every conditional norm's weight and bias, (S, C) each."""
        return [p for table in self._tables() for p in (table.weight, table.bias)]

    def style_weights(self, style: int | Tensor | None) -> Tensor:
        """The (S,) weights of ``style`` for this multi-style network: an index (int, or an integer
        tensor of one element) gives that style's row, float weights (S,) interpolate the rows as
        given (callers normalize them). Raises ValueError or IndexError naming ``style``."""
        count = self.num_styles
        if count is None:
            raise ValueError("style is only for a multi-style TransformerNet (norm conditional_instance)")
        if style is None:
            raise ValueError(f"style is needed: this network holds {count} styles")
        device = self._tables()[0].weight.device
        if isinstance(style, Tensor) and style.is_floating_point():
            if style.shape != (count,):
                raise ValueError(f"style weights must have shape ({count},), got {tuple(style.shape)}")
            return style.to(device)
        if isinstance(style, Tensor):
            if style.numel() != 1 or style.dtype == torch.bool:
                raise ValueError(f"style must be one index or ({count},) weights, got {style.dtype} {tuple(style.shape)}")
            style = int(style.reshape(()))
        if isinstance(style, bool) or not isinstance(style, int) or not 0 <= style < count:
            raise IndexError(f"style must be an index in [0, {count}), got {style!r}")
        return torch.nn.functional.one_hot(torch.tensor(style, device=device), count).float()

    def single_style(self, style: int | Tensor) -> TransformerNet:
        """A single-style network (norm ``instance``) computing what this one computes for ``style``:
        each norm's (gamma, beta) the rows mixed by the style's weights, the other weights copied.
        It is what inference runs: tiling, bf16 copies and export see an ordinary network."""
        weights = self.style_weights(style)
        tables = self._table_names()
        state = {
            name: mix_rows(t, weights) if name.rsplit(".", 1)[0] in tables else t
            for name, t in self.state_dict().items()
        }
        plain = _unbuilt(norm="instance", width=self._config["width"], num_residual=self._config["num_residual"])
        plain.to_empty(device=weights.device)
        plain.load_state_dict({k: v.detach() for k, v in state.items()})
        return plain.train(self.training)

    def with_styles(self, count: int) -> TransformerNet:
        """A copy of this multi-style network with ``count`` more styles, each of whose rows starts at
        the mean of the existing rows; every other weight is copied bit for bit."""
        if self.num_styles is None:
            raise ValueError("with_styles needs a multi-style TransformerNet (norm conditional_instance)")
        config = {k: v for k, v in self._config.items() if k != "arch"}
        bigger = _unbuilt(**{**config, "num_styles": self.num_styles + count})
        state, tables = {}, self._table_names()
        for name, t in self.state_dict().items():
            if name.rsplit(".", 1)[0] in tables:
                t = torch.cat([t, t.mean(0, keepdim=True).expand(count, -1)])
            state[name] = t.detach()
        device = next(self.parameters()).device
        bigger.to_empty(device=device)
        bigger.load_state_dict(state)
        return bigger.train(self.training)

    def extra_repr(self) -> str:
        c = self._config
        styles = f", num_styles={c['num_styles']}" if "num_styles" in c else ""
        return f"norm={c['norm']!r}, width={c['width']}, num_residual={c['num_residual']}{styles}"


def _unbuilt(**settings: Any) -> TransformerNet:
    """A TransformerNet on the meta device: built without initializing (or drawing random numbers for)
    weights that are about to be loaded; ``to_empty`` gives it memory."""
    with torch.device("meta"):
        return TransformerNet(**settings)
