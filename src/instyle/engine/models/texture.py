"""The multi-scale generator of Ulyanov et al. 2016 ("Texture Networks: Feed-forward
Synthesis of Textures and Stylized Images"), with the norm chosen by name (the 2016 paper
used batch norm; instance norm is the 2017 follow-up's fix, and our default).

At each of ``num_scales`` scales k (resolution 1 / 2^k) the input is the content image
average-pooled to that scale (absent for texture synthesis) concatenated with
``noise_channels`` of uniform noise, and goes through a conv block (3x3, 3x3, 1x1, each
with norm and LeakyReLU). Branches join coarse to fine: the coarser result is upsampled
(nearest), both it and the finer branch are normalized, concatenated along channels and
passed through another conv block; so the channel count grows by ``channels`` per scale.
A final 1x1 conv maps to RGB and a sigmoid to [0, 1].

Departures: any H, W (the input is edge-padded to a multiple of 2^(num_scales - 1), at
least two coarsest pixels, and the output cropped back); reflection padding; noise is drawn
on the generator's device (CPU by default), so a seed gives the same noise on every device.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as TF

from instyle.nn import make_norm
from instyle.engine.models.blocks import ConvNormAct, NormAct, check_image, kwargs_from_config
from instyle.engine.models.settings import Entry, Setting, check_settings, conv_state, norm_state

__all__ = ["TextureNet"]


class _ConvBlock(nn.Sequential):
    """3x3, 3x3, 1x1 convolutions, each followed by norm and LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, norm: str, negative_slope: float) -> None:
        act = {"norm": norm, "activation": "leaky_relu", "negative_slope": negative_slope}
        super().__init__(
            ConvNormAct(in_channels, out_channels, 3, **act),
            ConvNormAct(out_channels, out_channels, 3, **act),
            ConvNormAct(out_channels, out_channels, 1, **act),
        )


class _Join(nn.Module):
    """Upsample the coarse result, normalize it and the fine branch, concatenate, convolve."""

    def __init__(self, coarse_channels: int, fine_channels: int, norm: str, negative_slope: float) -> None:
        super().__init__()
        self.coarse_norm = NormAct(make_norm(norm, coarse_channels), activation=None)
        self.fine_norm = NormAct(make_norm(norm, fine_channels), activation=None)
        total = coarse_channels + fine_channels
        self.block = _ConvBlock(total, total, norm, negative_slope)

    def forward(self, coarse: Tensor, fine: Tensor) -> Tensor:
        coarse = TF.interpolate(coarse, scale_factor=2, mode="nearest")
        return self.block(torch.cat([self.coarse_norm(coarse), self.fine_norm(fine)], dim=1))


