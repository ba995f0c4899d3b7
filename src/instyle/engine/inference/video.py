"""Stylizing a video: ``instyle.stylize_video("in.mp4", "out.mp4", "starry_night")``.

Three stages overlap, joined by bounded queues so that memory stays constant whatever the length:
a thread decodes (:class:`instyle.engine.video.VideoReader`), a thread stylizes batches of frames
(:class:`FrameStylizer`), and the calling thread encodes and writes (:class:`VideoWriter`). torch,
and PyAV's decoding and encoding, release the GIL, so the stages run at once.

The output is written to a temporary file beside it and renamed when complete
(:func:`instyle.engine.fileio.write_atomic`): an error, SIGINT or SIGTERM leaves no part of it.

Frames go through one :class:`FrameStylizer` in their order, a batch at a time, after its
``reset()``: the place for what carries from frame to frame (instance-norm statistics smoothed over
time, blending with the previous stylized frame), which a subclass keeps and ``reset()`` forgets.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from instyle.engine.fileio import write_atomic
from instyle.engine.image import pixels_to_float, resize_long_side
from instyle.engine.inference.adain import DEFAULT_STYLE_SIZE, AdaINModel, StyleMix
from instyle.engine.inference.api import _cached, _is_generator, _key
from instyle.engine.inference.stylize import StyleModel, check_look
from instyle.engine.inference.temporal import (
    DEFAULT_BLEND, DEFAULT_SMOOTHING, DEFAULT_TEMPORAL, CarriedStats, FlowBlend, adain_carry, carrying_generator, check_temporal,
)  # fmt: skip
from instyle.engine.catalog import adain_decoder_path
from instyle.engine.device import DeviceConfig
from instyle.engine.training.loop import caught_signals
from instyle.engine.video import OUTPUT_FORMATS, ReadWarning, VideoError, VideoFrame, VideoReader, VideoWriter, check_video_output

__all__ = ["FrameStylizer", "TemporalStylizer", "VideoInterrupted", "VideoProgress", "VideoResult", "stylize_video", "video_stylizer"]

# x264's constant quality, its own default: painted texture is costly to encode (geese.mp4 with
# starry_night at 1280 x 720: 25 Mbit/s at 23, 46 Mbit/s at 18)
DEFAULT_CRF = 23
DEFAULT_BATCH = 4
_QUEUED_BATCHES = 2  # per queue: enough to keep each stage busy, few enough for constant memory


class FrameStylizer:
    """One video's frames in a style, a batch at a time, in order: ``stylizer(frames)`` takes uint8
    (N, 3, H, W) and returns uint8 (N, H', W', 3) on the CPU (H', W': the size after ``max_size``).

    ``model``: a :class:`StyleModel` (a trained generator), or an :class:`AdaINModel` with ``style``
    (a :class:`StyleMix` of paintings). ``strength`` and ``preserve`` as for a photo. Each frame is
    stylized as a photo is; what one frame may pass to the next belongs to a subclass, which keeps
    it between calls and forgets it in :meth:`reset` (called before a video's first frame)."""

    def __init__(
        self, model: StyleModel | AdaINModel, *, style: StyleMix | None = None, strength: float = 1.0,
        preserve: str = "none", max_size: int | None = None, device: str = "auto", dtype: str = "auto",
    ) -> None:  # fmt: skip
        check_look(strength, preserve)
        if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1):
            raise ValueError(f"max_size must be a positive integer or None, got {max_size!r}")
        if isinstance(model, AdaINModel) != isinstance(style, StyleMix):
            raise ValueError("style: an AdaIN model takes the paintings' StyleMix (AdaINModel.style); a generator takes none")
        DeviceConfig.resolve(device, dtype, "inference")  # a bad device fails here, not in a worker thread
        self.model, self.max_size = model, max_size
        self.options: dict[str, Any] = dict(strength=strength, preserve=preserve, device=device, dtype=dtype)
        if style is not None:
            self.options["style"] = style
        self.name = style.name if style is not None else model.name

    def reset(self) -> None:
        """Forget what earlier frames left (nothing, frame by frame): a new video begins."""

    def __call__(self, frames: Tensor) -> np.ndarray:
        return frames_to_pixels(self.stylize_frames(self.sized(frames)))

    def sized(self, frames: Tensor) -> Tensor:
        """``frames`` scaled down to ``max_size`` (float), or as they are."""
        if self.max_size is not None and max(frames.shape[-2:]) > self.max_size:
            return resize_long_side(pixels_to_float(frames), self.max_size)
        return frames

    def stylize_frames(self, frames: Tensor) -> Tensor:
        """float32 (N, 3, H, W) in [0, 1], each frame stylized as a photo."""
        return self.model.stylize(frames, **self.options)


