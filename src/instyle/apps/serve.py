"""``instyle serve``: a local web page that stylizes one uploaded photo at a time (Gradio).

``build_app(service)`` returns the page as a ``gr.Blocks``; ``launch(app, host, port)`` serves it.
The style is a bundled or given generator, or a painting the visitor uploads (arbitrary style
transfer with AdaIN, issue #18), when the server has an AdaIN decoder (:func:`load_painting_model`).
Every request goes through one bounded queue that runs one job at a time. An upload (the photo,
and the painting as well) is checked for its size in bytes before anything reads it, and for its
pixel count from the image header before any pixel is decoded
(:func:`instyle.engine.image.load_image`). A refused or failed request reaches the page as a short
message, never a traceback or a path on the server; the server keeps no per-request state, so its
memory stays flat over many requests.

Uploads reach Gradio's upload route outside the queue, so :class:`UploadGuard` bounds what they
store: each upload, each client address's uploads and all uploads together, counted as the body
streams and refused before it is stored; files older than ``upload_max_age`` are removed. The page
keeps its files in a folder of its own, removed when the server stops.

Gradio is an optional dependency: ``pip install 'instyle[web]'``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import math
import os
import re
import shutil
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
from PIL import Image

from instyle.engine.catalog import adain_decoder_path, bundled_styles, style_thumbnail
from instyle.engine.color import PRESERVE_COLOR
from instyle.engine.config import ConfigError
from instyle.engine.image import ImageError, load_image, max_pixels_limit, to_pil
from instyle.engine.inference.adain import AdaINModel, load_adain
from instyle.engine.inference.stylize import StyleModel, load_model, release_freed_memory
from instyle.engine.inference.video import TemporalStylizer, stylize_video
from instyle.engine.modelfile import ModelFileError
from instyle.engine.video import VideoError, probe_video

__all__ = [
    "DEFAULT_CLIENT_UPLOAD_BYTES",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_TOTAL_UPLOAD_BYTES",
    "DEFAULT_UPLOAD_MAX_AGE",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_QUEUE_SIZE",
    "NO_MIX",
    "DEFAULT_MAX_VIDEO_SECONDS",
    "DEFAULT_MAX_VIDEO_SIZE",
    "PAINTING",
    "PRESERVE_CHOICES",
    "RequestError",
    "ServeLimits",
    "StyleService",
    "UploadGuard",
    "load_painting_model",
    "load_styles",
    "mixable",
    "build_app",
    "launch",
]

DEFAULT_MAX_UPLOAD_BYTES = 20_000_000
# An address may keep five full-size uploads (a dozen phone photos) at once, and the server 25 of
# them: 500 MB is a size any machine that runs the page can spare, and needs at least five
# addresses filling their share to reach. Uploads live 15 minutes: long enough to try several
# styles on one photo (each press reads the upload again), short enough to give the space back.
DEFAULT_CLIENT_UPLOAD_BYTES = 100_000_000
DEFAULT_TOTAL_UPLOAD_BYTES = 500_000_000
DEFAULT_UPLOAD_MAX_AGE = 900.0  # seconds
DEFAULT_MAX_SIZE = 1024  # long side of the result, in pixels: a CPU answers in seconds
DEFAULT_QUEUE_SIZE = 8  # requests waiting behind the running one; more are turned away
# A clip: 10 s at 30 frames/s is 300 frames; at a long side of 480 px a 2-core CPU stylizes
# about 3 a second, so the answer comes in under two minutes. Its bytes: a photo's limit unless set
# (20 MB holds 10 s of 1080p phone video).
DEFAULT_MAX_VIDEO_SECONDS = 10.0
DEFAULT_MAX_VIDEO_SIZE = 480
PRESERVE_CHOICES = PRESERVE_COLOR  # the web page offers what stylize accepts
NO_MIX = "(no mix)"  # the mix list's first entry: the picked style alone
PAINTING = "Your painting"  # the style list's entry for the painting the visitor uploads (AdaIN)

_log = logging.getLogger(__name__)


class RequestError(ValueError):
    """A request refused with a message fit for the page: short, no path, no traceback."""


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask of the server."""

    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int | None = None  # None: $INSTYLE_MAX_PIXELS, else instyle.image's 50 MP
    max_size: int | None = DEFAULT_MAX_SIZE  # None: stylize at the upload's own size
    queue_size: int = DEFAULT_QUEUE_SIZE
    client_upload_bytes: int = DEFAULT_CLIENT_UPLOAD_BYTES  # one client address's uploads kept at once
    total_upload_bytes: int = DEFAULT_TOTAL_UPLOAD_BYTES  # all uploads kept at once
    upload_max_age: float = DEFAULT_UPLOAD_MAX_AGE  # seconds an upload is kept
    max_video_bytes: int | None = None  # a clip's upload; None: max_upload_bytes, as a photo's
    max_video_seconds: float = DEFAULT_MAX_VIDEO_SECONDS  # longer clips are refused
    max_video_size: int = DEFAULT_MAX_VIDEO_SIZE  # long side of a stylized clip's frames

    @property
    def video_bytes(self) -> int:
        return self.max_upload_bytes if self.max_video_bytes is None else self.max_video_bytes

    @property
    def largest_upload(self) -> int:
        """Bytes the upload route lets through: a photo's or a clip's limit, the larger."""
        return max(self.max_upload_bytes, self.video_bytes)

    def __post_init__(self) -> None:
        names = ("max_upload_bytes", "queue_size", "client_upload_bytes", "total_upload_bytes", "max_video_size")
        for name in names + (("max_video_bytes",) if self.max_video_bytes is not None else ()):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.max_size is not None and (not isinstance(self.max_size, int) or self.max_size < 1):
            raise ValueError(f"max_size must be a positive int or None, got {self.max_size!r}")
        for name in ("upload_max_age", "max_video_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        video = [("max_video_bytes", "client_upload_bytes")] if self.max_video_bytes is not None else []
        pairs = [("max_upload_bytes", "client_upload_bytes"), *video, ("client_upload_bytes", "total_upload_bytes")]
        for small, large in pairs:
            low, high = getattr(self, small), getattr(self, large)
            if high < low:  # no upload could ever be kept
                raise ValueError(f"{large} ({_megabytes(high)}) is less than {small} ({_megabytes(low)})")
        max_pixels_limit(self.max_pixels)  # raises on a bad value or a bad $INSTYLE_MAX_PIXELS


def _each_style(model: StyleModel) -> list[StyleModel]:
    """A model as the page lists it: a multi-style file given whole as one entry per style, each
    sharing the file's network (so that two of them mix); any other model as it is."""
    if not model.styles or model.style is not None:
        return [model]
    return [StyleModel(model.generator, model.metadata, name, source=model.source, style=name) for name in model.styles]


def mixable(first: StyleModel, second: StyleModel) -> bool:
    """Whether two listed styles mix: two styles of one multi-style network."""
    return first is not second and first.style is not None and second.style is not None and first.generator is second.generator


def _bundled_entries() -> list[tuple[str, StyleModel, str]]:
    """(catalog name, model, name) of each bundled style, in list_models' order: listed as `instyle
    models` lists them (``multi:udnie`` beside a file ``udnie``), and a multi-style file loaded once, its
    styles sharing its network so that the page mixes them."""
    entries, files = [], {}
    for style in bundled_styles():
        if style.style is None:
            entries.append((style.name, load_model(style.path), style.name))
            continue
        if style.path not in files:
            files[style.path] = {m.style: m for m in _each_style(load_model(style.path))}
        entries.append((style.name, files[style.path][style.style], style.name))
    return entries


def load_styles(model_paths: Sequence[str | os.PathLike] = (), *, required: bool = True) -> dict[str, StyleModel]:
    """The bundled styles and the given model files, loaded once, by the name the page shows.

    Raises ModelFileError for an unreadable model file, ValueError when there is no style at all
    and ``required`` (a page with a painting upload needs no generator).
    """
    styles: dict[str, StyleModel] = {}
    given = [(model.name, model, source) for source in model_paths for model in _each_style(load_model(source))]
    for name, model, source in [*given, *_bundled_entries()]:  # the files asked for first (the page's default)
        if name in styles:  # two files with one style name: tell them apart by file name
            name = f"{model.name} ({Path(source).name})"
        if name in styles:
            raise ModelFileError(f"--model {source}: given twice")
        styles[name] = model
    if not styles and required:
        raise ValueError(
            "no styles to serve: no style is bundled yet, pass --model PATH (a trained .safetensors) "
            "or --decoder FILE (an AdaIN decoder, for any painting)"
        )
    return styles


def load_painting_model(decoder: str | os.PathLike | None = None) -> AdaINModel | None:
    """The AdaIN model behind the page's painting upload: ``decoder`` (a file from ``instyle
    train-adain``), else the bundled decoder; None when there is neither.

    Loaded here, once per server and before it serves: a bad decoder file, or VGG-19 weights that
    cannot be fetched, stop the server at its start rather than fail the first visitor's painting,
    and no request waits for the encoder to load. Raises ModelFileError, WeightsError.
    """
    try:
        path = adain_decoder_path(decoder)
    except ConfigError:  # none given, none bundled
        return None
    return load_adain(path)


class StyleService:
    """Turns one upload into one stylized image, or a RequestError with a short message."""

    def __init__(
        self,
        styles: Mapping[str, StyleModel],
        limits: ServeLimits | None = None,
        *,
        adain: AdaINModel | None = None,
        device: str = "auto",
        dtype: str = "fp32",
    ) -> None:
        if not styles and adain is None:
            raise ValueError("StyleService needs at least one style or an AdaIN model")
        if PAINTING in styles:
            raise ValueError(f"a style may not be named {PAINTING!r}: the page lists the uploaded painting so")
        self.styles = dict(styles)
        self.adain = adain  # None: no painting upload (no decoder)
        self.limits = limits if limits is not None else ServeLimits()
        self.device = device
        self.dtype = dtype
        # Every job runs on this one thread, one at a time. Gradio calls handlers from a pool of
        # up to 40 threads, and glibc gives each new thread its own malloc arena: the same work
        # spread over many threads keeps more memory resident, growing as new threads join.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="instyle-serve")

    @property
    def choices(self) -> list[str]:
        """The page's style list: the generators' names, then :data:`PAINTING` when there is a decoder."""
        return [*self.styles, *([PAINTING] if self.adain is not None else [])]

    def __call__(
        self, upload: str | os.PathLike | None, style: str, strength: float, preserve: str,
        painting: str | os.PathLike | None = None, mix_with: str | None = None, mix: float = 0.0,
    ) -> Image.Image:  # fmt: skip
        """Stylize ``upload`` (a file path) with ``style``, one of :attr:`choices` (for
        :data:`PAINTING`, in the style of ``painting``, a file path), mixed with the style
        ``mix_with`` by ``mix`` in [0, 1] (the second style's share; two styles of one multi-style
        model); raises RequestError with a message for the page."""
        return self._worker.submit(self._job, upload, style, strength, preserve, painting, mix_with, mix).result()

    def _job(self, *request) -> Image.Image:
        try:
            return self._stylize(*request)
        finally:
            release_freed_memory()  # glibc keeps a job's freed memory otherwise

    def _stylize(self, upload, style, strength, preserve, painting, mix_with=None, mix=0.0) -> Image.Image:
        if upload is None:
            raise RequestError("Upload a photo first.")
        model = self._model(style, painting)
        strength = _checked_look(strength, preserve)
        extra = self._mix(model, mix_with, mix)
        image = self._read(upload, "Photo")  # (3, H, W)
        if model is self.adain:  # the painting as pixels, read by the photo's rules; AdaIN takes its statistics at 512 px
            extra = {"style": self._read(painting, "Painting")}
        max_size = self.limits.max_size
        if max_size is not None and max(image.shape[-2:]) <= max_size:
            max_size = None  # a cap: smaller photos keep their size (stylize would enlarge them)
        try:
            stylized = model.stylize(  # (3, H, W) in [0, 1]
                image,
                strength=strength,
                preserve=preserve,
                max_size=max_size,
                device=self.device,
                dtype=self.dtype,
                **extra,
            )
        except ImageError as error:  # the painting: too small for its statistics
            raise RequestError(_for_page(_short_image_reason(error.reason), "Painting")) from None
        except torch.OutOfMemoryError:
            _release_cached_memory()
            raise RequestError("Not enough memory for an image this large; try a smaller one.") from None
        except RuntimeError as error:  # NaN output, backend failures: details go to the log only
            _log.exception("stylizing with %s failed", style)
            raise RequestError("The style could not be applied to this photo.") from error
        return to_pil(stylized)

    def _model(self, style: str, painting) -> StyleModel | AdaINModel:
        """The model for ``style``: a generator, or AdaIN for :data:`PAINTING` with a painting."""
        if style == PAINTING:
            if self.adain is None:
                raise RequestError("A painting as the style needs an AdaIN decoder, and this server has none.")
            if painting is None:
                raise RequestError("Upload a painting first, or pick one of the listed styles.")
            return self.adain
        model = self.styles.get(style)
        if model is None:
            raise RequestError("Pick one of the listed styles.")
        return model

    def _mix(self, model, mix_with: str | None, mix) -> dict:
        """``stylize``'s ``style`` for a mix of ``model``'s style with ``mix_with`` (its share
        ``mix``); {} for no mix (no second style, or a share of 0)."""
        if not mix_with or mix_with == NO_MIX:
            return {}
        if isinstance(mix, bool) or not isinstance(mix, (int, float)) or not 0 <= mix <= 1:
            raise RequestError("The mix must be a number from 0 to 1.")
        other = self.styles.get(mix_with)
        if other is None or not isinstance(model, StyleModel) or not mixable(model, other):
            raise RequestError("Only two styles of one multi-style model mix: pick two of its styles.")
        return {"style": {model.style: 1.0 - mix, other.style: float(mix)}} if mix > 0 else {}

    def mix_choices(self) -> list[str]:
        """The styles that mix with another listed style (of one multi-style model), after :data:`NO_MIX`."""
        mixes = [name for name, model in self.styles.items() if any(mixable(model, o) for o in self.styles.values())]
        return [NO_MIX, *mixes] if mixes else []

    def _read(self, upload: str | os.PathLike, what: str) -> torch.Tensor:
        """The upload as (3, H, W) in [0, 1]: bytes, then header pixels, then decoding; a
        RequestError's message starts with ``what`` (Photo, Painting)."""
        try:
            size = os.path.getsize(upload)
        except OSError:
            raise RequestError(_for_page("The upload could not be read; try again.", what)) from None
        limit = self.limits.max_upload_bytes
        if size > limit:
            raise RequestError(_for_page(f"The file is {_megabytes(size)}; the limit is {_megabytes(limit)}.", what))
        try:
            return load_image(upload, max_pixels=self.limits.max_pixels)
        except ImageError as error:
            raise RequestError(_for_page(_short_image_reason(error.reason), what)) from None


    # ------------------------------------------------------------------------------ a clip

    def video(
        self, upload: str | os.PathLike | None, style: str, strength: float, preserve: str,
        painting: str | os.PathLike | None = None, *, folder: str | os.PathLike | None = None,
    ) -> Path:  # fmt: skip
        """Stylize the clip ``upload`` (a file path) as :meth:`__call__` a photo, with the default
        temporal remedy, into a new folder under ``folder``: the .mp4's path. RequestError for the page."""
        return self._worker.submit(self._video_job, upload, style, strength, preserve, painting, folder).result()

    def _video_job(self, *request) -> Path:
        try:
            return self._stylize_video(*request)
        finally:
            release_freed_memory()

    def _stylize_video(self, upload, style, strength, preserve, painting, folder) -> Path:
        if upload is None:
            raise RequestError("Upload a video first.")
        model = self._model(style, painting)
        strength = _checked_look(strength, preserve)
        self._check_clip(upload)
        look = dict(strength=strength, preserve=preserve, max_size=self.limits.max_video_size, device=self.device, dtype=self.dtype)
        if model is self.adain:
            look["style"] = model.style(self._read(painting, "Painting"), device=self.device, dtype=self.dtype)
        if folder is not None:
            Path(folder).mkdir(parents=True, exist_ok=True)
        place = Path(tempfile.mkdtemp(prefix="video-", dir=folder))
        output = place / (re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{Path(upload).stem[:40]}_{style}")[:80] + ".mp4")
        try:
            stylize_video(upload, output, _EvenFrames(model, **look), duration=self.limits.max_video_seconds,
                          max_pixels=self.limits.max_pixels, handle_signals=False)  # fmt: skip
        except BaseException as error:
            shutil.rmtree(place, ignore_errors=True)
            raise _video_refusal(error, style) from None
        return output

    def _check_clip(self, upload) -> None:
        """The clip's bytes, then its header (a video stream, the pixel limit), then its length."""
        try:
            size = os.path.getsize(upload)
        except OSError:
            raise RequestError("Video: the upload could not be read; try again.") from None
        limit = self.limits.video_bytes
        if size > limit:
            raise RequestError(f"Video: the file is {_megabytes(size)}; the limit is {_megabytes(limit)}.")
        try:
            info = probe_video(upload, max_pixels=self.limits.max_pixels)
        except VideoError as error:
            raise RequestError(f"Video: {_short_video_reason(error.reason)}") from None
        longest = self.limits.max_video_seconds
        if info.duration is not None and info.duration > longest + 0.05:  # a frame's slack: "10 s" clips run 10.01 s
            raise RequestError(f"Video: the clip is {info.duration:.1f} s long; the limit is {longest:g} s.")


class _EvenFrames(TemporalStylizer):
    """Frames cropped to even sides (the last row or column of an odd one): browsers play H.264 in
    4:2:0 only, which has even sides (an odd side would be written in 4:4:4)."""

    def sized(self, frames: torch.Tensor) -> torch.Tensor:
        frames = super().sized(frames)
        h, w = frames.shape[-2:]
        return frames[..., : h - h % 2 if h > 1 else h, : w - w % 2 if w > 1 else w]


def _video_refusal(error: BaseException, style: str) -> BaseException:
    """What the page says about a clip that failed on its way through (an error to raise)."""
    if isinstance(error, VideoError):
        return RequestError(f"Video: {_short_video_reason(error.reason)}")
    if isinstance(error, ImageError):  # the painting: too small for its statistics
        return RequestError(_for_page(_short_image_reason(error.reason), "Painting"))
    if isinstance(error, torch.OutOfMemoryError):
        _release_cached_memory()
        return RequestError("Not enough memory for a clip this large; try a smaller one.")
    if isinstance(error, (RuntimeError, OSError)):  # NaN output, a full disk: details go to the log only
        _log.error("stylizing a clip with %s failed", style, exc_info=error)
        return RequestError("The style could not be applied to this clip.")
    return error


def _short_video_reason(reason: str) -> str:
    """VideoError's reason for a person: no file names, no FFmpeg internals."""
    if reason.startswith("not a video") or reason.startswith("empty file"):
        return "that file is not a video this server reads (MP4, MOV, WebM, MKV, AVI, ...)."
    if reason.startswith("no video stream"):
        return "the file has no video in it."
    if "too many pixels" in reason:
        return "its frames have too many pixels for this server."
    if reason.startswith("no video frames"):
        return "no frame of it could be decoded; the file may be damaged."
    return "the file could not be read as a video; it may be damaged."


def _checked_look(strength, preserve) -> float:
    """``strength`` as a float, after checking it and ``preserve``; RequestError for the page."""
    if preserve not in PRESERVE_CHOICES:
        raise RequestError(f"Colour preservation must be one of: {', '.join(PRESERVE_CHOICES)}.")
    try:
        strength = float(strength)
    except (TypeError, ValueError):
        raise RequestError("Strength must be a number from 0 to 1.") from None
    if not 0.0 <= strength <= 1.0:
        raise RequestError("Strength must be a number from 0 to 1.")
    return strength


def _for_page(message: str, what: str) -> str:
    """``message`` about one upload, led by which one: "Painting: the file is empty."."""
    return f"{what}: {message[0].lower()}{message[1:]}"


def _short_image_reason(reason: str) -> str:
    """ImageError's reason for a person: no Pillow internals, no file names."""
    if reason.startswith("not an image"):
        return "That file is not a PNG, JPEG, WebP, BMP, TIFF or GIF image."
    if "exceeds the limit" in reason or "too many pixels" in reason:
        size = reason.split(" = ", 1)[0] if " = " in reason else "The image"
        return f"{size} has too many pixels for this server."
    if reason.startswith("empty file"):
        return "The file is empty."
    if "format" in reason and "not allowed" in reason:
        return "That image format is not accepted; use PNG, JPEG, WebP, BMP, TIFF or GIF."
    if "too small for a painting" in reason:  # AdaIN's: "96 x 40 pixels is too small ...: at least 64 px a side"
        return f"{reason.replace(': at least', '; it needs at least', 1)}."
    return "The image could not be decoded; the file may be damaged."


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _release_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------- uploads

_FOLDER_PREFIX = "instyle-serve-"
_MULTIPART_SLACK = 64_000  # a request's bytes besides the file: boundaries, part headers, file name
_MIN_CHARGE = 8192  # an upload costs at least the disk blocks of its file and its folder


@dataclass
class _Charge:
    """What one upload request may store: its Content-Length while it streams, then what came."""

    size: int
    end: float | None = None  # time.time() when the request was done; None while it streams


class UploadGuard:
    """Bounds what Gradio's upload route, which runs outside the one-job queue, keeps on disk.

    Each upload is charged to its client address: its Content-Length before a byte is read (a
    request without one is refused), then the bytes that came, counted as they stream. A request
    larger than ``largest_upload`` (a photo's or a clip's), or that would take its address past ``client_upload_bytes``
    or all addresses past ``total_upload_bytes``, gets a short text the page shows (413, 429, 503)
    and its body is read and dropped, never stored. :meth:`sweep` removes the files in ``folder``
    last written longer than ``upload_max_age`` ago together with the charges as old, so what the
    uploads keep on disk never exceeds the live charges, nor these the bounds. A charge stays when
    Gradio refuses an upload itself: it may have stored part of it. Behind a reverse proxy all
    clients have the proxy's address, and share one allowance.

    The charges are touched only from the server's event loop; files are removed in a thread.
    """

    def __init__(self, folder: str | os.PathLike, limits: ServeLimits) -> None:
        self.folder = Path(folder)
        self.limits = limits
        self._charges: dict[str, list[_Charge]] = {}

    @property
    def sweep_every(self) -> float:
        """Seconds between sweeps: a quarter of the age, at most a minute."""
        return min(60.0, self.limits.upload_max_age / 4)

    def _of(self, client: str | None) -> list[_Charge]:
        """The charges of ``client``; of every client for None."""
        if client is not None:
            return self._charges.get(client, [])
        return [charge for charges in self._charges.values() for charge in charges]

    def charged(self, client: str | None = None) -> int:
        """Bytes charged to ``client`` (to all clients for None) and not yet swept."""
        return sum(charge.size for charge in self._of(client))

    def refusal(self, client: str, size: int | None) -> tuple[int, str] | None:
        """(HTTP status, text for the page) refusing an upload of ``size`` bytes from ``client``, or None."""
        limits = self.limits
        if size is None:
            return 411, "An upload needs a Content-Length header."
        if size > limits.largest_upload + _MULTIPART_SLACK:
            return 413, f"The file is {_megabytes(size)}; the limit is {_megabytes(limits.largest_upload)}."
        size = max(size, _MIN_CHARGE)
        if self.charged(client) + size > limits.client_upload_bytes:
            kept, limit = _megabytes(self.charged(client)), _megabytes(limits.client_upload_bytes)
            return 429, f"Uploads from this address hold {kept} of {limit} allowed; try again in a few minutes."
        if self.charged() + size > limits.total_upload_bytes:
            limit = _megabytes(limits.total_upload_bytes)
            return 503, f"The server holds its {limit} of uploads; try again in a few minutes."
        return None

    def retry_after(self, client: str | None) -> int:
        """Seconds until the oldest finished upload of ``client`` (of anyone: None) is swept."""
        oldest = min((charge.end for charge in self._of(client) if charge.end is not None), default=time.time())
        return max(1, math.ceil(oldest + self.limits.upload_max_age + self.sweep_every - time.time()))

    def charge(self, client: str, size: int) -> _Charge:
        charge = _Charge(max(size, _MIN_CHARGE))
        self._charges.setdefault(client, []).append(charge)
        return charge

    async def sweep(self) -> None:
        """Remove the files and the charges older than ``upload_max_age``."""
        cutoff = time.time() - self.limits.upload_max_age
        await asyncio.to_thread(_remove_files_older_than, self.folder, cutoff)
        for client in list(self._charges):  # a file is never newer than its charge's end
            live = [charge for charge in self._charges[client] if charge.end is None or charge.end >= cutoff]
            if live:
                self._charges[client] = live
            else:
                del self._charges[client]

    @contextlib.asynccontextmanager
    async def lifespan(self, _app):
        """The server's lifespan (Starlette's): sweep while it runs, remove the folder when it stops."""

        async def sweep_forever():
            while True:
                await asyncio.sleep(self.sweep_every)
                await self.sweep()

        task = asyncio.create_task(sweep_forever())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            shutil.rmtree(self.folder, ignore_errors=True)

    def middleware(self, app):
        """ASGI middleware (Starlette's ``Middleware(guard.middleware)``) guarding the upload route."""

        async def guarded(scope, receive, send):
            path = scope.get("path", "").rstrip("/")
            if scope["type"] == "http" and scope["method"] == "POST" and path.endswith("/gradio_api/upload"):
                await self._upload(app, scope, receive, send)
            else:
                await app(scope, receive, send)

        return guarded

    async def _upload(self, app, scope, receive, send) -> None:
        client = (scope.get("client") or ("unknown",))[0]
        size = _content_length(scope["headers"])
        refused = self.refusal(client, size)
        if refused is not None:
            status, text = refused
            await _drop_body(receive, 2 * (self.limits.largest_upload + _MULTIPART_SLACK))
            retry = self.retry_after(client if status == 429 else None) if status in (429, 503) else None
            await _send_text(send, status, text, retry)
            return
        charge = self.charge(client, size)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > size:  # more than its Content-Length (HTTP/1.1 framing stops this first)
                    return {"type": "http.disconnect"}
            return message

        try:
            await app(scope, counted, send)
        finally:
            charge.size, charge.end = max(min(received, size), _MIN_CHARGE), time.time()


def _content_length(headers) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def _drop_body(receive, limit: int) -> None:
    """Read and drop a refused request's body, so that a client still sending it reads the answer;
    past ``limit`` bytes the connection closes with the rest unread."""
    dropped = 0
    while dropped <= limit:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return
        dropped += len(message.get("body", b""))


async def _send_text(send, status: int, text: str, retry_after: int | None = None) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _remove_files_older_than(folder: Path, cutoff: float) -> None:
    """Remove the files under ``folder`` last written before ``cutoff`` (a time.time()), then the
    folders this emptied or as old (a fresh empty one may be about to receive an upload)."""
    for parent, _, names in os.walk(folder, topdown=False):
        removed = False
        for name in names:
            path = os.path.join(parent, name)
            with contextlib.suppress(OSError):
                if os.lstat(path).st_mtime < cutoff:
                    os.remove(path)
                    removed = True
        if parent != str(folder):
            with contextlib.suppress(OSError):  # rmdir fails unless the folder is empty
                if removed or os.lstat(parent).st_mtime < cutoff:
                    os.rmdir(parent)


def _own_upload_folder() -> Path:
    """A fresh folder for the page's uploads and results, made Gradio's for this process: Gradio
    reads $GRADIO_TEMP_DIR when it builds components and again as it serves, so there is one page
    per process. The folder is the page's alone: the guard removes what ages in it."""
    root = Path(os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir()).resolve()
    if root.name.startswith(_FOLDER_PREFIX):  # an earlier page's folder in this process
        root = root.parent
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=_FOLDER_PREFIX, dir=root))
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    return folder


