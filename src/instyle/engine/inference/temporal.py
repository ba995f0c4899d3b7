"""Temporal consistency for video (issue #20, part 2): what one frame passes to the next.

Stylized frame by frame, a video flickers: small changes between frames (noise, compression, light)
move each instance norm's per-frame statistics, and with them every stroke. Two remedies, each kept
by :class:`instyle.engine.inference.video.TemporalStylizer` between batches and forgotten in ``reset()``:

- ``"stats"``: **carried instance-norm statistics**. Each instance norm of the generator normalizes a
  frame with an exponential moving average of the statistics of the frames so far instead of the
  frame's own: the pooled mean and variance (the first two moments averaged, so a moving mean widens
  the variance rather than leaving it short) with weight ``smoothing`` on the past. A scene cut,
  where the first instance norm's statistics jump (:func:`stats_jump` over :data:`CUT_JUMP`), starts
  the average afresh. The statistics are taken in fp32 from the layer's input and given to the layer
  as its frozen statistics (``NormAct.frozen_stats``, as tiling gives whole-image ones), so the fused
  norm, residual and ReLU run as usual; the generator is a private copy with hooks, so the model
  itself, shared with photos, is untouched. Frames run untiled (one at a time, as photos do). For
  AdaIN (``--style PAINTING``) the statistics are the frame's relu4_1 mean and std, carried the same
  way through :meth:`AdaINModel.stylize`'s ``content_stats`` (tiled or not).
- ``"flow"``: **the output carried along optical flow** (:class:`FlowBlend`). The previous output
  frame, warped onto this one along the input frames' flow (OpenCV's DIS, from
  ``opencv-python-headless``), replaces the stylized frame where the flow holds, as far as its strokes
  kept their detail, and at least with weight ``blend``. The flow does not hold where the forward and
  backward flows disagree (occlusions, Sundaram et al. 2010) or where the warped input frame differs
  from the frame (cuts, flashes): new content takes the new frame's strokes.

The measurements that chose the defaults are in ``docs/video.md`` (``benchmarks/bench_video.py``).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import Tensor

from instyle.engine.inference.adain import EPS as ADAIN_EPS
from instyle.engine.inference.stylize import StyleModel
from instyle.engine.models.blocks import NormAct

__all__ = [
    "TEMPORAL", "DEFAULT_TEMPORAL", "DEFAULT_SMOOTHING", "DEFAULT_BLEND", "CUT_JUMP", "CarriedStats", "FlowBlend",
    "adain_carry", "agreement", "carrying_generator", "check_temporal", "consistent", "crispness", "optical_flow",
    "stats_jump", "warp",
]  # fmt: skip

TEMPORAL = ("none", "stats", "flow")
DEFAULT_TEMPORAL = "flow"
DEFAULT_SMOOTHING = 0.9
DEFAULT_BLEND = 0.0
# stats_jump between consecutive frames above which a scene cut restarts the average: with
# starry_night's first norm, consecutive frames of geese, road and bunny jump 0.002-0.012 (median),
# 0.105 at most (road's fastest pan); bunny's cut at its frame 235 jumps 0.43 (2026-12-06)
CUT_JUMP = 0.2
# |warped previous input - input| (grey levels, 0..255) above which a pixel takes the new frame only
PHOTOMETRIC_LIMIT = 24.0
# DIS needs a frame 12 px wide or high; smaller frames go frame by frame
MIN_FLOW_SIDE = 12
# crispness: detail below DETAIL_SIGMA px, its energy over ENERGY_SIGMA px, of the warped previous
# output over the new frame's: kept whole from CRISP_LIMITS[1], worn soft at CRISP_LIMITS[0] or less.
# Two equally crisp stroke patterns differ in local energy by chance: the first limits, (0.7, 1.0),
# refused in part 60 % of the exact pan's trusted pixels and 26 % to 32 % of the real clips', each
# refusal a stroke redrawn (docs/video.md, "Choosing the remedy")
DETAIL_SIGMA, ENERGY_SIGMA = 2.0, 4.0
CRISP_LIMITS = (0.2, 0.5)
# agreement: the colours of the warped output and the new stylized frame at ENERGY_SIGMA px, 10 and
# 25 levels apart in 255 (geese.mp4's rippling water drags strokes 10-40 levels off; docs/video.md)
AGREE_LIMITS = (0.04, 0.10)


def check_temporal(temporal: str, smoothing: float, blend: float) -> None:
    """ValueError naming ``temporal``, ``smoothing`` or ``blend``."""
    if temporal not in TEMPORAL:
        raise ValueError(f"temporal must be one of {', '.join(TEMPORAL)}, got {temporal!r}")
    for name, value in (("smoothing", smoothing), ("blend", blend)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or not 0 <= value <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")


# ---------------------------------------------------------------------------- carried statistics


def stats_jump(mean: Tensor, var: Tensor, before_mean: Tensor, before_var: Tensor, eps: float = 1e-5) -> float:
    """How far one frame's per-channel statistics are from the frame before: the mean shift in
    standard deviations plus the change of log standard deviation, each averaged over channels."""
    shift = ((mean - before_mean).abs() / (before_var + eps).sqrt()).mean()
    spread = 0.5 * ((var + eps) / (before_var + eps)).log().abs().mean()
    return float(shift + spread)


class CarriedStats:
    """The statistics of each instance norm, averaged over a video's frames.

    For each frame :meth:`begin_frame`, then :meth:`carry` once per instance norm, in the order the
    network runs them: the frame's own (mean, var), each (C,) fp32, in; those to normalize with
    out. The first norm's jump from the frame before decides a scene cut."""

    def __init__(self, smoothing: float, cut: float = CUT_JUMP) -> None:
        self.smoothing, self.cut = smoothing, cut
        self.reset()

    def reset(self) -> None:
        self.layers: list[tuple[Tensor, Tensor]] = []  # (mean, var) carried, per norm
        self.first: tuple[Tensor, Tensor] | None = None  # the first norm's own, of the last frame
        self.frames = self.cuts = 0
        self.slot, self.fresh = 0, True

    def begin_frame(self) -> None:
        self.slot = 0
        self.frames += 1

    def carry(self, mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
        slot, self.slot = self.slot, self.slot + 1
        if slot == 0:
            before, self.first = self.first, (mean, var)
            self.fresh = before is None or before[0].shape != mean.shape or stats_jump(mean, var, *before) > self.cut
            self.cuts += int(self.fresh and before is not None)
        if self.fresh or slot >= len(self.layers):
            del self.layers[slot:]
            self.layers.append((mean, var))
            return mean, var
        past_mean, past_var = self.layers[slot]
        a = self.smoothing
        new_mean = a * past_mean + (1 - a) * mean
        # pooled: average the second moments, then take the variance about the new mean
        second = a * (past_var + past_mean.square()) + (1 - a) * (var + mean.square())
        new_var = (second - new_mean.square()).clamp_min(0)
        self.layers[slot] = (new_mean, new_var)
        return new_mean, new_var


def carrying_generator(model: StyleModel, carried: CarriedStats) -> StyleModel:
    """A private copy of ``model`` whose instance norms normalize with ``carried``'s statistics."""
    generator = copy.deepcopy(model.generator)
    layers = [m for m in generator.modules() if isinstance(m, NormAct) and m.uses_input_stats]
    if not layers:
        raise ValueError(f"temporal: model {model.name!r} has no instance norm to carry statistics of; use flow or none")

    def begin(module, args) -> None:
        carried.begin_frame()

    def norm(module: NormAct, args) -> None:
        x = args[0]
        if x.shape[0] != 1:  # StyleModel.stylize runs one image at a time
            raise RuntimeError(f"carried statistics take one frame at a time, got a batch of {x.shape[0]}")
        var, mean = torch.var_mean(x.float(), dim=tuple(range(2, x.dim())), correction=0)
        module.frozen_stats = carried.carry(mean[0], var[0])

    # plain functions, not bound methods: deepcopy (StyleModel's bf16 copy) keeps them as they are
    generator.register_forward_pre_hook(begin)
    for layer in layers:
        layer.register_forward_pre_hook(norm)
    private = StyleModel(generator, model.metadata, model.name, model.source)
    private.cuda_graphs = False  # a replayed graph would skip the hooks
    return private


def adain_carry(carried: CarriedStats):
    """AdaINModel.stylize's ``content_stats``: each frame's relu4_1 statistics through ``carried``."""

    def carry(mean: Tensor, std: Tensor) -> tuple[Tensor, Tensor]:
        carried.begin_frame()
        new_mean, new_var = carried.carry(mean[0], std[0].square() - ADAIN_EPS)
        return new_mean[None], (new_var.clamp_min(0) + ADAIN_EPS).sqrt()[None]

    return carry


# ---------------------------------------------------------------------------- optical flow


def _cv2():
    try:
        import cv2
    except ImportError as error:  # a dependency; a broken install says so plainly
        raise RuntimeError(f"temporal flow needs OpenCV (pip install opencv-python-headless): {error}") from None
    return cv2


def optical_flow(dis, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The flow (H, W, 2) float32 from grey ``first`` to grey ``second`` (uint8 (H, W)) by ``dis``:
    pixel x of ``first`` is at x + flow[x] in ``second``. OpenCV's own error becomes a RuntimeError."""
    try:
        return dis.calc(first, second, None)
    except _cv2().error as error:
        raise RuntimeError(f"optical flow failed on a {first.shape[1]} x {first.shape[0]} frame: {error}") from None


def warp(image: np.ndarray, flow: np.ndarray, *, cubic: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``image`` read at x + flow[x] (bilinear, or bicubic), and where that lies inside the image (bool (H, W))."""
    cv2 = _cv2()
    h, w = flow.shape[:2]
    xs = np.arange(w, dtype=np.float32)[None, :] + flow[..., 0]
    ys = np.arange(h, dtype=np.float32)[:, None] + flow[..., 1]
    inside = (xs >= 0) & (xs <= w - 1) & (ys >= 0) & (ys <= h - 1)
    method = cv2.INTER_CUBIC if cubic else cv2.INTER_LINEAR
    return cv2.remap(image, xs, ys, method, borderMode=cv2.BORDER_REPLICATE), inside


def consistent(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Where the flow ``backward`` (frame t to t-1) is trusted: it lands inside frame t-1 and the
    flow ``forward`` (t-1 to t) there brings it back (Sundaram et al. 2010, as Ruder et al. 2016 and
    Lai et al. 2018 mark occlusions): |b + f(x + b)|^2 <= 0.01 (|b|^2 + |f(x + b)|^2) + 0.5."""
    back_again, inside = warp(forward, backward)
    error = np.square(backward + back_again).sum(-1)
    bound = 0.01 * (np.square(backward).sum(-1) + np.square(back_again).sum(-1)) + 0.5
    return inside & (error <= bound)


def _detail(grey: np.ndarray) -> np.ndarray:
    """The local energy of an image's fine detail (its strokes): the square of what a blur of
    DETAIL_SIGMA px takes away, averaged over ENERGY_SIGMA px."""
    cv2 = _cv2()
    fine = grey - cv2.GaussianBlur(grey, (0, 0), DETAIL_SIGMA)
    return cv2.GaussianBlur(fine * fine, (0, 0), ENERGY_SIGMA) + 1e-6


def crispness(warped: np.ndarray, stylized: np.ndarray, limits: tuple[float, float] = CRISP_LIMITS) -> np.ndarray:
    """Per pixel, 0..1: how much of the stylized frame's fine detail the warped previous output
    kept (1: ``limits[1]`` of its local energy or more; 0: at most ``limits[0]``, blurred by
    resampling or averaging)."""
    cv2 = _cv2()
    soft, crisp = limits
    ratio = _detail(cv2.cvtColor(warped, cv2.COLOR_RGB2GRAY)) / _detail(cv2.cvtColor(stylized, cv2.COLOR_RGB2GRAY))
    return np.clip((ratio - soft) / (crisp - soft), 0, 1)


def agreement(warped: np.ndarray, stylized: np.ndarray) -> np.ndarray:
    """Per pixel, 0..1: whether the warped previous output still has the stylized frame's colours
    at the scale of the strokes (ENERGY_SIGMA px): 1 within AGREE_LIMITS[0] (mean over the channels,
    in [0, 1]), 0 past AGREE_LIMITS[1]. Strokes dragged along a flow that follows no real motion
    (rippling water) drift off the picture's colours, and the new frame's take over there."""
    cv2 = _cv2()
    near, far = AGREE_LIMITS
    apart = np.abs(cv2.GaussianBlur(warped, (0, 0), ENERGY_SIGMA) - cv2.GaussianBlur(stylized, (0, 0), ENERGY_SIGMA)).mean(-1)
    return np.clip((far - apart) / (far - near), 0, 1)


class FlowBlend:
    """One video's output frames carried along the input's optical flow.

    Where the flow is trusted, the previous output frame warped onto this one (bicubic) replaces
    the stylized frame as far as it kept its strokes' detail (:func:`crispness`) and the picture's
    colours (:func:`agreement`), and at least with weight ``blend``: ``out = s + m (warp(prev) - s)``,
    ``m = blend + (1 - blend) crispness agreement``. So strokes move with the picture instead of
    being drawn anew each frame, and where resampling has worn them soft or the flow dragged them
    off the picture the new frame's strokes take over; averaging two stroke patterns everywhere (a
    plain blend) flattens the texture (docs/video.md, "Choosing the remedy")."""

    def __init__(self, blend: float, crisp: tuple[float, float] = CRISP_LIMITS) -> None:
        cv2 = _cv2()
        self.blend, self.crisp = blend, crisp
        self.dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self.reset()

    def reset(self) -> None:
        self.grey: np.ndarray | None = None
        self.previous: np.ndarray | None = None  # the last output, float32 (H, W, 3) in [0, 1]
        self.weight: np.ndarray | None = None  # the last frame's weight of the carried frame, (H, W)

    def trusted(self, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The flow from this frame to the last one, and where it holds: forward and backward agree
        and the last frame, warped, looks like this one (a cut or a flash does not)."""
        backward = optical_flow(self.dis, grey, self.grey)
        forward = optical_flow(self.dis, self.grey, grey)
        seen, _ = warp(self.grey, backward)
        return backward, consistent(backward, forward) & (np.abs(seen.astype(np.float32) - grey) <= PHOTOMETRIC_LIMIT)

    def __call__(self, frame: np.ndarray, stylized: np.ndarray) -> np.ndarray:
        """``stylized`` (float32 (H, W, 3) in [0, 1]) of the input ``frame`` (uint8 (H, W, 3)), carried."""
        grey = _cv2().cvtColor(frame, _cv2().COLOR_RGB2GRAY)
        out, self.weight = stylized, None
        if self.grey is not None and self.grey.shape == grey.shape and max(grey.shape) >= MIN_FLOW_SIDE:
            backward, trusted = self.trusted(grey)
            warped = warp(self.previous, backward, cubic=True)[0]
            kept = crispness(warped, stylized, self.crisp) * agreement(warped, stylized)
            weight = self.weight = trusted * (self.blend + (1 - self.blend) * kept)
            out = np.clip(stylized + weight[..., None] * (warped - stylized), 0, 1)  # bicubic overshoots
        self.grey, self.previous = grey, out
        return out
