"""instyle video and instyle.stylize_video (issue #20, part 1): frames, timestamps, size, rotation and
sound kept, and bad input refused. The clips are synthesized with PyAV (a few frames of odd sizes,
variable frame rates, a rotation, AAC or Opus audio); one test cuts a real clip from shared data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import instyle
from instyle.engine.image import save_image
from instyle.engine.inference.video import FrameStylizer, stylize_video
from instyle.engine.modelfile import save_model
from instyle.engine.models import TransformerNet
from instyle.engine.video import ACCURATE, VideoError, VideoReader

from .conftest import fill_disk
from .test_cli import run_cli

MS = Fraction(1, 1000)
VFR = [0, 40, 90, 100, 200, 230, 300]  # ms: no two gaps alike


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A seeded untrained generator of the smallest width: fast on tiny frames."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(TransformerNet(width=0.25, num_residual=1), path, {"style_name": "tiny"})
    return path


def _picture(h: int, w: int, i: int) -> np.ndarray:
    """A smooth gradient that moves with ``i``, and a white block at the top left (to find the top)."""
    ys, xs = np.mgrid[0:h, 0:w]
    pixels = np.stack([(xs * 255 // max(w - 1, 1) + 8 * i) % 256, ys * 255 // max(h - 1, 1), np.full_like(xs, 96)], -1)
    pixels[: h // 4, : w // 4] = 255
    return pixels.astype(np.uint8)


def make_clip(path: Path, width: int = 65, height: int = 49, pts=VFR, *, audio: str | None = "aac",
              rotation: int = 0, seconds: float = 0.35) -> Path:  # fmt: skip
    """A clip of ``pts`` (ms) frames at ``width`` x ``height`` (odd: yuv444p), a display rotation, and
    a tone of ``seconds`` in ``audio`` ("aac", "libopus" or None)."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height = width, height
        video.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        video.time_base = video.codec_context.time_base = MS
        if rotation:
            video.set_display_rotation(rotation)
        sound = out.add_stream(audio, rate=48000) if audio else None
        for i, stamp in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(_picture(height, width, i), format="rgb24")
            frame.pts, frame.time_base = stamp, MS
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            t = np.arange(int(48000 * seconds)) / 48000
            tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None].repeat(2, 0)
            samples = av.AudioFrame.from_ndarray(tone, format="fltp", layout="stereo")
            samples.sample_rate, samples.pts = 48000, 0
            out.mux(sound.encode(samples))
            out.mux(sound.encode(None))
    return path