class TemporalStylizer(FrameStylizer):
    """A :class:`FrameStylizer` with a temporal remedy (:mod:`instyle.engine.inference.temporal`):
    ``temporal`` "stats" (``smoothing``: the weight of the past in each instance norm's statistics)
    or "flow" (``blend``: the least weight of the previous output frame, carried along the optical
    flow, where the flow holds)."""

    def __init__(self, model: StyleModel | AdaINModel, *, temporal: str = DEFAULT_TEMPORAL,
                 smoothing: float = DEFAULT_SMOOTHING, blend: float = DEFAULT_BLEND, **look: Any) -> None:  # fmt: skip
        check_temporal(temporal, smoothing, blend)
        super().__init__(model, **look)
        self.temporal = temporal
        self.carried = CarriedStats(smoothing) if temporal == "stats" else None
        self.flow = FlowBlend(blend) if temporal == "flow" else None
        if self.carried is not None and isinstance(model, AdaINModel):
            self.options["content_stats"] = adain_carry(self.carried)
        elif self.carried is not None:
            self.model = carrying_generator(model, self.carried)
            self.stride = int(getattr(model.generator, "tile_stride", 1))

    def reset(self) -> None:
        for state in (self.carried, self.flow):
            if state is not None:
                state.reset()

    def stylize_frames(self, frames: Tensor) -> Tensor:
        if self.carried is None or not isinstance(self.model, StyleModel):
            return super().stylize_frames(frames)
        side = max(frames.shape[-2:])  # one tile the frame's size: untiled, every norm sees the whole frame
        return self.model.stylize(frames, **self.options, tile=-(-side // self.stride) * self.stride)

    def __call__(self, frames: Tensor) -> np.ndarray:
        frames = self.sized(frames)
        stylized = self.stylize_frames(frames)
        if self.flow is None:
            return frames_to_pixels(stylized)
        outputs = stylized.permute(0, 2, 3, 1).cpu().numpy()
        blended = [self.flow(frame, out) for frame, out in zip(frames_to_pixels(frames), outputs)]
        return frames_to_pixels(torch.from_numpy(np.stack(blended)).permute(0, 3, 1, 2))


def frames_to_pixels(frames: Tensor) -> np.ndarray:
    """uint8 (N, H, W, 3) on the CPU from (N, 3, H, W) float in [0, 1] (rounded) or uint8."""
    if frames.dtype != torch.uint8:
        frames = (frames.float() * 255).round_().clamp_(0, 255).to(torch.uint8)
    return frames.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def video_stylizer(
    style, *, decoder: str | os.PathLike | None = None, style_weights: Sequence[float] | None = None,
    style_size: int = DEFAULT_STYLE_SIZE, strength: float = 1.0, preserve: str = "none", max_size: int | None = None,
    device: str = "auto", dtype: str = "auto", temporal: str = DEFAULT_TEMPORAL, smoothing: float = DEFAULT_SMOOTHING,
    blend: float = DEFAULT_BLEND, style_mix=None,
) -> FrameStylizer:  # fmt: skip
    """A :class:`FrameStylizer` for ``style`` as :func:`instyle.stylize` takes it: a bundled style
    name or generator file (or a loaded :class:`StyleModel`), or paintings (AdaIN, with ``decoder``,
    ``style_weights``, ``style_size``), with the temporal remedy ``temporal`` ("none": frame by frame;
    "stats" with ``smoothing``; "flow" with ``blend``: :class:`TemporalStylizer`). Models are loaded
    once and kept, as for photos."""
    check_temporal(temporal, smoothing, blend)
    look = dict(strength=strength, preserve=preserve, max_size=max_size, device=device, dtype=dtype)
    if isinstance(style, StyleModel) or _is_generator(style):
        for name, value in (("style_weights", style_weights), ("decoder", decoder)):
            if value is not None:
                raise ValueError(f"{name}: only for paintings; style {style!r} is a trained model")
        model = style if isinstance(style, StyleModel) else _cached(StyleModel, *_key(Path(style) if Path(style).exists() else style))
        if style_mix is not None and not model.styles:
            raise ValueError(f"style_mix: only with a multi-style model; {model.name} has one style")
        model = model.single_style(style_mix, "style_mix")  # baked: the remedies run a plain generator
    else:
        if style_mix is not None:
            raise ValueError("style_mix: only with a multi-style model; to mix paintings give style_weights")
        model = _cached(AdaINModel, *_key(adain_decoder_path(decoder)))
        mix = style if isinstance(style, StyleMix) else model.style(style, style_weights, style_size=style_size, device=device, dtype=dtype)
        look["style"] = mix
    if temporal == "none":
        return FrameStylizer(model, **look)
    return TemporalStylizer(model, temporal=temporal, smoothing=smoothing, blend=blend, **look)


@dataclass(frozen=True)
class VideoProgress:
    """Frames written so far, the expected total (None: unknown), seconds since the start."""

    frames: int
    total: int | None
    seconds: float

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class VideoResult:
    source: Path
    output: Path
    frames: int
    width: int
    height: int
    pixel_format: str
    audio_streams: int  # copied
    skipped: int  # damaged packets
    seconds: float

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class VideoInterrupted(RuntimeError):
    """SIGINT or SIGTERM arrived; the output was not written."""

    def __init__(self, signum: int, output: Path) -> None:
        import signal

        super().__init__(f"interrupted by {signal.Signals(signum).name}; {output} was not written")
        self.signum, self.output = signum, output


def _check_options(crf: int, start: float, duration: float | None, batch_size: int) -> None:
    """ValueError naming the first bad argument of :func:`stylize_video`."""

    def whole(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    def seconds(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)

    if not whole(crf) or not 0 <= crf <= 51:
        raise ValueError(f"crf must be an integer in [0, 51], got {crf!r}")
    if not seconds(start) or start < 0:
        raise ValueError(f"start must be a number of seconds >= 0, got {start!r}")
    if duration is not None and (not seconds(duration) or duration <= 0):
        raise ValueError(f"duration must be a number of seconds > 0 or None, got {duration!r}")
    if not whole(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def stylize_video(
    source: str | os.PathLike, output: str | os.PathLike, style, *, crf: int = DEFAULT_CRF, start: float = 0.0,
    duration: float | None = None, batch_size: int = DEFAULT_BATCH, overwrite: bool = False,
    max_pixels: int | None = None, on_progress: Callable[[VideoProgress], None] | None = None,
    on_warning: Callable[[str], None] | None = None, handle_signals: bool = True, **look,
) -> VideoResult:  # fmt: skip
    """Stylize the video ``source`` into ``output`` (.mp4, .m4v, .mov or .mkv; H.264, the audio
    copied) with ``style``: a :class:`FrameStylizer`, or what :func:`video_stylizer` takes, with its
    options in ``look`` (``strength``, ``preserve``, ``max_size``, ``decoder``, ``device``, ...).

    The output has the frames of [``start``, ``start + duration``) seconds from the video's first
    timestamp, with their timestamps (a part from ``start`` begins at 0 s), at the input's size (or
    ``max_size``), upright. ``crf``: x264's
    quality (0-51, lower is better). ``overwrite``: replace an existing output (never the input).
    ``on_progress`` follows each batch written; ``on_warning`` gets what was skipped (damaged
    packets; default: the ``instyle`` logger). With ``handle_signals`` (in the main thread) SIGINT
    and SIGTERM stop the run with :class:`VideoInterrupted`; no output is left either way.
    Raises VideoError for an input that is not a readable video, OutputError for an output
    refused before any work, WriteError when writing fails (a full disk)."""
    _check_options(crf, start, duration, batch_size)
    check_temporal(*(look.get(name, default) for name, default in _TEMPORAL_DEFAULTS))
    source, output = Path(source), Path(output)
    check_video_output(source, output, overwrite=overwrite)
    if isinstance(style, FrameStylizer) and look:
        raise ValueError(f"{next(iter(look))}: set it on the FrameStylizer given as style")
    with VideoReader(source, start=start, duration=duration, max_pixels=max_pixels) as reader:
        stylizer = style if isinstance(style, FrameStylizer) else video_stylizer(style, **look)
        run = _Run(reader, stylizer, output, crf=crf, batch_size=batch_size, on_progress=on_progress,
                   on_warning=on_warning or _log_warning)  # fmt: skip
        main_thread = threading.current_thread() is threading.main_thread()
        with caught_signals(handle_signals and main_thread) as caught:
            run.caught = caught
            write_atomic(output, run.write)
    writer = run.writer
    return VideoResult(
        source, output, writer.frames, writer.width, writer.height, writer.pixel_format, len(writer.audio),
        reader.skipped, time.perf_counter() - run.started,
    )  # fmt: skip


_TEMPORAL_DEFAULTS = (("temporal", DEFAULT_TEMPORAL), ("smoothing", DEFAULT_SMOOTHING), ("blend", DEFAULT_BLEND))


def _log_warning(text: str) -> None:
    import logging

    logging.getLogger("instyle").warning(text)


# ------------------------------------------------------------------------------- the pipeline

_END = object()  # the last item of a queue


class _Stopped(Exception):
    """The run is over elsewhere (an error, a signal): a worker leaves."""


@dataclass(frozen=True)
class _Styled:
    pixels: np.ndarray  # (N, H, W, 3) uint8
    pts: list[int]


class _Run:
    """One video through the three stages; :meth:`write` is the temporary file's writer."""

    def __init__(self, reader: VideoReader, stylizer: FrameStylizer, output: Path, *, crf: int, batch_size: int,
                 on_progress, on_warning) -> None:  # fmt: skip
        self.reader, self.stylizer, self.output = reader, stylizer, output
        self.crf, self.batch_size = crf, batch_size
        self.on_progress, self.on_warning = on_progress, on_warning
        self.stop = threading.Event()
        self.caught: list[int] = []
        self.decoded: queue.Queue = queue.Queue(maxsize=_QUEUED_BATCHES * batch_size)
        self.styled: queue.Queue = queue.Queue(maxsize=_QUEUED_BATCHES)
        self.started = time.perf_counter()
        self.writer: VideoWriter | None = None

    def write(self, file) -> None:
        info = self.reader.info
        self.writer = VideoWriter(
            file, OUTPUT_FORMATS[self.output.suffix.lower()], time_base=info.time_base, rate=info.rate, crf=self.crf,
            audio=self.reader.audio, on_warning=self.on_warning,
        )  # fmt: skip
        self.stylizer.reset()
        workers = [threading.Thread(target=self._decode, name="instyle-decode", daemon=True),
                   threading.Thread(target=self._stylize, name="instyle-stylize", daemon=True)]  # fmt: skip
        for worker in workers:
            worker.start()
        try:
            self._encode()
            if self.writer.frames == 0:
                raise VideoError(self.reader.path, self._no_frames())
            self.writer.finish()
        except BaseException:
            self.writer.abandon()
            raise
        finally:
            self.stop.set()
            for worker in workers:
                worker.join(timeout=30)

    def _no_frames(self) -> str:
        reader = self.reader
        if reader.start and reader.info.duration is not None and reader.start >= reader.info.duration:
            return f"no video frames from {reader.start:g} s on: it is {reader.info.duration:.3f} s long"
        damaged = f" ({reader.skipped} damaged packets skipped)" if reader.skipped else ""
        where = f" in the {reader.duration:g} s from {reader.start:g} s" if reader.start or reader.duration else ""
        return f"no video frames could be decoded{where}{damaged}"

    def _encode(self) -> None:
        """The calling thread: write what the stylizing thread hands on, until the end."""
        total = self.reader.info.expected_frames(self.reader.start, self.reader.duration)
        while True:
            item = self._get(self.styled, calling=True)
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, ReadWarning):
                self.on_warning(item.text)
            elif isinstance(item, _Styled):
                self.writer.write_frames(item.pixels, item.pts)
                if self.on_progress is not None:
                    done = self.writer.frames
                    self.on_progress(VideoProgress(done, max(total, done) if total else None, time.perf_counter() - self.started))
            else:
                self.writer.write_audio(item)

    def _get(self, items: queue.Queue, *, calling: bool = False):
        """The next item; meanwhile the calling thread notes signals, a worker the end of the run."""
        while True:
            if calling and self.caught:
                raise VideoInterrupted(self.caught[0], self.output)
            if not calling and self.stop.is_set():
                raise _Stopped
            try:
                return items.get(timeout=0.05)
            except queue.Empty:
                continue

    def _put(self, items: queue.Queue, item) -> None:
        while not self.stop.is_set():
            try:
                items.put(item, timeout=0.05)
                return
            except queue.Full:
                continue
        raise _Stopped

    def _decode(self) -> None:
        try:
            for item in self.reader:
                self._put(self.decoded, item)
            self._put(self.decoded, _END)
        except _Stopped:
            pass
        except BaseException as error:  # handed on, raised by the calling thread
            self._hand_on(self.decoded, error)

    def _stylize(self) -> None:
        frames: list[VideoFrame] = []
        try:
            while True:
                item = self._get(self.decoded)
                if isinstance(item, VideoFrame):
                    frames.append(item)
                    if len(frames) == self.batch_size:
                        self._put(self.styled, self._batch(frames))
                        frames = []
                    continue
                if item is _END and frames:
                    self._put(self.styled, self._batch(frames))
                self._put(self.styled, item)  # the end, an error, a warning or an audio packet
                if item is _END or isinstance(item, BaseException):
                    return
        except _Stopped:
            pass
        except BaseException as error:
            self._hand_on(self.styled, error)

    def _batch(self, frames: list[VideoFrame]) -> _Styled:
        batch = torch.from_numpy(np.stack([frame.pixels for frame in frames])).permute(0, 3, 1, 2)
        return _Styled(self.stylizer(batch), [frame.pts for frame in frames])

    def _hand_on(self, items: queue.Queue, error: BaseException) -> None:
        try:
            self._put(items, error)
        except _Stopped:
            pass
