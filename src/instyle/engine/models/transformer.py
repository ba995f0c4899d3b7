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
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as TF

from instyle.engine.models.blocks import ConvNormAct, TilingStages, check_image, kwargs_from_config, receptive_radius
from instyle.engine.models.settings import Entry, Setting, check_settings, conv_state

__all__ = ["TransformerNet", "ResidualBlock"]


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
    ``norm`` is any name of :func:`instyle.nn.make_norm` ("instance", "batch", "none", ...).
    """

    arch = "transformer"
    # Edge-pad inputs below this size: the 9x9 reflection pad needs at least 5 pixels.
    MIN_SIZE = 5

    # Bounds for the constructor and for model files: 32 * width channels at the first layer.
    SETTINGS = (Setting("width", float, 1 / 32, 16.0), Setting("num_residual", int, 0, 64))

    def __init__(self, *, norm: str = "instance", width: float = 1.0, num_residual: int = 5) -> None:
        super().__init__()
        self.check_inputs(width=width, num_residual=num_residual)
        self._config = {"arch": self.arch, "norm": norm, "width": float(width), "num_residual": num_residual}
        c1, c2, c3 = self.channels(width)
        self.down = nn.Sequential(
            ConvNormAct(3, c1, 9, norm=norm),
            ConvNormAct(c1, c2, 3, stride=2, norm=norm),
            ConvNormAct(c2, c3, 3, stride=2, norm=norm),
        )
        self.residual = nn.Sequential(*(ResidualBlock(c3, norm) for _ in range(num_residual)))
        self.up = nn.Sequential(
            ConvNormAct(c3, c2, 3, upsample=2, norm=norm),
            ConvNormAct(c2, c1, 3, upsample=2, norm=norm),
        )
        self.head = ConvNormAct(c1, 3, 9, norm="none", activation=None)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor's arguments plus ``arch``: JSON-serializable, for model files."""
        return dict(self._config)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TransformerNet:
        return cls(**kwargs_from_config(cls, config))

    @classmethod
    def check_inputs(cls, prefix: str = "", **settings: Any) -> None:
        """ValueError naming the setting (after ``prefix``) unless the numeric settings make a generator."""
        check_settings(cls.SETTINGS, settings, prefix)

    @staticmethod
    def channels(width: float) -> tuple[int, int, int]:
        """The channel counts of the three encoder stages for ``width``."""
        base = round(32 * width)
        return base, 2 * base, 4 * base

    @classmethod
    def state_entries(cls, *, norm: str, width: float, num_residual: int) -> dict[str, Entry]:
        """The state dict of ``cls(norm=norm, width=width, num_residual=num_residual)`` (names,
        shapes, kinds), derived from the settings alone: nothing is built."""
        c1, c2, c3 = cls.channels(width)
        state = {}
        for i, (cin, cout, k) in enumerate([(3, c1, 9), (c1, c2, 3), (c2, c3, 3)]):
            state.update(conv_state(f"down.{i}", cin, cout, k, norm))
        for i in range(num_residual):
            for conv in ("conv1", "conv2"):
                state.update(conv_state(f"residual.{i}.{conv}", c3, c3, 3, norm))
        for i, (cin, cout) in enumerate([(c3, c2), (c2, c1)]):
            state.update(conv_state(f"up.{i}", cin, cout, 3, norm))
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

    def forward(self, x: Tensor) -> Tensor:
        check_image(x, 3)
        h, w = x.shape[-2:]
        if h < self.MIN_SIZE or w < self.MIN_SIZE:
            x = TF.pad(x, (0, max(0, self.MIN_SIZE - w), 0, max(0, self.MIN_SIZE - h)), mode="replicate")
        hp, wp = x.shape[-2:]
        y = self.up(self.residual(self.down(x)))  # (N, C1, 4 * ceil(hp / 4), 4 * ceil(wp / 4))
        # Crop before the head so that its reflection pad mirrors the image's own border.
        y = self.head(y[..., :hp, :wp])
        return torch.sigmoid(y[..., :h, :w])

    def extra_repr(self) -> str:
        c = self._config
        return f"norm={c['norm']!r}, width={c['width']}, num_residual={c['num_residual']}"
