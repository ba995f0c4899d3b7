"""PerceptualLoss: the content, style and total-variation terms on the features of a frozen extractor.

Every loss is a mean over the batch, so the weights mean the same thing for the optimiser (N = 1) and
for trainers.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

import torch
from torch import nn

from instyle.engine.losses._precision import upcast
from instyle.engine.losses.terms import STYLE_STATS, ContentLoss, StyleLoss, TotalVariationLoss, style_statistic

__all__ = ["FeatureExtractor", "LossTerms", "PerceptualLoss"]


class FeatureExtractor(Protocol):
    """What :class:`PerceptualLoss` needs: ``extractor(images) -> {layer: (N, C, H, W)}`` for ``extractor.layers``.

    :class:`instyle.engine.models.VGGFeatures` is one; tests use a tiny random conv stack with the same interface.
    """

    layers: tuple[str, ...]

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]: ...


class LossTerms(NamedTuple):
    """``total, terms = loss_fn(input, content)``.

    ``terms`` holds the weighted ``"content"``, ``"style"`` and ``"tv"`` terms (``total`` is their sum) and,
    with ``per_layer=True``, the unweighted loss of each layer as ``"content/relu4_2"``, ``"style/relu1_1"``.
    Everything in ``terms`` is detached (for logging); only ``total`` carries gradients.
    """

    total: torch.Tensor
    terms: dict[str, torch.Tensor]


def _check_weight(name: str, value: float) -> float:
    value = float(value)
    if not value >= 0 or value == float("inf"):  # also catches NaN
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def _check_layers(extractor, content_layers: tuple[str, ...], style_layers: tuple[str, ...]) -> None:
    if not content_layers and not style_layers:
        raise ValueError("PerceptualLoss needs at least one content or style layer")
    available = getattr(extractor, "layers", None)
    if available is not None:
        missing = [name for name in content_layers + style_layers if name not in available]
        if missing:
            raise ValueError(f"the extractor does not compute layer(s) {missing}; it has {tuple(available)}")


def _style_images(images: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The styles of :meth:`PerceptualLoss.set_style`'s ``images``, one (1, 3, H, W) tensor each."""
    if isinstance(images, torch.Tensor):
        styles = [images[None]] if images.dim() == 3 else list(images.split(1)) if images.dim() == 4 else None
        if styles is None:
            raise ValueError(f"style images must be (3, H, W) or (S, 3, H, W), got {tuple(images.shape)}")
    else:
        styles = [s[None] if s.dim() == 3 else s for s in images]
        if any(s.dim() != 4 for s in styles):
            raise ValueError("each style image must be (3, H, W) or (S, 3, H, W)")
        styles = [one for s in styles for one in s.split(1)]
    if not styles:
        raise ValueError("set_style needs at least one style image")
    return styles


def _blend(weights: Sequence[float] | None, count: int) -> list[float]:
    """Blend weights of ``count`` styles (default equal), normalized to sum to 1."""
    if weights is None:
        blend = torch.full((count,), 1.0 / count, dtype=torch.float64)
        return blend.tolist()
    blend = torch.tensor([float(w) for w in weights], dtype=torch.float64)
    if blend.numel() != count:
        raise ValueError(f"{count} style images but {blend.numel()} weights")
    if not bool(torch.isfinite(blend).all()) or bool((blend < 0).any()) or float(blend.sum()) <= 0:
        raise ValueError(f"style weights must be finite, >= 0 and not all zero, got {weights!r}")
    return (blend / blend.sum()).tolist()