class TextureNet(nn.Module):
    """``forward(content)`` stylizes (N, 3, H, W) in [0, 1]; with ``content_channels=0``,
    ``forward(None, size=(H, W), seed=...)`` synthesizes a texture from noise alone."""

    arch = "texture"
    # Bounds for the constructor and for model files.
    SETTINGS = (
        Setting("num_scales", int, 1, 10),
        Setting("channels", int, 1, 256),
        Setting("noise_channels", int, 0, 64),
        Setting("content_channels", int, 0, 4),
        Setting("negative_slope", float, 0.0, 1.0),
    )

    def __init__(
        self,
        *,
        num_scales: int = 5,
        channels: int = 8,
        noise_channels: int = 3,
        content_channels: int = 3,
        norm: str = "instance",
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        self.check_inputs(
            num_scales=num_scales, channels=channels, noise_channels=noise_channels,
            content_channels=content_channels, negative_slope=negative_slope,
        )  # fmt: skip
        self._config = {
            "arch": self.arch,
            "num_scales": num_scales,
            "channels": channels,
            "noise_channels": noise_channels,
            "content_channels": content_channels,
            "norm": norm,
            "negative_slope": float(negative_slope),
        }
        in_channels = content_channels + noise_channels
        # branches[k] runs at resolution 1 / 2^k; joins[k] merges scale k + 1 into scale k.
        self.branches = nn.ModuleList(
            _ConvBlock(in_channels, channels, norm, negative_slope) for _ in range(num_scales)
        )
        self.joins = nn.ModuleList(
            _Join(channels * (num_scales - 1 - k), channels, norm, negative_slope) for k in range(num_scales - 1)
        )
        self.head = nn.Conv2d(channels * num_scales, 3, 1)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor's arguments plus ``arch``: JSON-serializable, for model files."""
        return dict(self._config)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TextureNet:
        return cls(**kwargs_from_config(cls, config))

    @classmethod
    def check_inputs(cls, prefix: str = "", **settings: Any) -> None:
        """ValueError naming the setting (after ``prefix``) unless the numeric settings make a generator."""
        check_settings(cls.SETTINGS, settings, prefix)
        if settings["noise_channels"] + settings["content_channels"] == 0:
            raise ValueError(f"TextureNet needs {prefix}noise_channels or {prefix}content_channels (or both) > 0")

    @classmethod
    def state_entries(
        cls, *, num_scales: int, channels: int, noise_channels: int, content_channels: int, norm: str, negative_slope: float
    ) -> dict[str, Entry]:
        """The state dict of ``cls(...)`` with these settings (names, shapes, kinds), derived from
        the settings alone: nothing is built (``negative_slope`` changes no state)."""

        def block(prefix: str, cin: int, cout: int) -> dict[str, Entry]:  # a _ConvBlock
            entries = {}
            for i, (a, b, size) in enumerate([(cin, cout, 3), (cout, cout, 3), (cout, cout, 1)]):
                entries.update(conv_state(f"{prefix}.{i}", a, b, size, norm))
            return entries

        state = {}
        for k in range(num_scales):
            state.update(block(f"branches.{k}", content_channels + noise_channels, channels))
        for k in range(num_scales - 1):
            coarse = channels * (num_scales - 1 - k)
            state.update(norm_state(f"joins.{k}.coarse_norm.norm", norm, coarse))
            state.update(norm_state(f"joins.{k}.fine_norm.norm", norm, channels))
            state.update(block(f"joins.{k}.block", coarse + channels, coarse + channels))
        state["head.weight"] = Entry((3, channels * num_scales, 1, 1))
        state["head.bias"] = Entry((3,))
        return state

    @property
    def num_scales(self) -> int:
        return self._config["num_scales"]

    def noise(
        self, batch_size: int, size: tuple[int, int], generator: torch.Generator | None = None
    ) -> list[Tensor]:
        """Uniform noise for each scale, finest first: (N, noise_channels, H / 2^k, W / 2^k)
        for the padded size of an (H, W) image; drawn on the generator's device."""
        hp, wp = self._padded_size(*size)
        device = generator.device if generator is not None else torch.device("cpu")
        c = self._config["noise_channels"]
        return [
            torch.rand(batch_size, c, hp >> k, wp >> k, generator=generator, device=device)
            for k in range(self.num_scales)
        ]

    def _padded_size(self, h: int, w: int) -> tuple[int, int]:
        m = 1 << (self.num_scales - 1)
        # A multiple of m, with at least 2 x 2 at the coarsest scale (instance norm needs 2 pixels).
        return max(-(-h // m), 2) * m, max(-(-w // m), 2) * m

    def forward(
        self,
        content: Tensor | None = None,
        *,
        size: tuple[int, int] | None = None,
        batch_size: int = 1,
        noise: Sequence[Tensor] | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> Tensor:
        """Stylize ``content`` (N, 3, H, W), or with ``content=None`` synthesize
        ``batch_size`` textures of ``size=(H, W)``. Noise comes from ``noise`` (as returned by
        :meth:`noise`), else is drawn from ``generator`` or a fresh one seeded with ``seed``,
        else from torch's global generator."""
        cc = self._config["content_channels"]
        if content is None:
            if cc:
                raise ValueError(
                    f"this TextureNet stylizes ({cc} content channels): pass content, "
                    "or build it with content_channels=0 to synthesize textures"
                )
            if size is None or len(size) != 2 or min(size) < 1:
                raise ValueError(f"texture synthesis needs size=(H, W) with positive sides, got size={size!r}")
            h, w = int(size[0]), int(size[1])
            n = batch_size
            device, dtype = self.head.weight.device, self.head.weight.dtype
        else:
            if not cc:
                raise ValueError("this TextureNet synthesizes textures (content_channels=0): call it with content=None")
            check_image(content, cc, "content")
            n, _, h, w = content.shape
            device, dtype = content.device, content.dtype
        if seed is not None:
            if generator is not None:
                raise ValueError("pass generator or seed, not both")
            generator = torch.Generator().manual_seed(seed)
        if noise is None:
            noise = self.noise(n, (h, w), generator)
        hp, wp = self._padded_size(h, w)
        expected = [(n, self._config["noise_channels"], hp >> k, wp >> k) for k in range(self.num_scales)]
        if [tuple(z.shape) for z in noise] != expected:
            raise ValueError(f"noise must be tensors of shapes {expected}, got {[tuple(z.shape) for z in noise]}")
        inputs = [z.to(device=device, dtype=dtype) for z in noise]
        if content is not None:
            x = TF.pad(content, (0, wp - w, 0, hp - h), mode="replicate")
            for k in range(self.num_scales):
                scaled = TF.avg_pool2d(x, 1 << k) if k else x  # (N, 3, hp / 2^k, wp / 2^k)
                inputs[k] = torch.cat([scaled, inputs[k]], dim=1)
        y = self.branches[-1](inputs[-1])
        for k in range(self.num_scales - 2, -1, -1):
            y = self.joins[k](y, self.branches[k](inputs[k]))
        return torch.sigmoid(self.head(y)[..., :h, :w])

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._config.items() if k != "arch")
