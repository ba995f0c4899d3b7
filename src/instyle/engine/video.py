"""Video files through PyAV (FFmpeg inside the wheel; no system ffmpeg): reading frames and audio
packets (:class:`VideoReader`), writing H.264 with the audio copied (:class:`VideoWriter`).

What a real video brings, and what is done with it:

- Containers are opened only by the demuxers of :data:`ALLOWED_DEMUXERS` and only from local files
  (FFmpeg's playlists and concatenations, which open other files or URLs, are refused unparsed), as
  :mod:`instyle.engine.image` opens only its allowed image formats.
- The frame size is checked against the pixel limit of images (``max_pixels``) before any decoding.
- Frames are turned upright by their rotation (the display matrix of phone videos), as a photo by
  its EXIF orientation; the output carries no rotation.
- Timestamps are kept as they are (variable frame rate included), shifted only by ``start``; a
  packet that fails to decode is skipped with a warning naming its time, and the frames after it
  keep theirs.
- H.264 in 4:2:0 (``yuv420p``) has only even sizes (its cropping is in steps of 2 pixels): an odd
  width or height is written in 4:4:4 (``yuv444p``) so that the size stays the input's.
- Audio streams are copied packet by packet (no re-encoding), shifted and cut as the frames are.

Errors about the input are :class:`VideoError` (a ValueError naming the file); the writer's are
the OSErrors of the file it writes (a full disk), so :func:`instyle.engine.fileio.write_atomic`
names the output.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Sequence

import av
import numpy as np
from av.video.reformatter import Interpolation

from instyle.engine.fileio import OutputError, check_writable_output
from instyle.engine.image import IMAGE_EXTENSIONS, max_pixels_limit

__all__ = [
    "VideoError", "VideoInfo", "VideoFrame", "ReadWarning", "VideoReader", "VideoWriter", "ALLOWED_DEMUXERS",
    "OUTPUT_FORMATS", "check_video_output", "probe_video",
]  # fmt: skip

# FFmpeg demuxer names instyle opens (a demuxer called "mov,mp4,m4a,3gp,3g2,mj2" matches "mov"):
# the containers of camera, phone and web video. Playlists (hls, concat), images and raw formats
# that guess their parameters are left out.
ALLOWED_DEMUXERS = (
    "mov", "matroska", "webm", "avi", "mpegts", "mpeg", "flv", "ogg", "asf", "mxf", "nut", "h264", "hevc", "m4v",
    "ivf", "yuv4mpegpipe", "dv",
)  # fmt: skip
_ALLOWED_SHOWN = "MP4/MOV, Matroska/WebM, AVI, MPEG-TS/PS, FLV, Ogg, ASF/WMV, MXF, NUT, raw H.264/HEVC, IVF, Y4M, DV"
# The output's file name ending -> FFmpeg muxer; each holds H.264 and most audio codecs.
OUTPUT_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
# damaged packets warned about one by one; past that, counted
MAX_WARNINGS = 10
# The output's colours: RGB frames become Y'CbCr by BT.709 in the limited range, and are tagged so
# (colorspace, primaries, transfer: FFmpeg's codes, 1 each; sRGB shares BT.709's primaries). An
# untagged HD video is read as BT.709 by most players and as BT.601 by others.
BT709 = (1, 1, 1)
MPEG_RANGE = 1
# swscale's default conversion of 4:2:0 to RGB is darker by 1.1-1.2 levels on average (a fast path
# that rounds down, measured on geese.mp4 and gradients, 2026-12-06); this one is exact to 0.01.
ACCURATE = Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT


class VideoError(ValueError):
    """An input that cannot be read as a video; ``source`` names it, ``reason`` says why."""

    def __init__(self, source: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{os.fspath(source)}: {reason}")
        self.source = os.fspath(source)
        self.reason = reason


@dataclass(frozen=True)
class VideoInfo:
    """What the container says of a video before decoding: the stored frame size (before rotation),
    the video stream's time base, its average frame rate, duration and frame count where known, the
    codecs of its audio streams, and where its timestamps start."""

    path: Path
    width: int
    height: int
    time_base: Fraction
    rate: Fraction | None
    duration: float | None  # seconds
    frames: int | None
    audio: tuple[str, ...]
    start: float = 0.0  # the first timestamp, in seconds (an MPEG-TS often starts at 1.4 s)

    def expected_frames(self, start: float = 0.0, duration: float | None = None) -> int | None:
        """About how many frames lie in [start, start + duration): for a progress bar."""
        if not start and duration is None and self.frames:
            return self.frames
        if self.duration is None or not self.rate:
            return None
        length = self.duration - start if duration is None else min(duration, self.duration - start)
        return max(0, round(length * float(self.rate)))


@dataclass(frozen=True)
class VideoFrame:
    """A decoded frame, upright: ``pixels`` (H, W, 3) uint8 RGB, ``pts`` in the video's time base,
    already shifted by the reader's ``start``."""

    pixels: np.ndarray
    pts: int