THUMB_SIZE = 96  # px: the style picker's tiles


def _style_tiles(service: StyleService) -> list[tuple[str, str]]:
    """(picture file, name) of each listed generator, for the page's style picker: a bundled
    style's painting thumbnail (``styles/thumbs``), else a small built-in photo (scikit-image's
    ``chelsea``) in that style, written once to a folder of this process (a model file holds no
    painting). Both folders are Gradio static paths: served as they are, never copied into the
    upload folder, whose sweep would remove them."""
    tiles, folder = [], None
    for name, model in service.styles.items():
        thumb = style_thumbnail(model.source, model.style)
        if thumb is None:
            if folder is None:
                folder = Path(tempfile.mkdtemp(prefix="instyle-serve-tiles-"))
                atexit.register(shutil.rmtree, folder, True)
            thumb = folder / f"{len(tiles)}.jpg"
            to_pil(model.stylize(_built_in_tile(), dtype="fp32")).save(thumb, format="JPEG", quality=85)
        tiles.append((str(thumb), name))
    return tiles


def _built_in_tile() -> torch.Tensor:
    """scikit-image's ``chelsea``, centre-cropped and scaled to THUMB_SIZE px."""
    import skimage.data  # only for a model without a thumbnail
    from PIL import ImageOps

    return load_image(ImageOps.fit(Image.fromarray(skimage.data.chelsea()), (THUMB_SIZE, THUMB_SIZE)))


