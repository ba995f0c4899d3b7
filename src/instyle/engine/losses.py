"""Perceptual losses for style transfer: Gram matrices, content, style and total-variation terms.

Every statistic and loss is computed in at least fp32 whatever the feature dtype (bf16 autocast included), and every
loss is a mean over the batch, so the weights mean the same thing for the optimiser (N = 1) and for trainers.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "FeatureExtractor",
    "LossTerms",
    "PerceptualLoss",
    "STYLE_STATS",
    "content_loss",
    "gram_matrix",
    "mean_std",
    "style_loss",
    "style_statistic",
    "total_variation",
]

STYLE_STATS = ("gram", "mean_std")


class FeatureExtractor(Protocol):
    """What :class:`PerceptualLoss` needs: ``extractor(images) -> {layer: (N, C, H, W)}`` for ``extractor.layers``.

    :class:`instyle.engine.models.VGGFeatures` is one; tests use a tiny random conv stack with the same interface.
    """

    layers: tuple[str, ...]

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]: ...


def _no_autocast(tensor: torch.Tensor):
    return torch.autocast(device_type=tensor.device.type, enabled=False)


def _upcast(tensor: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 -> fp32; fp32 and fp64 unchanged."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


# The Gram matrix's reduction runs over every position (65,536 at relu1_1 of a 256 px crop) for a C x C
# result; one GEMM per image then keeps only a few dozen of a GPU's SMs busy (a 1.2 ms fp32 kernel per
# call on an H100, a fifth of a training step). On CUDA the reduction is cut into chunks of about this
# many positions, summed after, where the layout allows it without a copy (channels_last features).
GRAM_SPLIT_POSITIONS = 4096


@contextlib.contextmanager
def _tf32_matmul(enabled: bool):
    """TF32 tensor-core matmuls for fp32 inputs on CUDA inside the block (restored on exit)."""
    matmul = torch.backends.cuda.matmul
    if not enabled:
        yield
        return
    name, value = ("fp32_precision", "tf32") if hasattr(matmul, "fp32_precision") else ("allow_tf32", True)  # torch >= 2.9
    saved = getattr(matmul, name)
    setattr(matmul, name, value)
    try:
        yield
    finally:
        setattr(matmul, name, saved)


def _positions_by_channels(features: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(N, C, H, W) as a matrix without a copy: (N, H*W, C) for channels_last features (True), else (N, C, H*W)."""
    n, c, h, w = features.shape
    if features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous():
        return features.permute(0, 2, 3, 1).reshape(n, h * w, c), True
    return features.reshape(n, c, h * w), False


def _split_chunks(positions: int) -> int:
    """How many chunks the reduction over ``positions`` is cut into: a power of two dividing it."""
    chunks = 1
    while positions % (chunks * 2) == 0 and positions // (chunks * 2) >= GRAM_SPLIT_POSITIONS:
        chunks *= 2
    return chunks


_BMM_OUT_DTYPE = [True]  # whether torch.bmm takes out_dtype here (CUDA, torch >= 2.9); cleared on first failure


