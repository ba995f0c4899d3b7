"""``instyle serve``: a local web page that stylizes one uploaded photo at a time (Gradio).

``build_app(styles)`` returns the page as a ``gr.Blocks``; ``launch(app, host, port)`` serves it.
Every request goes through one bounded queue that runs one job at a time. An upload is checked for
its size in bytes before anything reads it, and for its pixel count from the image header before
any pixel is decoded (:func:`instyle.engine.image.load_image`). A refused or failed request reaches the
page as a short message, never a traceback or a path on the server; the server keeps no per-request
state, so its memory stays flat over many requests.

Gradio is an optional dependency: ``pip install 'instyle[web]'``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
from PIL import Image

from instyle.engine.color import PRESERVE_COLOR
from instyle.engine.image import ImageError, load_image, max_pixels_limit, to_pil
from instyle.engine.modelfile import ModelFileError
from instyle.engine.inference.stylize import StyleModel, load_model
from instyle.engine.catalog import list_models

__all__ = [
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_QUEUE_SIZE",
    "PRESERVE_CHOICES",
    "RequestError",
    "ServeLimits",
    "StyleService",
    "load_styles",
    "build_app",
    "launch",
]

DEFAULT_MAX_UPLOAD_BYTES = 20_000_000
DEFAULT_MAX_SIZE = 1024  # long side of the result, in pixels: a CPU answers in seconds
DEFAULT_QUEUE_SIZE = 8  # requests waiting behind the running one; more are turned away
PRESERVE_CHOICES = PRESERVE_COLOR  # the web page offers what stylize accepts

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

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "queue_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.max_size is not None and (not isinstance(self.max_size, int) or self.max_size < 1):
            raise ValueError(f"max_size must be a positive int or None, got {self.max_size!r}")
        max_pixels_limit(self.max_pixels)  # raises on a bad value or a bad $INSTYLE_MAX_PIXELS


def load_styles(model_paths: Sequence[str | os.PathLike] = ()) -> dict[str, StyleModel]:
    """The bundled styles and the given model files, loaded once, by the name the page shows.

    Raises ModelFileError for an unreadable model file, ValueError when there is no style at all.
    """
    styles: dict[str, StyleModel] = {}
    for source in [*model_paths, *list_models()]:  # the files asked for first (the page's default), then bundled
        model = load_model(source)
        name = model.name
        if name in styles:  # two files with one style name: tell them apart by file name
            name = f"{model.name} ({Path(source).name})"
        if name in styles:
            raise ModelFileError(f"--model {source}: given twice")
        styles[name] = model
    if not styles:
        raise ValueError("no styles to serve: no style is bundled yet, pass --model PATH (a trained .safetensors)")
    return styles


class StyleService:
    """Turns one upload into one stylized image, or a RequestError with a short message."""

    def __init__(
        self,
        styles: Mapping[str, StyleModel],
        limits: ServeLimits | None = None,
        *,
        device: str = "auto",
        dtype: str = "fp32",
    ) -> None:
        if not styles:
            raise ValueError("StyleService needs at least one style")
        self.styles = dict(styles)
        self.limits = limits if limits is not None else ServeLimits()
        self.device = device
        self.dtype = dtype
        # Every job runs on this one thread, one at a time. Gradio calls handlers from a pool of
        # up to 40 threads, and glibc gives each new thread its own malloc arena: the same work
        # spread over many threads keeps more memory resident, growing as new threads join.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="instyle-serve")

    def __call__(self, upload: str | os.PathLike | None, style: str, strength: float, preserve: str) -> Image.Image:
        """Stylize ``upload`` (a file path); raises RequestError with a message for the page."""
        return self._worker.submit(self._job, upload, style, strength, preserve).result()

    def _job(self, *request) -> Image.Image:
        try:
            return self._stylize(*request)
        finally:
            _return_freed_memory()

    def _stylize(self, upload, style, strength, preserve) -> Image.Image:
        if upload is None:
            raise RequestError("Upload a photo first.")
        model = self.styles.get(style)
        if model is None:
            raise RequestError("Pick one of the listed styles.")
        if preserve not in PRESERVE_CHOICES:
            raise RequestError(f"Colour preservation must be one of: {', '.join(PRESERVE_CHOICES)}.")
        try:
            strength = float(strength)
        except (TypeError, ValueError):
            raise RequestError("Strength must be a number from 0 to 1.") from None
        if not 0.0 <= strength <= 1.0:
            raise RequestError("Strength must be a number from 0 to 1.")
        image = self._read(upload)  # (3, H, W)
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
            )
        except torch.OutOfMemoryError:
            _release_cached_memory()
            raise RequestError("Not enough memory for an image this large; try a smaller one.") from None
        except RuntimeError as error:  # NaN output, backend failures: details go to the log only
            _log.exception("stylizing with %s failed", style)
            raise RequestError("The style could not be applied to this photo.") from error
        return to_pil(stylized)

    def _read(self, upload: str | os.PathLike) -> torch.Tensor:
        """The upload as (3, H, W) in [0, 1]: bytes, then header pixels, then decoding."""
        try:
            size = os.path.getsize(upload)
        except OSError:
            raise RequestError("The upload could not be read; try again.") from None
        limit = self.limits.max_upload_bytes
        if size > limit:
            raise RequestError(f"The file is {_megabytes(size)}; the limit is {_megabytes(limit)}.")
        try:
            return load_image(upload, max_pixels=self.limits.max_pixels)
        except ImageError as error:
            raise RequestError(_short_image_reason(error.reason)) from None


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
    return "The image could not be decoded; the file may be damaged."


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _return_freed_memory() -> None:
    """Hand memory freed by the last job back to the system (glibc keeps it otherwise, and how
    much it keeps varies from job to job with fragmentation). Elsewhere a no-op."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def _find_malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc; musl has none
    except (OSError, AttributeError):
        return None