def read_clip(path: Path) -> dict:
    """What a player finds: each frame's pixels and time, the size and pixel format, the rotation,
    and the audio packets' bytes and times."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        found = dict(
            pixels=[f.reformat(format="rgb24", interpolation=ACCURATE).to_ndarray() for f in frames],
            times=[float(f.time) for f in frames],
            size=(stream.codec_context.width, stream.codec_context.height), pix_fmt=stream.codec_context.pix_fmt,
            rotation=frames[0].rotation if frames else 0, codec=stream.codec_context.name,
            colorspace=stream.codec_context.colorspace,
        )  # fmt: skip
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(audio=0) if p.dts is not None] if container.streams.audio else []
        found["audio"] = [bytes(p) for p in packets]
        found["audio_times"] = [float(p.pts * p.time_base) for p in packets]
    return found


def _no_trace(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr, result.stderr


# ---------------------------------------------------------------------------- what is kept


def test_cli_keeps_frames_timestamps_odd_size_and_sound(tmp_path, model_file):
    source = make_clip(tmp_path / "in.mp4")
    out = tmp_path / "out.mp4"
    result = run_cli("video", source, "-o", out, "--model", model_file)
    assert result.returncode == 0, result.stderr
    _no_trace(result)
    before, after = read_clip(source), read_clip(out)
    assert after["times"] == pytest.approx(before["times"], abs=1e-3) and len(after["times"]) == len(VFR)
    assert after["size"] == (65, 49) and after["pix_fmt"] == "yuv444p" and after["codec"] == "h264"
    assert "yuv444p" in result.stderr  # said why it is not yuv420p
    assert after["audio"] == before["audio"] and after["audio_times"] == before["audio_times"]  # copied, not re-encoded
    assert f"{len(VFR)} frames, 65 x 49, 1 audio stream copied" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4"]  # no temporary file left


def test_strength_zero_gives_the_frames_back_and_opus_in_matroska_is_copied(tmp_path, model_file):
    """Even sizes are yuv420p; with no style the frames come back as they went in (to the codec's error)."""
    source = make_clip(tmp_path / "in.mkv", 64, 48, audio="libopus")
    # frame by frame: the codec's round trip alone (--temporal flow would carry pixels between frames)
    result = stylize_video(source, tmp_path / "out.mp4", str(model_file), strength=0.0, crf=10, temporal="none")
    before, after = read_clip(source), read_clip(result.output)
    assert (result.frames, result.width, result.height, result.pixel_format, result.audio_streams) == (7, 64, 48, "yuv420p", 1)
    assert after["pix_fmt"] == "yuv420p" and after["times"] == pytest.approx(before["times"], abs=1e-3)
    for a, b in zip(before["pixels"], after["pixels"]):
        difference = a.astype(int) - b.astype(int)
        assert np.abs(difference).mean() < 3 and abs(difference.mean()) < 0.3  # no colour shift (swscale's fast path: 1.2)
    assert after["colorspace"] == 1  # BT.709, as converted: players guess otherwise
    assert after["audio"] == before["audio"]


def test_rotation_is_applied_to_the_pixels(tmp_path, model_file):
    """A phone video stored sideways (display matrix: 90 degrees) comes out upright, unrotated."""
    source = make_clip(tmp_path / "in.mp4", 64, 48, pts=[0, 40, 80], audio=None, rotation=90)
    assert read_clip(source)["rotation"] == 90
    out = stylize_video(source, tmp_path / "out.mkv", str(model_file), strength=0.0).output  # Matroska too
    after = read_clip(out)
    assert after["size"] == (48, 64) and after["rotation"] == 0
    expected = np.rot90(_picture(48, 64, 0))  # the white block: where a player shows it
    assert np.abs(after["pixels"][0].astype(int) - expected.astype(int)).mean() < 4


@pytest.mark.parametrize("suffix", [".mp4", ".ts"])  # an MPEG-TS's timestamps start at 1.4 s
def test_start_duration_and_max_size(tmp_path, model_file, suffix):
    source = make_clip(tmp_path / f"in{suffix}", seconds=0.35)
    result = stylize_video(source, tmp_path / "out.mp4", str(model_file), start=0.08, duration=0.13, max_size=32)
    after = read_clip(result.output)
    assert after["times"] == pytest.approx([0.01, 0.02, 0.12], abs=1e-3)  # 90, 100, 200 ms, less 80
    assert after["size"] == (32, 24) and after["pix_fmt"] == "yuv420p"  # 65 x 49 scaled down, even
    assert after["audio_times"][0] >= -1e-3 and after["audio_times"][-1] < 0.13
    assert 0.08 < (len(after["audio"]) * 1024) / 48000 < 0.2  # about 0.13 s of sound


class Recording(FrameStylizer):
    """A stylizer that notes its calls: the per-frame hook of temporal remedies."""

    def reset(self) -> None:
        self.calls = ["reset"]

    def __call__(self, frames):
        self.calls.append(len(frames))
        return super().__call__(frames)


def test_python_api_feeds_one_stylizer_in_order_and_reports_progress(tmp_path, model_file):
    source = make_clip(tmp_path / "in.mp4", 64, 48)
    stylizer = Recording(instyle.load_model(model_file))
    reports = []
    result = instyle.stylize_video(source, tmp_path / "out.mp4", stylizer, batch_size=3, on_progress=reports.append)
    assert stylizer.calls == ["reset", 3, 3, 1]
    assert [r.frames for r in reports] == [3, 6, 7] and reports[-1].total == 7 and reports[-1].frames_per_s > 0
    assert result.frames == 7 and result.frames_per_s > 0


@pytest.mark.parametrize("temporal", ["none", "stats"])
def test_a_style_of_a_multi_style_model_and_a_mix(tmp_path, temporal):
    """--style-mix picks (or mixes) a multi-style model's styles, as `instyle stylize` does, with every
    remedy (stats runs its own copy of the generator: the baked single-style network)."""
    from instyle.engine.inference.stylize import load_model

    from .test_multi_style import multi_file

    multi_file(tmp_path / "multi.safetensors", ("wave", "udnie"))
    source = make_clip(tmp_path / "in.mp4", 64, 48, pts=[0, 40], audio=None)
    model = load_model(tmp_path / "multi.safetensors")
    first = read_clip(source)["pixels"][0]
    for mix, name in (("udnie", "udnie"), ("wave=0.6,udnie=0.4", "wave60+udnie40")):
        out = tmp_path / f"{name}_{temporal}.mp4"
        result = run_cli("video", source, "-o", out, "--model", tmp_path / "multi.safetensors", "--style-mix", mix,
                         "--temporal", temporal, "--crf", "0", "--dtype", "fp32")  # fmt: skip
        assert result.returncode == 0, result.stderr
        frame = read_clip(out)["pixels"][0].astype(int)
        styles = {"udnie": "udnie", "wave60+udnie40": {"wave": 0.6, "udnie": 0.4}}
        expected = {k: model.stylize(first, style=v, dtype="fp32").astype(int) for k, v in styles.items()}
        assert np.abs(frame - expected[name]).mean() < 3 < np.abs(frame - expected[({*styles} - {name}).pop()]).mean()
    refused = run_cli("video", source, "-o", tmp_path / "x.mp4", "--model", tmp_path / "multi.safetensors")
    assert refused.returncode == 2 and "--style-mix is needed: multi holds 2 styles (wave, udnie)" in refused.stderr
    refused = run_cli("video", source, "-o", tmp_path / "x.mp4", "--model", tmp_path / "multi.safetensors", "--style-mix", "monet")
    assert refused.returncode == 2 and "--style-mix: multi has no style 'monet'" in refused.stderr
    assert not (tmp_path / "x.mp4").exists()


def test_a_painting_goes_through_adain(tmp_path):
    """--style PAINTING with --decoder: a seeded untrained decoder, the real VGG-19 encoder."""
    from instyle.engine.models.adain import AdaINDecoder

    torch.manual_seed(0)
    decoder = tmp_path / "decoder.safetensors"
    save_model(AdaINDecoder(), decoder, {"note": "test decoder"})
    painting = tmp_path / "painting.png"
    save_image(torch.rand(3, 80, 96, generator=torch.Generator().manual_seed(1)), painting)
    source = make_clip(tmp_path / "in.mp4", 64, 48, pts=[0, 40, 80], audio=None)
    out = tmp_path / "out.mp4"
    result = run_cli("video", source, "-o", out, "--style", painting, "--decoder", decoder, "--style-size", "64")
    assert result.returncode == 0, result.stderr
    assert read_clip(out)["size"] == (64, 48) and len(read_clip(out)["times"]) == 3


def test_a_real_clip_cut_short(tmp_path, shared_data, model_file):
    """geese.mp4 (H.264 1280 x 720, about 30 fps, AAC): its first half second at 128 px."""
    source = shared_data / "video" / "geese.mp4"
    out = tmp_path / "geese.mp4"
    result = run_cli("video", source, "-o", out, "--model", model_file, "--duration", "0.5", "--max-size", "128")
    assert result.returncode == 0, result.stderr
    before, after = read_clip(source), read_clip(out)
    first = [t for t in before["times"] if t < 0.5]
    assert after["times"] == pytest.approx(first, abs=1e-3) and after["size"] == (128, 72)
    assert after["audio"] == [a for a, t in zip(before["audio"], before["audio_times"]) if t < 0.5]


# ---------------------------------------------------------------------------- bad input


def _mux_silence(out) -> None:
    """A tenth of a second of stereo silence in AAC, muxed into the open container ``out``."""
    sound = out.add_stream("aac", rate=48000)
    samples = av.AudioFrame.from_ndarray(np.zeros((2, 4800), np.float32), format="fltp", layout="stereo")
    samples.sample_rate, samples.pts = 48000, 0
    out.mux(sound.encode(samples))
    out.mux(sound.encode(None))


def audio_only(path: Path) -> Path:
    """A file with an audio stream and no video stream."""
    with av.open(str(path), "w") as out:
        _mux_silence(out)
    return path


def _zero_frames(path: Path) -> Path:
    """A Matroska file whose video track has no frame (its audio has some)."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        _mux_silence(out)
    return path


BAD_INPUTS = {
    "text": (lambda p: (p / "notes.mp4").write_text("not a video\n") and p / "notes.mp4", "not a video in a format instyle reads"),
    "image": (lambda p: save_image(torch.rand(3, 20, 20), p / "photo.png") or p / "photo.png", "use `instyle stylize`"),
    "audio only": (lambda p: audio_only(p / "tone.m4a"), "no video stream (it has audio streams only)"),
    "zero frames": (lambda p: _zero_frames(p / "empty.mkv"), "no video frames could be decoded"),
    "too many pixels": (lambda p: make_clip(p / "big.mp4"), "too many pixels: 65 x 49 a frame is over the limit of 1000; raise --max-pixels"),
    "missing": (lambda p: p / "missing.mp4", "no such file"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_clear_error_and_writes_nothing(tmp_path, model_file, case):
    make, message = BAD_INPUTS[case]
    source = make(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    out = tmp_path / "out.mp4"
    result = run_cli("video", source, "-o", out, "--model", model_file, "--max-pixels", "1000" if case == "too many pixels" else "50000000")
    assert result.returncode == 1, result.stderr
    _no_trace(result)
    assert result.stderr.strip().splitlines()[-1] == f"instyle video: error: {source}: {message}" or message in result.stderr, result.stderr
    assert str(source) in result.stderr and message in result.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no output, nothing else written


def _damage(clip: Path, damaged: Path, packets: tuple[int, ...]) -> list[float]:
    """A copy of ``clip`` with the bytes of these video packets replaced by noise; their times."""
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        found = [(p.pos, p.size, float(p.pts * p.time_base)) for p in container.demux(stream) if p.size]
    data = bytearray(clip.read_bytes())
    noise = np.random.default_rng(0)
    for k in packets:
        pos, size, _ = found[k]
        data[pos : pos + size] = noise.integers(0, 256, size, dtype=np.uint8).tobytes()
    damaged.write_bytes(bytes(data))
    return [found[k][2] for k in packets]


def test_damaged_packets_are_skipped_with_their_time_and_the_rest_keep_theirs(tmp_path, model_file):
    clip = make_clip(tmp_path / "clip.mp4", 64, 48, pts=[i * 40 for i in range(16)], audio=None)
    damaged = tmp_path / "damaged.mp4"
    times = _damage(clip, damaged, (8, 9))
    kept = damaged.read_bytes()
    out = tmp_path / "out.mp4"
    result = run_cli("video", damaged, "-o", out, "--model", model_file)
    assert result.returncode == 0, result.stderr
    _no_trace(result)
    warned = [line for line in result.stderr.splitlines() if "skipped a damaged video packet" in line]
    assert warned and all(str(damaged) in line for line in warned)
    assert any(f"at {t:.3f} s" in result.stderr for t in times)
    after, original = read_clip(out)["times"], read_clip(clip)["times"]
    assert len(after) == len(original) - len(warned) and len(after) >= 8
    assert all(any(abs(t - u) < 1e-3 for u in original) for t in after)  # every frame keeps its time
    assert damaged.read_bytes() == kept


def test_an_existing_output_is_kept_unless_overwrite_and_the_input_never(tmp_path, model_file):
    source = make_clip(tmp_path / "in.mp4", 64, 48, pts=[0, 40], audio=None)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an earlier result")
    kept = source.read_bytes()
    result = run_cli("video", source, "-o", out, "--model", model_file)
    assert result.returncode == 2 and "-o " + str(out) + " exists; add --overwrite to replace it" in result.stderr
    assert out.read_bytes() == b"an earlier result"
    for extra in ((), ("--overwrite",)):
        result = run_cli("video", source, "-o", source, "--model", model_file, *extra)
        assert result.returncode == 2 and "is the input video" in result.stderr, result.stderr
        assert source.read_bytes() == kept
    with pytest.raises(ValueError, match="exists; pass overwrite=True"):
        stylize_video(source, out, str(model_file))
    assert stylize_video(source, out, str(model_file), overwrite=True).frames == 2
    assert len(read_clip(out)["times"]) == 2
    _no_trace(result)


def test_a_full_disk_leaves_no_part_of_the_video(tmp_path, model_file, small_disk):
    source = make_clip(tmp_path / "in.mp4", 64, 48, pts=[i * 40 for i in range(4)])
    fill_disk(small_disk)  # the place is fine; the disk is full
    result = run_cli("video", source, "-o", small_disk / "out.mp4", "--model", model_file)
    assert result.returncode == 1, result.stderr
    _no_trace(result)
    assert f"instyle video: error: cannot write {small_disk / 'out.mp4'}: No space left on device" in result.stderr
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_leaves_no_part_of_the_video(tmp_path, model_file, signum):
    source = make_clip(tmp_path / "in.mp4", 192, 144, pts=[i * 40 for i in range(150)], audio=None)
    out = tmp_path / "out" / "clip.mp4"
    out.parent.mkdir()
    command = [sys.executable, "-m", "instyle", "video", str(source), "-o", str(out), "--model", str(model_file)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(out.parent.iterdir()) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)  # the temporary file appears as the first frames are read
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr and f"interrupted by {signum.name}; {out} was not written" in stderr
    assert list(out.parent.iterdir()) == []


def test_library_errors_name_the_argument(tmp_path, model_file):
    source = make_clip(tmp_path / "in.mp4", 64, 48, pts=[0, 40], audio=None)
    out = tmp_path / "out.mp4"
    for options, message in [
        ({"crf": 60}, "crf must be an integer in"), ({"start": -1.0}, "start must be"), ({"duration": 0}, "duration must be"),
        ({"batch_size": 0}, "batch_size must be"), ({"strength": 2.0}, "strength must be in"), ({"max_size": 0}, "max_size must be"),
        ({"device": "tpu"}, "device 'tpu'"),
    ]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            stylize_video(source, out, str(model_file), **options)
    with pytest.raises(ValueError, match="output .*out.avi: use a file name ending in .mp4"):
        stylize_video(source, tmp_path / "out.avi", str(model_file))
    with pytest.raises(VideoError, match="no video frames from 5 s on: it is 0.0"):
        stylize_video(source, out, str(model_file), start=5.0)
    assert not out.exists()
    with VideoReader(source) as reader:
        assert reader.info.frames == 2 and (reader.info.width, reader.info.height) == (64, 48)


@pytest.mark.parametrize("args, message", [
    ((), "give --model NAME (a bundled style or a model file) or --style PAINTING (any image)"),
    (("--model", "nosuchname"), "model nosuchname: no such file or bundled style"),
    (("--style", "missing.jpg"), "--style missing.jpg: no such painting file or bundled style"),
    (("--model", "starry_night", "--decoder", "d.safetensors"), "--decoder: only with a painting as --style"),
    (("--model", "starry_night", "-o", "out.avi"), "-o out.avi: use a file name ending in .mp4, .m4v, .mov, .mkv"),
])  # fmt: skip
def test_cli_usage_errors_name_the_flag_before_any_work(tmp_path, monkeypatch, capsys, args, message):
    from instyle.apps.cli import main

    monkeypatch.chdir(tmp_path)
    source = make_clip(tmp_path / "in.mp4", 64, 48, pts=[0, 40], audio=None)
    output = () if "-o" in args else ("-o", "out.mp4")
    assert main(["video", str(source), *output, *args]) == 2
    assert f"instyle video: error: {message}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_every_flag_says_what_it_does():
    import argparse

    from instyle.apps.cli import build_parser

    parser = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["video"]
    assert all((a.help or "").split("(default:")[0].strip() for a in parser._actions if a.option_strings)