# ------------------------------------------------------------------------------------------ page


def _gradio():
    try:
        import gradio
    except ImportError as error:
        raise ImportError("instyle serve needs Gradio: pip install 'instyle[web]'") from error
    return gradio


def _upload_path(payload) -> str | None:
    """gr.Image's upload payload (FileData) as the path Gradio stored it at."""
    return None if payload is None else payload.path


def _image_input(gr, label: str, elem_id: str, height: int = 360, visible: bool = True):
    """An image upload that reaches the handler as a path, unopened: gr.Image's own preprocess
    hands any bytes to Pillow before our size and pixel checks. (An instance attribute, not a
    subclass: Gradio writes a .pyi beside any module that subclasses a component.)"""
    image = gr.Image(
        label=label, sources=["upload", "clipboard"], type="filepath", height=height, elem_id=elem_id, visible=visible
    )
    image.preprocess = _upload_path
    return image


NO_DECODER_NOTE = (
    "*Your own painting as the style* needs an AdaIN decoder, and this server has none: pick one of the "
    "listed styles. (To offer paintings, start it with `instyle serve --decoder FILE`, a decoder from "
    "`instyle train-adain`.)"
)


def _painting_input(gr, service: StyleService, style):
    """The painting upload under the style list; without a decoder, a note in its place.

    Without a decoder the upload is hidden, not offered and then refused: a visitor cannot give the
    server a decoder, so an upload that can only fail would cost them the upload and the wait, and
    the server its upload allowance. The note says why there is none, and how the person running
    the server adds it. The hidden input keeps the page's API the same either way (a call that
    asks for :data:`PAINTING` gets the service's message)."""
    if service.adain is None:
        gr.Markdown(NO_DECODER_NOTE, elem_id="painting-note")
        return _image_input(gr, "Your painting", "painting", visible=False)
    painting = _image_input(gr, "Your painting (any image: its style, no training needed)", "painting", 240)
    # An upload picks the painting as the style: else Stylize would still use the listed style
    # shown. Done in the browser, so it never waits in the one-job queue behind a running job.
    painting.upload(None, None, style, js=f"() => {json.dumps(PAINTING)}", queue=False, api_visibility="private")
    return painting