def _stored_target(name: str, value, stat: str, source: str) -> torch.Tensor:
    """A precomputed style statistic checked and shaped (1, C, C) or (1, 2, C), in at least fp32."""
    t = torch.as_tensor(value)
    t = t[None] if t.dim() == 2 else t
    bad_shape = t.dim() != 3 or t.shape[0] != 1
    bad_shape = bad_shape or (t.shape[1] != t.shape[2] if stat == "gram" else t.shape[1] != 2)
    if bad_shape:
        expected = "(C, C)" if stat == "gram" else "(2, C)"
        raise ValueError(f"{source}: {name} has shape {tuple(value.shape)}, expected {expected}")
    t = upcast(t.detach())
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{source}: {name} has NaN or inf values")
    if stat == "gram" and not torch.allclose(t, t.transpose(1, 2), rtol=1e-5, atol=1e-8):
        raise ValueError(f"{source}: {name} is not symmetric, so not a Gram matrix")
    return t


class PerceptualLoss(nn.Module):
    """Content + style + total-variation loss on the features of a frozen extractor (Gatys et al.; Johnson et al.).

    ``total = content_weight * sum_l w_l * content_loss_l + style_weight * sum_l w_l * style_loss_l
    + tv_weight * total_variation(input)``, with ``w_l = layer_weights.get(layer, 1.0)``. With
    ``mean_std_weight`` > 0 the style term also holds ``mean_std_weight * sum_l w_l * mean_std_loss_l``:
    the per-channel means and stds of the style layers (AdaIN's style loss, what ``instyle score``
    measures) beside the Gram matrices, which weigh them only through their second moments.

    Style targets are set once with :meth:`set_style` and cached (as non-persistent buffers, so ``.to()``
    moves them). Content targets come with each call (``forward(input, content)``, batched for trainers) or are
    cached with :meth:`set_content` (the optimiser). Style targets have batch size 1 and broadcast over the batch.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        content_layers: Sequence[str],
        style_layers: Sequence[str],
        content_weight: float = 1.0,
        style_weight: float = 1.0,
        tv_weight: float = 0.0,
        layer_weights: Mapping[str, float] | None = None,
        style_stat: str = "gram",
        mean_std_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if isinstance(content_layers, str) or isinstance(style_layers, str):
            raise TypeError("content_layers and style_layers must be sequences of layer names, not strings")
        self.content_layers = tuple(dict.fromkeys(content_layers))
        self.style_layers = tuple(dict.fromkeys(style_layers))
        _check_layers(extractor, self.content_layers, self.style_layers)
        if style_stat not in STYLE_STATS:
            raise ValueError(f"style_stat must be one of {STYLE_STATS}, got {style_stat!r}")
        self.content_weight = _check_weight("content_weight", content_weight)
        self.style_weight = _check_weight("style_weight", style_weight)
        self.tv_weight = _check_weight("tv_weight", tv_weight)
        self.mean_std_weight = _check_weight("mean_std_weight", mean_std_weight)
        layer_weights = dict(layer_weights or {})
        stray = [name for name in layer_weights if name not in self.content_layers + self.style_layers]
        if stray:
            raise ValueError(f"layer_weights names layer(s) {stray} that are neither content nor style layers")
        self.layer_weights = {name: _check_weight(f"layer_weights[{name!r}]", w) for name, w in layer_weights.items()}
        self.style_stat = style_stat
        self.extractor = extractor  # registered first: its parameters say where targets belong
        self.content_term = ContentLoss(self.content_layers, self.layer_weights)
        self.style_term = StyleLoss(self.style_layers, self.layer_weights, style_stat)
        self.moment_term = StyleLoss(self.style_layers, self.layer_weights, "mean_std", kind="style_mean_std")
        self.tv_term = TotalVariationLoss()

    @classmethod
    def from_config(cls, config, extractor: FeatureExtractor | None = None) -> PerceptualLoss:
        """The loss a config describes (``content_layers``, ``style_layers``, ``content_weight``,
        ``style_weight``, ``tv_weight``, ``vgg_weights``), a :class:`instyle.engine.config.LossConfig`
        or any config with these fields; without ``extractor``, the VGG ``vgg_weights`` names. A config
        without content layers (texture synthesis) gives a style-only loss."""
        content_layers = tuple(getattr(config, "content_layers", ()))
        style_layers = tuple(config.style_layers)
        if extractor is None:
            from instyle.engine.models.vgg import VGGFeatures

            if config.vgg_weights is None:
                raise ValueError("vgg_weights must name the loss network (a weight source or file), got None")
            extractor = VGGFeatures(content_layers + style_layers, weights=config.vgg_weights)
        return cls(
            extractor,
            content_layers=content_layers,
            style_layers=style_layers,
            content_weight=config.content_weight if content_layers else 0.0,
            style_weight=config.style_weight,
            tv_weight=config.tv_weight,
            mean_std_weight=getattr(config, "mean_std_weight", 0.0),
        )

    # --- targets -------------------------------------------------------------------------------------------
    def _features(self, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        features = self.extractor(images)
        missing = [name for name in layers if name not in features]
        if missing:
            raise ValueError(f"the extractor returned no features for layer(s) {missing}")
        return features

    @torch.no_grad()
    def set_style(
        self, images: torch.Tensor | Sequence[torch.Tensor], weights: Sequence[float] | None = None
    ) -> None:
        """Compute and cache the style targets.

        Args:
            images: one style as (1, 3, H, W) or (3, H, W), several of one size as (S, 3, H, W), or a list of
                styles of any sizes. Each is RGB in [0, 1].
            weights: blend weight of each style (default equal); normalized to sum to 1. The target of each
                layer is the weighted mean of the styles' statistics.
        """
        styles = _style_images(images)
        targets: dict[str, torch.Tensor] = {}
        moments: dict[str, torch.Tensor] = {}
        for style, w in zip(styles, _blend(weights, len(styles))):
            features = self._features(style, self.style_layers)
            for name in self.style_layers:
                stat = style_statistic(features[name], self.style_stat) * w  # (1, ...)
                targets[name] = stat if name not in targets else targets[name] + stat
                stat = style_statistic(features[name], "mean_std") * w
                moments[name] = stat if name not in moments else moments[name] + stat
        self.style_term.store_targets(targets)
        self.moment_term.store_targets(moments)

    @torch.no_grad()
    def set_style_targets(
        self,
        targets: Mapping[str, torch.Tensor],
        *,
        vgg_weights_sha256: str | None,
        stat: str = "gram",
        source: str = "the style targets",
        moments: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        """Use precomputed style statistics (e.g. those stored in a model file) instead of a style image.

        Args:
            targets: layer -> statistic as :func:`style_statistic` computes it, with or without the leading
                batch dimension of 1; Gram (C, C) or mean/std (2, C). Layers this loss does not use are ignored.
            vgg_weights_sha256: the weights the statistics were computed with; must equal the extractor's
                ``weights_sha256`` (an extractor without one, such as a test stand-in, takes only ``None``).
            stat: the statistic of ``targets``; must be this loss's ``style_stat``.
            source: names the targets in error messages.
            moments: the per-channel mean and std of each layer, (2, C), for the ``mean_std_weight`` term
                (stored targets carry none; without them that term cannot be computed).
        """
        self._check_target_source(targets, vgg_weights_sha256, stat, source)
        device = self._target_device()
        ready = {
            name: _stored_target(name, targets[name], self.style_stat, source).to(device) for name in self.style_layers
        }
        self.style_term.store_targets(ready)
        self.moment_term.has_targets = False  # never the statistics of another style
        if moments is not None:
            self.moment_term.store_targets(
                {name: _stored_target(name, moments[name], "mean_std", source).to(device) for name in self.style_layers}
            )

    def _check_target_source(self, targets: Mapping, vgg_weights_sha256: str | None, stat: str, source: str) -> None:
        if stat != self.style_stat:
            raise ValueError(f"{source} are {stat!r} statistics but this loss compares {self.style_stat!r}")
        extractor_sha = getattr(self.extractor, "weights_sha256", None)
        if vgg_weights_sha256 != extractor_sha:
            raise ValueError(
                f"{source} were computed with VGG weights sha256 {vgg_weights_sha256} but this loss uses "
                f"{extractor_sha}; recompute them with the same weights, or use the style image"
            )
        missing = [name for name in self.style_layers if name not in targets]
        if missing:
            raise ValueError(
                f"{source} have no statistics for style layer(s) {missing} (they carry {tuple(targets)}); "
                f"use style layers they carry or targets computed for these layers"
            )

    def _target_device(self) -> torch.device:
        for t in itertools.chain(self.parameters(), self.buffers()):
            return t.device
        return torch.device("cpu")

    @torch.no_grad()
    def set_content(self, images: torch.Tensor) -> None:
        """Cache content targets for calls without ``content`` (the optimiser's single content image)."""
        features = self._features(images, self.content_layers)
        self.content_term.store_targets({name: upcast(features[name].detach()) for name in self.content_layers})

    def style_target(self, layer: str) -> torch.Tensor:
        """The cached style statistic of ``layer``, (1, C, C) for Gram or (1, 2, C) for mean/std."""
        if not self.style_term.has_targets:
            raise RuntimeError("no style targets: call set_style(images) first")
        return self.style_term.target(layer)

    # --- the loss -----------------------------------------------------------------------------------------
    def forward(self, input: torch.Tensor, content: torch.Tensor | None = None, *, per_layer: bool = False) -> LossTerms:
        """Losses of ``input`` (N, 3, H, W) in [0, 1].

        ``content`` (N or 1, 3, H, W) gives the content targets for this call (computed under no_grad); without
        it the targets cached by :meth:`set_content` are used.
        """
        use_content = bool(self.content_layers) and self.content_weight > 0
        use_style = bool(self.style_layers) and self.style_weight > 0
        use_moments = bool(self.style_layers) and self.mean_std_weight > 0
        self._check_ready(use_content, use_style, use_moments, content)
        zero = input.new_zeros((), dtype=torch.float32)
        content_total, style_total, moment_total, layer_losses = zero, zero, zero, {}
        if use_content or use_style or use_moments:
            features = self._features(input, (self.content_layers if use_content else ()) + self.style_layers)
            if use_content:
                content_total, layer_losses = self.content_term(features, self._content_targets(content), zero)
            if use_style:
                style_total, style_layers = self.style_term(features, None, zero)
                layer_losses.update(style_layers)
            if use_moments:
                moment_total, moment_layers = self.moment_term(features, None, zero)
                layer_losses.update(moment_layers)
        tv = self.tv_term(input) if self.tv_weight > 0 else zero
        style = self.style_weight * style_total + self.mean_std_weight * moment_total
        terms = {"content": self.content_weight * content_total, "style": style, "tv": self.tv_weight * tv}
        total = terms["content"] + terms["style"] + terms["tv"]
        if per_layer:
            terms.update(layer_losses)
        return LossTerms(total, {k: v.detach() for k, v in terms.items()})

    def _check_ready(self, use_content: bool, use_style: bool, use_moments: bool, content: torch.Tensor | None) -> None:
        if use_style and not self.style_term.has_targets:
            raise RuntimeError("no style targets: call set_style(images) before computing the loss")
        if use_moments and not self.moment_term.has_targets:
            raise RuntimeError(
                "mean_std_weight: no per-channel means and stds of the style (stored Gram targets carry none); "
                "call set_style(images) or pass moments to set_style_targets"
            )
        if use_content and content is None and not self.content_term.has_targets:
            raise RuntimeError("no content targets: pass content images or call set_content(images) first")

    def _content_targets(self, content: torch.Tensor | None) -> dict[str, torch.Tensor] | None:
        """The content features of this call's ``content`` (no gradients), or None: the cached ones."""
        if content is None:
            return None
        with torch.no_grad():
            return self._features(content, self.content_layers)

    def extra_repr(self) -> str:
        return (
            f"content_layers={self.content_layers}, style_layers={self.style_layers}, "
            f"content_weight={self.content_weight:g}, style_weight={self.style_weight:g}, tv_weight={self.tv_weight:g}, "
            f"style_stat={self.style_stat!r}, mean_std_weight={self.mean_std_weight:g}, layer_weights={self.layer_weights}"
        )