def _bmm_fp32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b in fp32 from 16-bit a and b without fp32 copies of them: cuBLAS's 16-bit GEMM with an fp32
    result (``out_dtype``), else TF32 GEMMs on upcast copies. Both are exact in the products (TF32 keeps
    11 significant bits, bf16 has 8 and fp16 11) and sum in fp32: the numbers of an fp32 GEMM, at
    tensor-core speed."""
    if _BMM_OUT_DTYPE[0] and a.is_cuda and a.dtype in (torch.float16, torch.bfloat16):
        try:
            return torch.bmm(a, b, out_dtype=torch.float32)
        except (TypeError, RuntimeError, NotImplementedError):
            _BMM_OUT_DTYPE[0] = False
    with _tf32_matmul(a.is_cuda):
        return torch.bmm(_upcast(a), _upcast(b))


class _HalfGram(torch.autograd.Function):
    """Unnormalized Gram matrix of fp16/bf16 features on CUDA, and of bf16 features on CPUs, in fp32
    (:func:`_bmm_fp32`).

    The backward, dF = (dG + dG^T) F, is one GEMM in the features' dtype with fp32 accumulation (dG
    rounded to it: a gradient already headed for 16 bits), where autograd would run two fp32 GEMMs on
    upcast copies. On the 2-core CPU that made a default `instyle train` step about 1.25x faster
    (128 px crops, batch 4, VGG-19 loss, 2 threads, 2026-11-26; docs/training.md)."""

    @staticmethod
    def forward(ctx, features: torch.Tensor) -> torch.Tensor:
        f, positions_first = _positions_by_channels(features)
        ctx.save_for_backward(features)
        if not f.is_cuda:  # one fp32 copy (a GEMM of two upcast views would make two), one fp32 GEMM
            up = _upcast(f)
            return torch.bmm(up.transpose(1, 2), up) if positions_first else torch.bmm(up, up.transpose(1, 2))
        n, c = features.shape[:2]
        if positions_first:
            chunks = _split_chunks(f.shape[1])
            parts = f.reshape(n * chunks, f.shape[1] // chunks, c)
            gram = _bmm_fp32(parts.transpose(1, 2), parts).reshape(n, chunks, c, c).sum(1)
        else:
            gram = _bmm_fp32(f, f.transpose(1, 2))
        return gram

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (features,) = ctx.saved_tensors
        f, positions_first = _positions_by_channels(features)
        sym = grad + grad.transpose(1, 2)
        with _tf32_matmul(f.is_cuda):
            if f.dtype in (torch.float16, torch.bfloat16):
                sym = sym.to(f.dtype)
            else:
                f = _upcast(f)
                sym = sym.to(f.dtype)
            if positions_first:  # (N, HW, C) @ (N, C, C) -> (N, HW, C), the layout of a channels_last tensor
                out = torch.bmm(f, sym)
                n, c, h, w = features.shape
                return out.reshape(n, h, w, c).permute(0, 3, 1, 2).to(features.dtype)
            return torch.bmm(sym, f).reshape(features.shape).to(features.dtype)


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, C) Gram matrix divided by C*H*W, in fp32 for half-precision input and under autocast
    (fp64 stays fp64). On CUDA, fp16/bf16 features go through 16-bit GEMMs with fp32 results, exact in
    their products; bf16 features on the CPU get the fp32 Gram of their values and a bf16 gradient GEMM
    (:class:`_HalfGram`); channels_last features are read in place."""
    if features.dim() != 4:
        raise ValueError(f"gram_matrix expects features of shape (N, C, H, W), got {tuple(features.shape)}")
    n, c, h, w = features.shape
    with _no_autocast(features):
        if features.dtype == torch.bfloat16 or (features.is_cuda and features.dtype == torch.float16):
            return _HalfGram.apply(features) / (c * h * w)
        f, positions_first = _positions_by_channels(_upcast(features))
        gram = torch.bmm(f.transpose(1, 2), f) if positions_first else torch.bmm(f, f.transpose(1, 2))
        return gram / (c * h * w)