def _style_picker(gr, service: StyleService, names: list[str]):
    """The style list, under a gallery of the styles' paintings (a bundled style's thumbnail, else
    a small photo in that style): a click on a tile picks its style in the list, in the browser's
    own round trip outside the one-job queue. The list stays the request's input (and the way to
    :data:`PAINTING`)."""
    styles = list(service.styles)
    if styles:
        tiles = _style_tiles(service)
        gr.set_static_paths(sorted({str(Path(path).parent) for path, _ in tiles}))
        gallery = gr.Gallery(
            tiles, label="Styles", columns=6, height="auto", allow_preview=False, object_fit="cover",
            format="jpeg", interactive=False, buttons=[], elem_id="style-gallery",
        )  # fmt: skip
    style = gr.Dropdown(names, value=names[0], label="Style", elem_id="style")
    if styles:

        def pick(event) -> str:
            return styles[event.index]

        pick.__annotations__["event"] = gr.SelectData  # Gradio passes the click by this hint (no string)
        gallery.select(pick, None, style, queue=False, api_visibility="private")
    return style


def _mix_inputs(gr, service: StyleService):
    """A second style and the mix slider, for styles of one multi-style model; hidden without them."""
    choices = service.mix_choices()
    shown = bool(choices)
    mix_with = gr.Dropdown(
        choices or [NO_MIX], value=NO_MIX, label="Mix with (a style of the same multi-style model)",
        elem_id="mix-with", visible=shown,
    )  # fmt: skip
    mix = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Mix: the second style's share", elem_id="mix", visible=shown)
    return mix_with, mix