_malloc_trim = _find_malloc_trim()


def _release_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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


def build_app(service: StyleService):
    """The page: upload, style, strength, colour preservation, and the result with a download
    button. Returns a ``gr.Blocks`` whose queue runs one job at a time."""
    gr = _gradio()

    def run(upload, style, strength, preserve):
        try:
            return service(upload, style, strength, preserve)
        except RequestError as error:
            raise gr.Error(str(error), print_exception=False) from None
        except Exception:  # never a traceback on the page
            _log.exception("unexpected failure in instyle serve")
            raise gr.Error("Something went wrong on the server.", print_exception=False) from None

    names = list(service.styles)
    with gr.Blocks(title="instyle", analytics_enabled=False, delete_cache=(600, 3600)) as app:
        gr.Markdown("## instyle: fast neural style transfer\nUpload a photo, pick a style, press **Stylize**.")
        with gr.Row():
            with gr.Column():
                upload = gr.Image(
                    label="Photo", sources=["upload", "clipboard"], type="filepath", height=360, elem_id="photo"
                )
                # The upload reaches the handler as a path, unopened: gr.Image's own preprocess
                # hands any bytes to Pillow before our size and pixel checks. (An instance
                # attribute, not a subclass: Gradio writes a .pyi beside any module that
                # subclasses a component.)
                upload.preprocess = _upload_path
                style = gr.Dropdown(names, value=names[0], label="Style", elem_id="style")
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
        button.click(
            run, inputs=[upload, style, strength, preserve], outputs=result, api_name="stylize", concurrency_limit=1
        )
    app.queue(max_size=service.limits.queue_size, default_concurrency_limit=1, api_open=False)
    return app


def launch(app, *, host: str = "127.0.0.1", port: int = 7860, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES) -> str:
    """Serve ``app`` on ``host:port`` (loopback unless told otherwise; port 0: a free one) from a
    background thread and return its URL, with the port in use; ``app.block_thread()`` waits until
    Ctrl-C, ``app.close()`` stops it.

    Gradio refuses uploads over ``max_upload_bytes`` before storing them; ``StyleService`` checks
    again.
    """
    gr = _gradio()
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    _, local_url, _ = app.launch(
        server_name=host,
        server_port=port or _free_port(host),  # Gradio would wait for an answer on port 0
        share=False,
        inbrowser=False,
        prevent_thread_lock=True,
        show_error=False,  # only gr.Error messages reach the page
        quiet=True,
        max_file_size=max_upload_bytes,
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        enable_monitoring=False,
        footer_links=[],
        theme=theme,  # system fonts: the page fetches nothing from other hosts
    )
    return local_url


def _free_port(host: str) -> int:
    """A port free on ``host`` now (raises OSError for a host with no address here)."""
    family, kind, _, _, address = socket.getaddrinfo(host.strip("[]"), 0, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind) as probe:
        probe.bind(address)
        return probe.getsockname()[1]
