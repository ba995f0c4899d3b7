"""``instyle serve``: the web page (instyle.apps.serve)."""

from __future__ import annotations

import argparse
import math
import re
import signal
import sys

from instyle.apps.cli.common import add_device, add_max_pixels, fail, number

# ServeLimits' fields and the flags that set them, in other units
_FLAGS = {
    "max_upload_bytes": "--max-upload-mb",
    "client_upload_bytes": "--client-uploads-mb",
    "total_upload_bytes": "--total-uploads-mb",
    "upload_max_age": "--keep-uploads-min",
    "max_size": "--max-size",
    "queue_size": "--queue-size",
    "max_video_bytes": "--max-video-mb",
    "max_video_seconds": "--max-video-seconds",
    "max_video_size": "--max-video-size",
}


def _positive(text: str) -> float:
    """An argparse type: a positive finite number (megabytes, minutes)."""
    value = number(float, 0, low_open=True)(text)
    if math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


_positive.__name__ = "float"  # argparse names the type in its messages


def add_parser(sub) -> None:
    from instyle.apps import serve as web
    from instyle.engine.device import DTYPES

    serve = sub.add_parser("serve", help="a web page to stylize photos and short clips (needs instyle[web])")
    serve.add_argument(
        "--model", action="append", default=[], metavar="PATH",
        help="a model file to offer besides the bundled styles (repeat for more)",
    )  # fmt: skip
    serve.add_argument(
        "--decoder", metavar="FILE",
        help="AdaIN decoder (from `instyle train-adain`) for the page's painting upload: any painting as the "
        "style (default: the bundled one; without one the page offers the listed styles only)",
    )  # fmt: skip
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=number(int, 0, 65535), default=7860, help="port; 0: any free one (default: 7860)")
    for flag, default, text in [
        ("--max-upload-mb", web.DEFAULT_MAX_UPLOAD_BYTES, "refuse larger uploads"),
        ("--client-uploads-mb", web.DEFAULT_CLIENT_UPLOAD_BYTES, "uploads one client address may have kept at once"),
        ("--total-uploads-mb", web.DEFAULT_TOTAL_UPLOAD_BYTES, "uploads kept at once, all clients together"),
    ]:
        serve.add_argument(flag, type=_positive, default=default / 1e6, help=f"{text} (default: {default / 1e6:g})")
    serve.add_argument(
        "--keep-uploads-min", type=_positive, default=web.DEFAULT_UPLOAD_MAX_AGE / 60,
        help=f"remove uploads after this many minutes (default: {web.DEFAULT_UPLOAD_MAX_AGE / 60:g})",
    )  # fmt: skip
    serve.add_argument(
        "--max-size", type=number(int, 0), default=web.DEFAULT_MAX_SIZE,
        help=f"stylize at most this long side, resizing larger photos; 0: no limit (default: {web.DEFAULT_MAX_SIZE})",
    )  # fmt: skip
    serve.add_argument(
        "--queue-size", type=number(int, 1), default=web.DEFAULT_QUEUE_SIZE,
        help=f"requests that may wait behind the running one (default: {web.DEFAULT_QUEUE_SIZE})",
    )  # fmt: skip
    _add_video_limits(serve, web)
    add_device(serve)
    serve.add_argument("--dtype", default="fp32", choices=DTYPES, help="compute precision (default: fp32)")
    add_max_pixels(serve)
    serve.set_defaults(func=run)


def _add_video_limits(serve, web) -> None:
    serve.add_argument(
        "--max-video-seconds", type=_positive, default=web.DEFAULT_MAX_VIDEO_SECONDS,
        help=f"refuse longer clips (default: {web.DEFAULT_MAX_VIDEO_SECONDS:g})",
    )  # fmt: skip
    serve.add_argument("--max-video-mb", type=_positive, default=None, help="refuse larger clips (default: --max-upload-mb)")
    serve.add_argument(
        "--max-video-size", type=number(int, 2), default=web.DEFAULT_MAX_VIDEO_SIZE,
        help=f"stylize a clip's frames at most this long side (default: {web.DEFAULT_MAX_VIDEO_SIZE})",
    )  # fmt: skip


def _limits(args: argparse.Namespace):
    from instyle.apps.serve import ServeLimits

    try:
        return ServeLimits(
            max_upload_bytes=int(args.max_upload_mb * 1e6),
            client_upload_bytes=int(args.client_uploads_mb * 1e6),
            total_upload_bytes=int(args.total_uploads_mb * 1e6),
            upload_max_age=args.keep_uploads_min * 60,
            max_pixels=args.max_pixels,
            max_size=args.max_size or None,
            queue_size=args.queue_size,
            max_video_bytes=None if args.max_video_mb is None else int(args.max_video_mb * 1e6),
            max_video_seconds=args.max_video_seconds,
            max_video_size=args.max_video_size,
        )
    except ValueError as error:  # every field named by its flag (error_text renames only the first)
        text = re.sub(r"[a-z]+(?:_[a-z]+)+", lambda m: _FLAGS.get(m.group(0), m.group(0)), str(error))
        raise ValueError(text) from None


def _stop_on_sigterm() -> None:
    """SIGTERM stops the server as Ctrl-C does, so that it removes its uploads on the way out."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _painting_model(decoder: str | None):
    """The AdaIN model for the painting upload, or None. A --decoder that fails stops the server
    (exit 2); the bundled one failing (VGG-19 weights not fetched, offline) only turns the painting
    upload off, with a warning: the listed styles need neither."""
    from instyle.apps.serve import load_painting_model
    from instyle.engine.weights import WeightsError

    if decoder is not None:
        return load_painting_model(decoder)
    try:
        return load_painting_model()
    except (ValueError, WeightsError) as error:
        warning = f"no painting upload: the bundled AdaIN decoder failed to load: {error}"
        print(f"instyle serve: warning: {warning}", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    from instyle.apps.serve import StyleService, build_app, launch, load_styles
    from instyle.engine.weights import WeightsError

    try:
        limits = _limits(args)
        adain = _painting_model(args.decoder)
        styles = load_styles(args.model, required=adain is None)
        service = StyleService(styles, limits, adain=adain, device=args.device, dtype=args.dtype)
        app = build_app(service)
    except (ValueError, WeightsError, ImportError) as error:  # ModelFileError and ConfigError are ValueErrors
        return fail("serve", error, 2, {"decoder": "--decoder"})
    try:
        url = launch(app, host=args.host, port=args.port)
    except OSError as error:  # port taken, address not available
        return fail("serve", f"cannot listen on {args.host}:{args.port}: {error}", 1)
    offered = [*service.styles, *(["any painting (AdaIN)"] if adain is not None else [])]
    if adain is None:
        print("instyle serve: no AdaIN decoder, so no painting upload (--decoder FILE adds it)", flush=True)
    print(f"instyle serve: {', '.join(offered)} on {url} (Ctrl-C stops)", flush=True)
    _stop_on_sigterm()
    app.block_thread()
    return 0
