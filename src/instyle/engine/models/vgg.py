"""A frozen VGG-16/19 feature extractor (Simonyan & Zisserman, 2015) that returns activations by layer name."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from instyle.engine.weights import ARCH_BLOCKS, CONVENTIONS, VGGWeights, resolve_vgg_weights

__all__ = ["VGGFeatures", "vgg_layer_names"]


def vgg_layer_names(arch: str = "vgg16") -> list[str]:
    """Every layer name of ``arch`` in network order: ``conv1_1, relu1_1, conv1_2, relu1_2, pool1, conv2_1, ...``."""
    if arch not in ARCH_BLOCKS:
        raise ValueError(f"unknown VGG architecture {arch!r}; expected one of {sorted(ARCH_BLOCKS)}")
    names: list[str] = []
    for block, widths in enumerate(ARCH_BLOCKS[arch], 1):
        for i in range(1, len(widths) + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


class VGGFeatures(nn.Module):
    """Activations of the requested VGG layers for RGB images in [0, 1], shape (N, 3, H, W).

    The input convention of the weights (Caffe BGR 0-255 minus mean, or torchvision ImageNet mean/std) is
    applied inside, so every caller passes the same images. Only the layers up to the deepest requested one
    are built and run. The network is frozen: parameters never require grad and it stays in eval mode, but
    gradients flow to the input.

    Args:
        layers: names such as ``"relu4_2"``, ``"conv1_1"`` or ``"pool3"`` (see :func:`vgg_layer_names`).
        weights: ``"default"`` (``$INSTYLE_VGG_WEIGHTS`` or the HED VGG-16, fetched once), a path to a weight
            file, a loaded :class:`~instyle.engine.weights.VGGWeights`, or ``None`` for a randomly initialized net.
        arch: ``"vgg16"`` or ``"vgg19"``; taken from the weights when they are given.
        pooling: ``"max"`` (as trained) or ``"avg"`` (Gatys et al. report smoother results for synthesis).
        convention: input convention of a random net (``weights=None``); default ``"torchvision"``.
        download: whether ``weights="default"`` may download the weights when they are not cached.
    """

    def __init__(
        self,
        layers: Sequence[str],
        weights: str | os.PathLike | VGGWeights | None = "default",
        *,
        arch: str | None = None,
        pooling: str = "max",
        convention: str | None = None,
        download: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(layers, str):
            raise TypeError(f"layers must be a sequence of layer names, not the string {layers!r}")
        requested = tuple(dict.fromkeys(layers))  # de-duplicated, order kept
        if not requested:
            raise ValueError("layers is empty; request at least one layer such as 'relu4_2'")
        if pooling not in ("max", "avg"):
            raise ValueError(f"pooling must be 'max' or 'avg', got {pooling!r}")

        loaded: VGGWeights | None
        if weights is None:
            loaded = None
            arch = arch or "vgg16"
            convention = convention or "torchvision"
        else:
            loaded = weights if isinstance(weights, VGGWeights) else resolve_vgg_weights(weights, download=download)
            if arch is not None and arch != loaded.arch:
                raise ValueError(f"arch={arch!r} but the weights in {loaded.source} are {loaded.arch}")
            if convention is not None and convention != loaded.convention:
                raise ValueError(f"convention={convention!r} but {loaded.source} uses {loaded.convention!r}")
            arch, convention = loaded.arch, loaded.convention
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {sorted(CONVENTIONS)}, got {convention!r}")

        all_names = vgg_layer_names(arch)
        unknown = [name for name in requested if name not in all_names]
        if unknown:
            raise ValueError(f"unknown {arch} layer(s) {unknown}; valid names: {', '.join(all_names)}")
        depth = max(all_names.index(name) for name in requested) + 1

        self.arch = arch
        self.layers = requested
        self.pooling = pooling
        self.convention = convention
        self.weights_source = loaded.source if loaded else None
        self.weights_sha256 = loaded.sha256 if loaded else None
        self._sequence = all_names[:depth]  # the layers that run
        self._min_size = 2 ** sum(name.startswith("pool") for name in all_names[: depth - 1])

        c_in = 3
        widths = iter(w for block in ARCH_BLOCKS[arch] for w in block)
        for name in self._sequence:
            if name.startswith("conv"):
                c_out = next(widths)
                conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # as torchvision
                nn.init.zeros_(conv.bias)
                self.add_module(name, conv)
                c_in = c_out
        if loaded is not None:
            own = self.state_dict()
            self.load_state_dict({k: loaded.state_dict[k] for k in own}, strict=True)

        c = CONVENTIONS[convention]
        self._bgr = c["bgr"]
        # (x - mean / scale) * (scale / std) == (x * scale - mean) / std, with x in [0, 1]
        shift = torch.tensor(c["mean"]) / c["scale"]
        mult = c["scale"] / torch.tensor(c["std"])
        self.register_buffer("input_shift", shift.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_mult", mult.view(1, 3, 1, 1), persistent=False)

        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatures:
        """Stays in eval mode: the extractor is frozen whatever its parent does."""
        return super().train(False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] to the weights' input convention."""
        if self._bgr:
            images = images.flip(1)  # RGB -> BGR
        return (images - self.input_shift) * self.input_mult

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"VGGFeatures expects RGB images of shape (N, 3, H, W), got {shape}")
        if not images.is_floating_point():
            raise TypeError(f"VGGFeatures expects float images in [0, 1], got dtype {images.dtype}")
        if min(images.shape[-2:]) < self._min_size:
            raise ValueError(
                f"images of size {tuple(images.shape[-2:])} are too small for layer {self._sequence[-1]}: "
                f"need at least {self._min_size}x{self._min_size}"
            )
        x = self.normalize(images).to(self.input_shift.dtype)
        wanted = set(self.layers)
        found: dict[str, torch.Tensor] = {}
        for name in self._sequence:
            if name.startswith("conv"):
                x = getattr(self, name)(x)
            elif name.startswith("relu"):
                # In place unless the conv output before it was requested (it would be overwritten).
                x = F.relu(x, inplace="conv" + name[4:] not in wanted)
            elif self.pooling == "max":
                x = F.max_pool2d(x, kernel_size=2, stride=2)
            else:
                x = F.avg_pool2d(x, kernel_size=2, stride=2)
            if name in wanted:
                found[name] = x
        return {name: found[name] for name in self.layers}

    def extra_repr(self) -> str:
        weights = "random" if self.weights_source is None else f"{self.weights_source!r} (sha256 {self.weights_sha256[:12]})"
        return (
            f"arch={self.arch}, layers={self.layers}, pooling={self.pooling!r}, "
            f"convention={self.convention!r}, weights={weights}"
        )
