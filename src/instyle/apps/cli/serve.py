"""``instyle serve``: the web page (instyle.apps.serve)."""

from __future__ import annotations

import argparse

from instyle.apps.cli.common import add_device, add_max_pixels, fail, number


def add_parser(sub) -> None:
    from instyle.apps.serve import DEFAULT_MAX_SIZE, DEFAULT_MAX_UPLOAD_BYTES, DEFAULT_QUEUE_SIZE
    from instyle.engine.device import DTYPES

    serve = sub.add_parser("serve", help="a web page to stylize photos (needs instyle[web])")
    serve.add_argument(
        "--model", action="append", default=[], metavar="PATH",
        help="a model file to offer besides the bundled styles (repeat for more)",
    )  # fmt: skip
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=number(int, 0, 65535), default=7860, help="port; 0: any free one (default: 7860)")
    serve.add_argument(
        "--max-upload-mb", type=number(float, 0, low_open=True), default=DEFAULT_MAX_UPLOAD_BYTES / 1e6,
        help=f"refuse larger uploads (default: {DEFAULT_MAX_UPLOAD_BYTES / 1e6:g})",
    )  # fmt: skip
    serve.add_argument(
        "--max-size", type=number(int, 0), default=DEFAULT_MAX_SIZE,
        help=f"stylize at most this long side, resizing larger photos; 0: no limit (default: {DEFAULT_MAX_SIZE})",
    )  # fmt: skip
    serve.add_argument(
        "--queue-size", type=number(int, 1), default=DEFAULT_QUEUE_SIZE,
        help=f"requests that may wait behind the running one (default: {DEFAULT_QUEUE_SIZE})",
    )  # fmt: skip
    add_device(serve)
    serve.add_argument("--dtype", default="fp32", choices=DTYPES, help="compute precision (default: fp32)")
    add_max_pixels(serve)
    serve.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from instyle.apps.serve import ServeLimits, StyleService, build_app, launch, load_styles
    from instyle.engine.modelfile import ModelFileError

    try:
        limits = ServeLimits(
            max_upload_bytes=int(args.max_upload_mb * 1e6),
            max_pixels=args.max_pixels,
            max_size=args.max_size or None,
            queue_size=args.queue_size,
        )
        service = StyleService(load_styles(args.model), limits, device=args.device, dtype=args.dtype)
        app = build_app(service)
    except (ModelFileError, ValueError, ImportError) as error:
        return fail("serve", error, 2)
    try:
        url = launch(app, host=args.host, port=args.port, max_upload_bytes=limits.max_upload_bytes)
    except OSError as error:  # port taken, address not available
        return fail("serve", f"cannot listen on {args.host}:{args.port}: {error}", 1)
    print(f"instyle serve: {', '.join(service.styles)} on {url} (Ctrl-C stops)", flush=True)
    app.block_thread()
    return 0