def mean_std(features: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(N, C, H, W) -> (N, 2, C): per-channel mean and std (sqrt(var + eps), biased var), in fp32."""
    if features.dim() != 4:
        raise ValueError(f"mean_std expects features of shape (N, C, H, W), got {tuple(features.shape)}")
    with _no_autocast(features):
        var, mean = torch.var_mean(_upcast(features).flatten(2), dim=2, correction=0)  # two-pass, (N, C)
        return torch.stack([mean, (var + eps).sqrt()], dim=1)


def style_statistic(features: torch.Tensor, stat: str = "gram") -> torch.Tensor:
    """The statistic the style loss compares: ``"gram"`` (N, C, C) or ``"mean_std"`` (N, 2, C)."""
    if stat == "gram":
        return gram_matrix(features)
    if stat == "mean_std":
        return mean_std(features)
    raise ValueError(f"style_stat must be one of {STYLE_STATS}, got {stat!r}")


def _mse(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with _no_autocast(input):
        input = _upcast(input)
        return F.mse_loss(input, target.to(input.dtype).expand_as(input))


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between feature maps, in fp32; ``target`` broadcasts over the batch."""
    if features.shape[1:] != target.shape[1:] or target.shape[0] not in (1, features.shape[0]):
        raise ValueError(
            f"content features {tuple(features.shape)} and target {tuple(target.shape)} differ; content images "
            f"must have the input's size and batch size 1 or N"
        )
    return _mse(features, target)


def style_loss(features: torch.Tensor, target: torch.Tensor, stat: str = "gram") -> torch.Tensor:
    """Mean squared error between ``style_statistic(features, stat)`` and ``target``, a statistic of the style
    (shape (1, ...) broadcasts over the batch)."""
    return _mse(style_statistic(features, stat), target)


def total_variation(images: torch.Tensor, p: int = 1) -> torch.Tensor:
    """Mean |x[i+1, j] - x[i, j]|^p + mean |x[i, j+1] - x[i, j]|^p over (N, C, H, W), in fp32.

    ``p=1`` is anisotropic total variation; ``p=2`` the smoother squared variant of Johnson et al.
    """
    if images.dim() != 4:
        raise ValueError(f"total_variation expects images of shape (N, C, H, W), got {tuple(images.shape)}")
    if p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    with _no_autocast(images):
        x = _upcast(images)
        dh = x[..., 1:, :] - x[..., :-1, :]
        dw = x[..., :, 1:] - x[..., :, :-1]
        if p == 1:
            return dh.abs().mean() + dw.abs().mean()
        return dh.square().mean() + dw.square().mean()


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


class PerceptualLoss(nn.Module):
    """Content + style + total-variation loss on the features of a frozen extractor (Gatys et al.; Johnson et al.).

    ``total = content_weight * sum_l w_l * content_loss_l + style_weight * sum_l w_l * style_loss_l
    + tv_weight * total_variation(input)``, with ``w_l = layer_weights.get(layer, 1.0)``.

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
    ) -> None:
        super().__init__()
        if isinstance(content_layers, str) or isinstance(style_layers, str):
            raise TypeError("content_layers and style_layers must be sequences of layer names, not strings")
        self.content_layers = tuple(dict.fromkeys(content_layers))
        self.style_layers = tuple(dict.fromkeys(style_layers))
        if not self.content_layers and not self.style_layers:
            raise ValueError("PerceptualLoss needs at least one content or style layer")
        available = getattr(extractor, "layers", None)
        if available is not None:
            missing = [name for name in self.content_layers + self.style_layers if name not in available]
            if missing:
                raise ValueError(f"the extractor does not compute layer(s) {missing}; it has {tuple(available)}")
        if style_stat not in STYLE_STATS:
            raise ValueError(f"style_stat must be one of {STYLE_STATS}, got {style_stat!r}")
        self.content_weight = _check_weight("content_weight", content_weight)
        self.style_weight = _check_weight("style_weight", style_weight)
        self.tv_weight = _check_weight("tv_weight", tv_weight)
        layer_weights = dict(layer_weights or {})
        stray = [name for name in layer_weights if name not in self.content_layers + self.style_layers]
        if stray:
            raise ValueError(f"layer_weights names layer(s) {stray} that are neither content nor style layers")
        self.layer_weights = {name: _check_weight(f"layer_weights[{name!r}]", w) for name, w in layer_weights.items()}
        self.style_stat = style_stat
        self.extractor = extractor
        self._has_style = False
        self._has_content = False

    @classmethod
    def from_config(cls, config, extractor: FeatureExtractor | None = None) -> PerceptualLoss:
        """The loss a config describes (``content_layers``, ``style_layers``, ``content_weight``,
        ``style_weight``, ``tv_weight``, ``vgg_weights``); without ``extractor``, the VGG it needs.
        A config without content layers (texture synthesis) gives a style-only loss."""
        content_layers = tuple(getattr(config, "content_layers", ()))
        style_layers = tuple(config.style_layers)
        if extractor is None:
            from instyle.engine.models.vgg import VGGFeatures

            extractor = VGGFeatures(content_layers + style_layers, weights=config.vgg_weights or "default")
        return cls(
            extractor,
            content_layers=content_layers,
            style_layers=style_layers,
            content_weight=config.content_weight if content_layers else 0.0,
            style_weight=config.style_weight,
            tv_weight=config.tv_weight,
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
        if weights is None:
            blend = torch.full((len(styles),), 1.0 / len(styles), dtype=torch.float64)
        else:
            blend = torch.tensor([float(w) for w in weights], dtype=torch.float64)
            if blend.numel() != len(styles):
                raise ValueError(f"{len(styles)} style images but {blend.numel()} weights")
            if not bool(torch.isfinite(blend).all()) or bool((blend < 0).any()) or float(blend.sum()) <= 0:
                raise ValueError(f"style weights must be finite, >= 0 and not all zero, got {weights!r}")
            blend = blend / blend.sum()

        targets: dict[str, torch.Tensor] = {}
        for style, w in zip(styles, blend.tolist()):
            features = self._features(style, self.style_layers)
            for name in self.style_layers:
                stat = style_statistic(features[name], self.style_stat) * w  # (1, ...)
                targets[name] = stat if name not in targets else targets[name] + stat
        self._store_style(targets)

    def _store_style(self, targets: Mapping[str, torch.Tensor]) -> None:
        for name in self.style_layers:
            self.register_buffer(f"style_target_{name}", targets[name].detach(), persistent=False)
        self._has_style = True

    @torch.no_grad()
    def set_style_targets(
        self,
        targets: Mapping[str, torch.Tensor],
        *,
        vgg_weights_sha256: str | None,
        stat: str = "gram",
        source: str = "the style targets",
    ) -> None:
        """Use precomputed style statistics (e.g. those stored in a model file) instead of a style image.

        Args:
            targets: layer -> statistic as :func:`style_statistic` computes it, with or without the leading
                batch dimension of 1; Gram (C, C) or mean/std (2, C). Layers this loss does not use are ignored.
            vgg_weights_sha256: the weights the statistics were computed with; must equal the extractor's
                ``weights_sha256`` (an extractor without one, such as a test stand-in, takes only ``None``).
            stat: the statistic of ``targets``; must be this loss's ``style_stat``.
            source: names the targets in error messages.
        """
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
        ready = {}
        for name in self.style_layers:
            t = torch.as_tensor(targets[name])
            t = t[None] if t.dim() == 2 else t
            bad_shape = t.dim() != 3 or t.shape[0] != 1
            if self.style_stat == "gram":
                bad_shape = bad_shape or t.shape[1] != t.shape[2]
            else:
                bad_shape = bad_shape or t.shape[1] != 2
            if bad_shape:
                expected = "(C, C)" if self.style_stat == "gram" else "(2, C)"
                raise ValueError(f"{source}: {name} has shape {tuple(targets[name].shape)}, expected {expected}")
            t = _upcast(t.detach())
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{source}: {name} has NaN or inf values")
            if self.style_stat == "gram" and not torch.allclose(t, t.transpose(1, 2), rtol=1e-5, atol=1e-8):
                raise ValueError(f"{source}: {name} is not symmetric, so not a Gram matrix")
            ready[name] = t.to(self._target_device())
        self._store_style(ready)

    def _target_device(self) -> torch.device:
        for t in itertools.chain(self.parameters(), self.buffers()):
            return t.device
        return torch.device("cpu")

    @torch.no_grad()
    def set_content(self, images: torch.Tensor) -> None:
        """Cache content targets for calls without ``content`` (the optimiser's single content image)."""
        features = self._features(images, self.content_layers)
        for name in self.content_layers:
            self.register_buffer(f"content_target_{name}", _upcast(features[name].detach()), persistent=False)
        self._has_content = True

    def style_target(self, layer: str) -> torch.Tensor:
        """The cached style statistic of ``layer``, (1, C, C) for Gram or (1, 2, C) for mean/std."""
        if not self._has_style:
            raise RuntimeError("no style targets: call set_style(images) first")
        return getattr(self, f"style_target_{layer}")

    # --- the loss -----------------------------------------------------------------------------------------
    def forward(self, input: torch.Tensor, content: torch.Tensor | None = None, *, per_layer: bool = False) -> LossTerms:
        """Losses of ``input`` (N, 3, H, W) in [0, 1].

        ``content`` (N or 1, 3, H, W) gives the content targets for this call (computed under no_grad); without
        it the targets cached by :meth:`set_content` are used.
        """
        use_content = bool(self.content_layers) and self.content_weight > 0
        use_style = bool(self.style_layers) and self.style_weight > 0
        if use_style and not self._has_style:
            raise RuntimeError("no style targets: call set_style(images) before computing the loss")
        if use_content and content is None and not self._has_content:
            raise RuntimeError("no content targets: pass content images or call set_content(images) first")

        zero = input.new_zeros((), dtype=torch.float32)
        layer_losses: dict[str, torch.Tensor] = {}
        content_total, style_total = zero, zero
        if use_content or use_style:
            features = self._features(input, (self.content_layers if use_content else ()) + self.style_layers)
            if use_content:
                if content is not None:
                    with torch.no_grad():
                        targets = self._features(content, self.content_layers)
                else:
                    targets = {name: getattr(self, f"content_target_{name}") for name in self.content_layers}
                for name in self.content_layers:
                    loss = content_loss(features[name], targets[name].detach())
                    layer_losses[f"content/{name}"] = loss
                    content_total = content_total + self.layer_weights.get(name, 1.0) * loss
            if use_style:
                for name in self.style_layers:
                    target = self.style_target(name)
                    if target.shape[-1] != features[name].shape[1]:
                        raise ValueError(
                            f"the style target of {name} is for {target.shape[-1]} channels but the extractor gives "
                            f"{features[name].shape[1]}: targets and extractor do not belong together"
                        )
                    loss = style_loss(features[name], target, self.style_stat)
                    layer_losses[f"style/{name}"] = loss
                    style_total = style_total + self.layer_weights.get(name, 1.0) * loss
        tv = total_variation(input) if self.tv_weight > 0 else zero
        content_term = self.content_weight * content_total
        style_term = self.style_weight * style_total
        tv_term = self.tv_weight * tv
        terms = {"content": content_term, "style": style_term, "tv": tv_term}
        if per_layer:
            terms.update(layer_losses)
        return LossTerms(content_term + style_term + tv_term, {k: v.detach() for k, v in terms.items()})

    def extra_repr(self) -> str:
        return (
            f"content_layers={self.content_layers}, style_layers={self.style_layers}, "
            f"content_weight={self.content_weight:g}, style_weight={self.style_weight:g}, tv_weight={self.tv_weight:g}, "
            f"style_stat={self.style_stat!r}, layer_weights={self.layer_weights}"
        )
