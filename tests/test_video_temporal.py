"""Temporal consistency of instyle video (issue #20, part 2): carried instance-norm statistics
("stats") and the output carried along optical flow ("flow"), on small synthesized clips; the serve
page's clip is in test_serve.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from instyle.engine.inference.adain import load_adain
from instyle.engine.inference.stylize import load_model
from instyle.engine.image import load_image, resize_long_side
from instyle.engine.inference.temporal import (
    DEFAULT_TEMPORAL, CarriedStats, FlowBlend, agreement, consistent, crispness, warp,
)  # fmt: skip
from instyle.engine.inference.video import FrameStylizer, TemporalStylizer, frames_to_pixels, stylize_video, video_stylizer
from instyle.engine.modelfile import save_model
from instyle.engine.models import TransformerNet
from instyle.engine.models.adain import AdaINDecoder
from instyle.engine.models.blocks import NormAct

from .test_cli import run_cli
from .test_video import make_clip, read_clip

CPU = dict(device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(TransformerNet(width=0.25, num_residual=1), path, {"style_name": "tiny"})
    return load_model(path)


def _texture(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth colour gradients with noise: uint8 (h, w, 3)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(7 * xs + seed), np.cos(5 * ys - seed), np.sin(4 * (xs + ys))], -1) * 0.35 + 0.5
    return np.clip((base + rng.normal(0, 0.08, base.shape)) * 255, 0, 255).astype(np.uint8)


def _moving_square(count: int, h: int = 48, w: int = 64) -> np.ndarray:
    """A still texture with a white square crossing its left half: (count, h, w, 3)."""
    frames = np.repeat(_texture(h, w, 1)[None], count, 0)
    for t in range(count):
        frames[t, 8:20, 2 + 3 * t : 14 + 3 * t] = 255
    return frames


def _run(stylizer, frames: np.ndarray, batch: int = 4) -> np.ndarray:
    stylizer.reset()
    pixels = torch.from_numpy(frames).permute(0, 3, 1, 2)
    return np.concatenate([stylizer(pixels[i : i + batch]) for i in range(0, len(frames), batch)]).astype(np.int16)


# ---------------------------------------------------------------------------- carried statistics


def test_carried_stats_average_the_moments_and_start_afresh_at_a_cut():
    carried = CarriedStats(0.75, cut=1.0)
    ones = torch.ones(3)
    carried.begin_frame()
    assert [v.tolist() for v in carried.carry(0 * ones, ones)] == [[0.0] * 3, [1.0] * 3]  # first frame: its own
    carried.begin_frame()
    mean, var = carried.carry(0.4 * ones, ones)  # a jump of 0.4 standard deviations: no cut
    assert torch.allclose(mean, 0.1 * ones) and torch.allclose(var, (0.75 * 1 + 0.25 * 1.16 - 0.01) * ones)
    carried.begin_frame()
    mean, var = carried.carry(10 * ones, 4 * ones)  # a jump of 9.6 + log 2: a cut
    assert torch.equal(mean, 10 * ones) and torch.equal(var, 4 * ones) and carried.cuts == 1


def test_stats_at_zero_smoothing_equal_frame_by_frame_and_leave_the_model_alone(model):
    frames = _moving_square(6)
    plain = _run(FrameStylizer(model, **CPU), frames)
    carried = _run(TemporalStylizer(model, temporal="stats", smoothing=0.0, **CPU), frames)
    assert np.abs(carried - plain).max() <= 1  # the frame's own statistics, taken by the hook: the same output
    layers = [m for m in model.generator.modules() if isinstance(m, NormAct)]
    assert all(not m._forward_pre_hooks and m.frozen_stats is None for m in layers)  # a private copy got the hooks
    assert not model.generator._forward_pre_hooks


def test_stats_steady_the_still_part_of_a_clip_and_do_not_depend_on_the_batch(model):
    frames = _moving_square(8)
    plain = _run(FrameStylizer(model, **CPU), frames)
    stylizer = TemporalStylizer(model, temporal="stats", smoothing=0.9, **CPU)
    carried = _run(stylizer, frames)
    still = (slice(28, 48), slice(40, 64))  # far from the square: only the statistics move it

    def flicker(out):
        return np.abs(np.diff(out[:, still[0], still[1]], axis=0)).mean()

    assert flicker(carried) < 0.5 * flicker(plain), (flicker(carried), flicker(plain))
    assert np.array_equal(_run(stylizer, frames, batch=1), carried)  # frame by frame in order, whatever the batches
    assert stylizer.carried.cuts == 0


def test_a_scene_cut_restarts_the_statistics(model):
    frames = np.concatenate([np.repeat(_texture(48, 64, 1)[None], 3, 0), np.repeat(_texture(48, 64, 7)[None] // 3, 3, 0)])
    plain = _run(FrameStylizer(model, **CPU), frames)
    stylizer = TemporalStylizer(model, temporal="stats", smoothing=0.9, **CPU)
    carried = _run(stylizer, frames)
    assert stylizer.carried.cuts == 1
    assert np.abs(carried[3] - plain[3]).max() <= 1  # the new scene starts from its own statistics
    stylizer.carried.cut = math.inf  # without the cut the old scene's statistics linger
    assert np.abs(_run(stylizer, frames)[3] - plain[3]).mean() > 2


@pytest.fixture(scope="module")
def adain(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("decoder") / "decoder.safetensors"
    save_model(AdaINDecoder(), path, {"note": "test decoder"})
    return load_adain(path)


def test_adain_content_stats_hook_sees_the_whole_photo_tiled_or_not(adain):
    photo = torch.from_numpy(_texture(48, 64, 1)).permute(2, 0, 1)
    painting = torch.from_numpy(_texture(64, 80, 2)).permute(2, 0, 1)  # a painting needs 64 px a side
    seen = []

    def shifted(mean, std):
        seen.append(tuple(mean.shape))
        return mean + 0.05, std * 1.5

    whole = adain.stylize(photo, style=painting.float() / 255, content_stats=shifted, **CPU)
    tiled = adain.stylize(photo, style=painting.float() / 255, content_stats=shifted, tile=16, **CPU)
    plain = adain.stylize(photo, style=painting.float() / 255, **CPU)
    assert seen == [(1, 512), (1, 512)]
    assert torch.allclose(whole, tiled, atol=1e-4) and (whole - plain).abs().mean() > 1e-3


def test_adain_stats_at_zero_smoothing_equal_frame_by_frame(adain):
    mix = adain.style(torch.from_numpy(_texture(64, 64, 2)).permute(2, 0, 1).float() / 255, **CPU)
    frames = _moving_square(3, 32, 48)
    plain = _run(FrameStylizer(adain, style=mix, **CPU), frames)
    assert np.abs(_run(TemporalStylizer(adain, style=mix, temporal="stats", smoothing=0.0, **CPU), frames) - plain).max() <= 1
    smoothed = _run(TemporalStylizer(adain, style=mix, temporal="stats", smoothing=0.9, **CPU), frames)
    assert np.array_equal(smoothed[0], plain[0]) and np.abs(smoothed[2] - plain[2]).mean() > 0.05


# ---------------------------------------------------------------------------- optical flow


def test_forward_backward_check_marks_occlusions_and_the_border():
    h, w = 20, 30
    backward = np.zeros((h, w, 2), np.float32)
    backward[..., 0] = 2.0  # frame t at x is frame t-1 at x + 2
    forward = -backward.copy()
    forward[5:10, 10:15] = 6.0  # a region of t-1 that went elsewhere: occluded in t
    trusted = consistent(backward, forward)
    assert not trusted[:, -2:].any()  # lands outside frame t-1
    assert not trusted[5:10, 8:13].any() and trusted[12:, :20].all()
    moved, inside = warp(np.arange(w, dtype=np.float32)[None].repeat(h, 0), backward)
    assert np.array_equal(moved[:, :-2], np.arange(2, w, dtype=np.float32)[None].repeat(h, 0)) and not inside[:, -1].any()


def test_crispness_and_agreement_tell_worn_and_dragged_strokes_from_kept_ones():
    import cv2

    strokes = _texture(48, 64, 4).astype(np.float32) / 255
    assert crispness(strokes, strokes).min() == 1.0
    assert crispness(cv2.GaussianBlur(strokes, (0, 0), 2.0), strokes)[8:-8, 8:-8].max() < 0.2  # resampled soft
    other = _texture(48, 64, 5).astype(np.float32) / 255  # another stroke pattern, as crisp
    assert crispness(other, strokes).min() == 1.0  # kept: local energies differ by chance
    patterns = [strokes, other] + [_texture(48, 64, seed).astype(np.float32) / 255 for seed in (6, 7)]
    assert crispness(np.mean(patterns[:2], 0), strokes)[8:-8, 8:-8].mean() > 0.9  # half the energy: still kept
    assert crispness(np.mean(patterns, 0), strokes)[8:-8, 8:-8].mean() < 0.3  # a quarter: worn flat
    assert agreement(strokes, strokes).min() == 1.0 and agreement(np.clip(strokes + 0.12, 0, 1), strokes).max() == 0.0


def _pan(count: int, step: int = 2, h: int = 48, w: int = 64) -> np.ndarray:
    big = _texture(h, w + step * count, 3)
    return np.stack([big[:, step * t : step * t + w] for t in range(count)])


def _pan_error(out: np.ndarray, step: int = 2) -> float:
    """Mean |O_t - O_{t-1} shifted| in levels: the exact warping error of a pan, its border left out."""
    return float(np.abs(out[1:, :, : -step - 8].astype(float) - out[:-1, :, step:-8].astype(float)).mean())


def test_flow_blending_cuts_the_warping_error_of_a_pan_and_keeps_a_cut(model):
    frames = _pan(8)
    plain = _run(FrameStylizer(model, **CPU), frames)
    stylizer = TemporalStylizer(model, temporal="flow", **CPU)  # the default blend
    blended = _run(stylizer, frames)
    assert np.array_equal(blended[0], plain[0])
    assert _pan_error(blended) < 0.6 * _pan_error(plain), (_pan_error(blended), _pan_error(plain))
    tiny = _pan(3, 1, 6, 10)  # below DIS's 12 px: frame by frame
    assert np.array_equal(_run(TemporalStylizer(model, temporal="flow", **CPU), tiny), _run(FrameStylizer(model, **CPU), tiny))
    cut = np.concatenate([frames[:3], _texture(48, 64, 9)[None] // 2])  # another scene
    after = _run(stylizer, cut)[3]
    assert np.abs(after - _run(FrameStylizer(model, **CPU), cut)[3]).mean() < 1.0  # not blended with the old scene


def test_flow_carries_the_strokes_of_a_real_pan_whole(shared_data):
    """A photo panned by whole pixels, in the bundled starry_night: the warped previous output is
    exact inside the frame, so it is carried whole there, not refused in part because the new
    frame's strokes happen to be busier (the first crispness limits kept 66 % of bench_video's pan)."""
    photo = frames_to_pixels(resize_long_side(load_image(shared_data / "content" / "amber.jpg")[None], 256))[0]
    frames = np.stack([photo[t : t + 96, 2 * t : 2 * t + 128] for t in range(6)])  # 2 px right, 1 down a frame
    plain = _run(FrameStylizer(load_model("starry_night"), **CPU), frames)
    carried, weights, out = FlowBlend(0.0), [], []
    for frame, stylized in zip(frames, plain):
        out.append(carried(frame, stylized.astype(np.float32) / 255))
        weights.append(carried.weight)
    inner = np.stack(weights[1:])[:, 8:-8, 8:-8]  # the frame's border takes new content
    assert inner.mean() > 0.95, inner.mean()
    steady = (np.stack(out) * 255).round()
    shifted = np.abs(steady[1:, 8:-8, 8:-8] - steady[:-1, 9:-7, 10:-6]).mean()
    assert shifted < 0.1 * np.abs(plain[1:, 8:-8, 8:-8] - plain[:-1, 9:-7, 10:-6]).mean()


# ---------------------------------------------------------------------------- options and the command


def test_the_default_and_bad_options(model):
    assert isinstance(video_stylizer(model, **CPU), TemporalStylizer) and video_stylizer(model, **CPU).temporal == DEFAULT_TEMPORAL
    assert type(video_stylizer(model, temporal="none", **CPU)) is FrameStylizer
    for bad, words in ((dict(temporal="optical"), "temporal must be one of none, stats, flow"),
                       (dict(smoothing=1.5), "smoothing must be in [0, 1]"), (dict(blend=float("nan")), "blend must be in")):  # fmt: skip
        with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
            video_stylizer(model, **CPU, **bad)
    with pytest.raises(ValueError, match="temporal must be"):
        stylize_video("in.mp4", "out.mp4", model, temporal="both")


@pytest.mark.parametrize("options", [["--temporal", "stats", "--smoothing", "0.8"], ["--temporal", "flow", "--blend", "0.5"]])
def test_cli_temporal_keeps_the_frames_and_times(tmp_path, options):
    torch.manual_seed(0)
    save_model(TransformerNet(width=0.25, num_residual=1), tmp_path / "tiny.safetensors", {"style_name": "tiny"})
    source = make_clip(tmp_path / "in.mp4", 64, 48)
    result = run_cli("video", source, "-o", tmp_path / "out.mp4", "--model", tmp_path / "tiny.safetensors", *options)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert read_clip(tmp_path / "out.mp4")["times"] == pytest.approx(read_clip(source)["times"], abs=1e-3)


@pytest.mark.parametrize("flag, value, words", [("--smoothing", "2", "--smoothing: must be in [0, 1]"),
                                                ("--blend", "-0.1", "--blend: must be in [0, 1]"),
                                                ("--temporal", "optical", "--temporal: invalid choice")])  # fmt: skip
def test_cli_refuses_bad_temporal_options(tmp_path, flag, value, words):
    source = make_clip(tmp_path / "in.mp4", 64, 48)
    result = run_cli("video", source, "-o", tmp_path / "out.mp4", "--model", "starry_night", flag, value)
    assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "out.mp4").exists()