def _video_row(gr, service: StyleService):
    """A clip's upload, its button and its result, under the photo's: the style, strength and
    colour controls above serve both."""
    limits = service.limits
    gr.Markdown(
        f"### A short clip\nUp to {limits.max_video_seconds:g} s and {_megabytes(limits.video_bytes)}, "
        f"stylized at up to {limits.max_video_size} px with the style above, its sound kept (a CPU takes a while).",
        elem_id="video-note",
    )  # fmt: skip
    with gr.Row():
        with gr.Column():
            clip = gr.Video(label="Clip", sources=["upload"], format=None, height=300, elem_id="clip")
            clip.preprocess = _upload_path  # the path, unopened: checked by the service before anything reads it
            button = gr.Button("Stylize the clip", variant="primary", elem_id="stylize-clip")
        with gr.Column():
            result = gr.Video(label="Stylized clip", interactive=False, format=None, height=300, elem_id="clip-result")
    return clip, button, result


def build_app(service: StyleService):
    """The page: upload, style (a listed one, or an uploaded painting when the server has an AdaIN
    decoder), strength, colour preservation, and the result with a download button. Returns a
    ``gr.Blocks`` whose queue runs one job at a time; its ``upload_guard`` (an :class:`UploadGuard`
    on a fresh folder, see :func:`_own_upload_folder`) is installed by :func:`launch`."""
    gr = _gradio()
    guard = UploadGuard(_own_upload_folder(), service.limits)

    def run(upload, style, strength, preserve, painting=None, mix_with=None, mix=0.0, *, video=False):  # None: API calls that name none
        try:
            if video:  # written into the page's folder: removed with the uploads as it ages (a clip takes no mix yet)
                return str(service.video(upload, style, strength, preserve, painting, folder=guard.folder))
            return service(upload, style, strength, preserve, painting, mix_with, mix)
        except RequestError as error:
            raise gr.Error(str(error), print_exception=False) from None
        except Exception:  # never a traceback on the page
            _log.exception("unexpected failure in instyle serve")
            raise gr.Error("Something went wrong on the server.", print_exception=False) from None

    def run_video(upload, style, strength, preserve, painting=None):
        return run(upload, style, strength, preserve, painting, video=True)

    names = service.choices
    how = "pick a style or upload a painting" if service.adain is not None else "pick a style"
    with gr.Blocks(title="instyle", analytics_enabled=False) as app:  # the guard removes old files
        gr.Markdown(f"## instyle: fast neural style transfer\nUpload a photo (or a short clip below), {how}, press **Stylize**.")
        with gr.Row():
            with gr.Column():
                upload = _image_input(gr, "Photo", "photo")
                style = _style_picker(gr, service, names)
                mix_with, mix = _mix_inputs(gr, service)
                painting = _painting_input(gr, service, style)
                strength = gr.Slider(0.0, 1.0, value=1.0, step=0.05, label="Strength", elem_id="strength")
                preserve = gr.Radio(
                    list(PRESERVE_CHOICES), value="none", label="Keep the photo's colours", elem_id="preserve"
                )
                button = gr.Button("Stylize", variant="primary", elem_id="stylize")
            with gr.Column():
                result = gr.Image(
                    label="Result", type="pil", format="png", interactive=False, height=360,
                    buttons=["download", "fullscreen"], elem_id="result",
                )  # fmt: skip
        clip, clip_button, clip_result = _video_row(gr, service)
        inputs = [upload, style, strength, preserve, painting, mix_with, mix]
        # one concurrency group: a photo and a clip never run at once (the service has one worker too)
        button.click(run, inputs=inputs, outputs=result, api_name="stylize", concurrency_limit=1, concurrency_id="job")
        clip_button.click(run_video, inputs=[clip, *inputs[1:5]], outputs=clip_result, api_name="stylize_video",
                          concurrency_limit=1, concurrency_id="job")  # fmt: skip
    app.queue(max_size=service.limits.queue_size, default_concurrency_limit=1, api_open=False)
    app.upload_guard = guard
    return app