@dataclass(frozen=True)
class ReadWarning:
    """Something skipped while reading (a damaged packet), in words naming the file and the time."""

    text: str


def check_video_output(source: str | os.PathLike, output: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Refuse, before any work, an output the video cannot go to: an unknown ending, the input
    itself, an existing file (unless ``overwrite``), a place no file can be written
    (:func:`instyle.engine.fileio.check_writable_output`). Raises OutputError naming ``output``."""
    source, output = Path(source), Path(output)
    if output.suffix.lower() not in OUTPUT_FORMATS:
        raise OutputError("output", f"{output}: use a file name ending in {', '.join(OUTPUT_FORMATS)}")
    if output.exists() and source.exists() and os.path.samefile(output, source):
        raise OutputError("output", f"{output} is the input video; name another file")
    if output.exists() and not output.is_dir() and not overwrite:
        raise OutputError("output", f"{output} exists; pass overwrite=True to replace it")
    check_writable_output(output, field="output")


def probe_video(source: str | os.PathLike, *, max_pixels: int | None = None) -> VideoInfo:
    """What :class:`VideoReader` would find in ``source``, checked the same way; reads no frame."""
    with VideoReader(source, max_pixels=max_pixels) as reader:
        return reader.info


def _open_input(path: Path):
    """The input container, opened by an allowed demuxer from the local file alone."""
    if not path.exists():
        raise VideoError(path, "no such file")
    if path.is_dir():
        raise VideoError(path, "is a folder, not a video file")
    if path.stat().st_size == 0:
        raise VideoError(path, "empty file (0 bytes)")
    options = {"format_whitelist": ",".join(ALLOWED_DEMUXERS), "protocol_whitelist": "file"}
    try:
        return av.open(os.fspath(path), "r", container_options=options)
    except (av.FFmpegError, OSError) as error:
        hint = "; it looks like an image: use `instyle stylize`" if path.suffix.lower() in IMAGE_EXTENSIONS else ""
        if isinstance(error, PermissionError) or getattr(error, "errno", None) == 13:
            raise VideoError(path, "permission denied") from None
        raise VideoError(path, f"not a video in a format instyle reads ({_ALLOWED_SHOWN}){hint}") from None


class VideoReader:
    """A video file's frames and audio packets, in file order, from ``start`` seconds for
    ``duration`` seconds (None: to the end). Iterating yields :class:`VideoFrame`, the audio streams'
    ``av.Packet``\\ s (to copy) and :class:`ReadWarning`\\ s. Opening checks the file: VideoError
    for anything that is not a readable video, or frames over ``max_pixels``."""

    def __init__(
        self, source: str | os.PathLike, *, start: float = 0.0, duration: float | None = None,
        max_pixels: int | None = None,
    ) -> None:  # fmt: skip
        self.path = Path(source)
        limit = max_pixels_limit(max_pixels)
        self.container = _open_input(self.path)
        try:
            self.video = self._video_stream()
            self.audio = list(self.container.streams.audio)
            self.info = self._info()
            if self.info.width * self.info.height > limit:
                raise VideoError(
                    self.path, f"too many pixels: {self.info.width} x {self.info.height} a frame is over the limit of "
                    f"{limit}; raise max_pixels to read it",
                )  # fmt: skip
        except BaseException:
            self.container.close()
            raise
        # ``start`` and ``duration`` count from the video's first timestamp; a part begins at 0 s,
        # a whole video keeps its timestamps
        self.start, self.duration = start, duration
        self.shift = self.info.start + start if start else 0.0  # seconds taken off every timestamp
        self.end = None if duration is None else self.info.start + start + duration
        self.skipped = 0  # damaged packets
        self.size: tuple[int, int] | None = None  # the first frame's stored (width, height)

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.container.close()

    def _video_stream(self):
        """The first video stream that moves: cover art (an attached picture) is not one."""
        streams = self.container.streams
        moving = [s for s in streams.video if not s.disposition & av.stream.Disposition.attached_pic]
        if not moving:
            kinds = sorted({s.type for s in streams})
            found = f"it has {' and '.join(kinds)} streams only" if kinds else "it has no streams"
            raise VideoError(self.path, f"no video stream ({'its only picture is cover art' if streams.video else found})")
        video = moving[0]
        if video.codec_context is None or not video.codec_context.width or not video.codec_context.height:
            raise VideoError(self.path, f"its video stream ({video.codec_context.name if video.codec_context else 'unknown codec'}) has no frame size")
        return video

    def _info(self) -> VideoInfo:
        video = self.video
        duration = None
        if video.duration is not None and video.time_base:
            duration = float(video.duration * video.time_base)
        elif self.container.duration is not None:
            duration = self.container.duration / av.time_base
        rate = video.average_rate or video.guessed_rate
        return VideoInfo(
            self.path, video.codec_context.width, video.codec_context.height, video.time_base or Fraction(1, 90000),
            Fraction(rate) if rate else None, duration, video.frames or None,
            tuple(s.codec_context.name if s.codec_context else "unknown" for s in self.audio),
            float(video.start_time * video.time_base) if video.start_time is not None and video.time_base else 0.0,
        )  # fmt: skip

    # ------------------------------------------------------------------------------- reading

    def __iter__(self) -> Iterator[VideoFrame | ReadWarning | av.Packet]:
        read = self._seek()
        state = _Timeline(*self._ticks(self.info.time_base))
        audio_ends = {s.index: self._ticks(s.time_base) for s in self.audio}
        audio_done: set[int] = set()
        for packet in itertools.chain(read, self._packets()):
            if isinstance(packet, ReadWarning):
                yield packet
            elif packet.stream.type == "video":
                if not state.done:
                    yield from self._decode(packet, state)
            elif packet.dts is not None and packet.stream.index not in audio_done:
                cut, shift, end = audio_ends[packet.stream.index]
                if end is not None and packet.pts is not None and packet.pts >= end:
                    audio_done.add(packet.stream.index)
                elif packet.pts is None or not cut or packet.pts >= shift:  # uncut: the encoder's priming too
                    packet.pts, packet.dts = _minus(packet.pts, shift), _minus(packet.dts, shift)
                    yield packet
            if state.done and len(audio_done) == len(self.audio):
                return

    def _ticks(self, time_base: Fraction) -> tuple[bool, int, int | None]:
        """In a stream's ``time_base``: whether earlier packets are cut (a ``start`` was given),
        the ticks taken off every timestamp, and the end (None: none)."""
        def ticks(seconds: float) -> int:
            return round(seconds / time_base) if time_base else 0

        return bool(self.start), ticks(self.shift), None if self.end is None else max(ticks(self.end), ticks(self.shift) + 1)

    def _seek(self) -> list[av.Packet]:
        """To the key frame at or before ``start``, and the packets read to see that it got there
        (to be used first). A container that cannot seek, or lands elsewhere (an MPEG-TS seeks by
        bytes, often past the key frame), is read from its beginning."""
        if not self.start:
            return []
        target = round(self.shift / self.info.time_base)
        read = []
        try:
            self.container.seek(target, stream=self.video, backward=True)
            for packet in self.container.demux(self.video, *self.audio):
                read.append(packet)
                if packet.stream.type == "video" and packet.size:
                    if packet.is_keyframe and packet.pts is not None and packet.pts <= target:
                        return read
                    break
        except (av.FFmpegError, OSError):
            pass
        video, audio = self.video.index, [s.index for s in self.audio]  # before the streams go with the container
        self.container.close()  # from the beginning: the same file opened again
        self.container = _open_input(self.path)
        by_index = {stream.index: stream for stream in self.container.streams}
        self.video, self.audio = by_index[video], [by_index[i] for i in audio]
        return []

    def _packets(self) -> Iterator[av.Packet | ReadWarning]:
        """The packets of the video and audio streams; a read that fails is retried from where the
        demuxer stands (it resyncs), and after 10 failures in a row the rest is given up."""
        failures = 0
        while True:
            try:
                for packet in self.container.demux(self.video, *self.audio):
                    failures = 0
                    yield packet
                return
            except (av.FFmpegError, OSError) as error:
                failures += 1
                if failures > 10:
                    yield ReadWarning(f"{self.path}: the rest of the file cannot be read ({_reason(error)}); it ends here")
                    return
                self.skipped += 1
                yield ReadWarning(f"{self.path}: skipped unreadable data ({_reason(error)})")

    def _decode(self, packet: av.Packet, state: _Timeline) -> Iterator[VideoFrame | ReadWarning]:
        """The frames of one video packet (the last, empty one flushes the decoder), those in range."""
        try:
            frames = packet.decode()
        except (av.FFmpegError, OSError) as error:
            self.skipped += 1
            if self.skipped <= MAX_WARNINGS:
                yield ReadWarning(self._damaged(packet, error))
            return
        for frame in frames:
            pts = state.place(frame.pts if frame.pts is not None else frame.dts)
            if pts is not None:
                yield VideoFrame(self._upright(frame), pts)

    def _damaged(self, packet: av.Packet, error: BaseException) -> str:
        at = packet.pts if packet.pts is not None else packet.dts
        when = f"at {float(at * self.info.time_base):.3f} s" if at is not None else "after the last good frame"
        more = "; further damaged packets are skipped without a warning" if self.skipped == MAX_WARNINGS else ""
        return f"{self.path}: skipped a damaged video packet {when} ({_reason(error)}){more}"

    def _upright(self, frame) -> np.ndarray:
        """(H, W, 3) uint8 RGB, turned by the frame's rotation; a frame whose size changed in the
        stream is scaled to the first one's (the output has one size)."""
        if self.size is None:
            self.size = (frame.width, frame.height)
        width, height = self.size
        pixels = frame.reformat(width=width, height=height, format="rgb24", interpolation=ACCURATE).to_ndarray()
        quarter_turns = round((frame.rotation or 0) / 90) % 4  # counter-clockwise, as np.rot90 turns
        return np.ascontiguousarray(np.rot90(pixels, quarter_turns)) if quarter_turns else pixels


class _Timeline:
    """Frame timestamps in range and strictly increasing (an encoder refuses repeats), less
    ``shift``; a frame without one follows the last by one tick. With ``cut``, frames before
    ``shift`` are left out (those decoded from the key frame before a ``start``)."""

    def __init__(self, cut: bool, shift: int, end: int | None) -> None:
        self.cut, self.shift, self.end, self.last, self.done = cut, shift, end, None, False

    def place(self, pts: int | None) -> int | None:
        """The output timestamp of a frame at ``pts``; None outside the range, and past its end
        ``done`` turns true."""
        if pts is None:
            pts = self.shift if self.last is None else self.last + self.shift + 1
        if self.cut and pts < self.shift:
            return None
        if self.end is not None and pts >= self.end:
            self.done = True
            return None
        shifted = pts - self.shift
        if self.last is not None and shifted <= self.last:
            shifted = self.last + 1
        self.last = shifted
        return shifted


def _minus(value: int | None, offset: int) -> int | None:
    return None if value is None else value - offset


def _reason(error: BaseException) -> str:
    text = getattr(error, "strerror", None) or str(error)
    return text.split(":")[0].strip() or type(error).__name__


# ----------------------------------------------------------------------------------- writing


class VideoWriter:
    """H.264 (libx264, ``crf``) into ``file`` (a binary file object open for writing, seekable) in
    the container of ``output_format`` (an :data:`OUTPUT_FORMATS` value), with the audio streams of
    ``audio`` copied. The video stream takes its size from the first frames written; frames come as
    uint8 (N, H, W, 3) RGB with their timestamps in ``time_base``."""

    def __init__(
        self, file: BinaryIO, output_format: str, *, time_base: Fraction, rate: Fraction | None, crf: int,
        audio: Sequence = (), on_warning: Callable[[str], None] | None = None,
    ) -> None:  # fmt: skip
        self.sink = _Sink(file)
        self.container = av.open(self.sink, "w", format=output_format)
        self.time_base, self.rate, self.crf = time_base, rate, crf
        self.on_warning = on_warning or (lambda text: None)
        self.video = self.container.add_stream("libx264")  # first, as players expect; sized at the first frame
        self.audio, self.dropped = {}, []
        for stream in audio:
            name = stream.codec_context.name if stream.codec_context else "unknown"
            if name in self.container.supported_codecs:
                self.audio[stream.index] = self.container.add_stream_from_template(stream)
            else:
                self.dropped.append(name)
                self.on_warning(f"audio in {name} cannot go into {output_format}; it is left out (an .mkv output takes it)")
        self.pending: list[av.Packet] | None = []  # audio before the header, which the first frame writes
        self.frames, self.width, self.height, self.pixel_format = 0, 0, 0, "yuv420p"

    def _open_video(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.pixel_format = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        if self.pixel_format != "yuv420p":
            self.on_warning(
                f"{width} x {height}: H.264 in yuv420p has even sizes only; written in yuv444p to keep the size "
                "(some players, browsers among them, do not play it)"
            )  # fmt: skip
        stream = self.video
        stream.width, stream.height, stream.pix_fmt = width, height, self.pixel_format
        stream.time_base = stream.codec_context.time_base = self.time_base
        context = stream.codec_context  # tagged as the frames are converted: players assume BT.709 for HD
        context.colorspace, context.color_primaries, context.color_trc, context.color_range = BT709 + (MPEG_RANGE,)
        if self.rate:
            stream.codec_context.framerate = self.rate
        stream.options = {"crf": str(self.crf)}

    def write_frames(self, pixels: np.ndarray, pts: Sequence[int]) -> None:
        if self.frames == 0:
            self._open_video(pixels.shape[2], pixels.shape[1])
        for image, stamp in zip(pixels, pts):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(
                format=self.pixel_format, dst_colorspace=BT709[0], dst_color_range=MPEG_RANGE,
                dst_color_primaries=BT709[1], dst_color_trc=BT709[2],
            )  # fmt: skip
            frame.pts, frame.time_base = int(stamp), self.time_base
            self.container.mux(self.video.encode(frame))
            self.frames += 1
            if self.pending:  # the header is written: the audio read so far can follow
                self.container.mux(self.pending)
            self.pending = None
        self.sink.check()

    def write_audio(self, packet: av.Packet) -> None:
        stream = self.audio.get(packet.stream.index)
        if stream is None:
            return
        packet.stream = stream
        if self.pending is not None:
            self.pending.append(packet)
        else:
            self.container.mux(packet)
            self.sink.check()

    def finish(self) -> None:
        """The encoder's last frames and the container's index; the file is complete after this."""
        try:
            if self.frames:
                self.container.mux(self.video.encode(None))
            self.sink.check()
        except BaseException:
            self.abandon()
            raise
        try:
            self.container.close()
        except av.FFmpegError as error:
            raise OSError(getattr(error, "errno", None) or 5, f"the container could not be finished ({_reason(error)})") from error
        self.sink.check()

    def abandon(self) -> None:
        """Close after a failure, without letting the close's own error hide the first one."""
        try:
            self.container.close()
        except Exception:
            pass


class _Sink:
    """The output file as FFmpeg writes it. A failed write (a full disk) is kept and raised by the
    writer after the call that made it, never inside FFmpeg: PyAV re-raises an error from a
    callback only where FFmpeg passes it on, and prints it with a traceback where it does not (the
    header's write); the writes after it are dropped, the file being discarded."""

    def __init__(self, file: BinaryIO) -> None:
        self.file, self.error = file, None

    def write(self, data) -> int:
        if self.error is None:
            try:
                self.file.write(data)
            except OSError as error:
                self.error = error
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def check(self) -> None:
        if self.error is not None:
            raise self.error