def launch(app, *, host: str = "127.0.0.1", port: int = 7860) -> str:
    """Serve ``app`` (from :func:`build_app`) on ``host:port`` (loopback unless told otherwise;
    port 0: a free one) from a background thread and return its URL, with the port in use;
    ``app.block_thread()`` waits until Ctrl-C, ``app.close()`` stops it.

    Its upload guard checks every upload as it streams; Gradio refuses files over
    ``max_upload_bytes`` too, and ``StyleService`` checks again.
    """
    gr = _gradio()
    from starlette.middleware import Middleware

    guard: UploadGuard = app.upload_guard
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    try:
        _, local_url, _ = app.launch(
            server_name=host,
            server_port=port or _free_port(host),  # Gradio would wait for an answer on port 0
            share=False,
            inbrowser=False,
            prevent_thread_lock=True,
            show_error=False,  # only gr.Error messages reach the page
            quiet=True,
            max_file_size=guard.limits.largest_upload,
            app_kwargs={"middleware": [Middleware(guard.middleware)], "lifespan": guard.lifespan},
            ssr_mode=False,
            mcp_server=False,
            pwa=False,
            enable_monitoring=False,
            footer_links=[],
            theme=theme,  # system fonts: the page fetches nothing from other hosts
        )
    except BaseException:
        shutil.rmtree(guard.folder, ignore_errors=True)  # no server ran, so none will remove it
        raise
    return local_url


def _free_port(host: str) -> int:
    """A port free on ``host`` now (raises OSError for a host with no address here)."""
    family, kind, _, _, address = socket.getaddrinfo(host.strip("[]"), 0, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind) as probe:
        probe.bind(address)
        return probe.getsockname()[1]
