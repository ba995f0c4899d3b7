"""The ``instyle`` command line: the only package that parses arguments and prints.

One module per command, each with ``add_parser(sub)`` and ``run(args)``; what they share (flags
derived from the config fields, the one path from arguments to a config, field names turned into
flags, progress bars) is in :mod:`instyle.apps.cli.common`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from instyle import __version__
from instyle.apps.cli import (
    demo, experiment, export, models, optimize, score, serve, stylize, texture, train, train_adain, video, weights,
)
from instyle.apps.cli.common import fail

__all__ = ["build_parser", "main"]

# in the order `instyle --help` lists them
COMMANDS = (demo, weights, models, optimize, train, train_adain, stylize, video, score, experiment, serve, export, texture)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="instyle", description="Instance normalization and fast neural style transfer for PyTorch."
    )
    parser.add_argument("--version", action="version", version=f"instyle {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _progress_messages() -> logging.Handler:
    """A handler that shows the package's INFO messages (a first download of VGG weights) on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("instyle: %(message)s"))
    handler.setLevel(logging.INFO)
    return handler


def _escaping_output() -> list[tuple[object, str]]:
    """Make stdout and stderr write what their encoding cannot hold as escapes (``caf\\xe9.png`` on an
    ASCII terminal, a file name that is not UTF-8 as ``\\udcff``) rather than fail, often after the
    work is done; returns what to restore."""
    changed = []
    for stream in (sys.stdout, sys.stderr):
        errors = getattr(stream, "errors", None)
        if errors not in (None, "backslashreplace") and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
            changed.append((stream, errors))
    return changed


def main(argv: list[str] | None = None) -> int:
    changed = _escaping_output()
    try:
        return _main(argv)
    finally:  # main() called in-process (tests, notebooks) leaves the streams as it found them
        for stream, errors in changed:
            stream.reconfigure(errors=errors)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    from instyle.engine.image import MAX_PIXELS_ENV, max_pixels_limit

    previous_limit = os.environ.get(MAX_PIXELS_ENV)
    if getattr(args, "max_pixels", None) is not None:
        # The image loader (and subprocesses such as torchrun workers) read the limit from here.
        os.environ[MAX_PIXELS_ENV] = str(args.max_pixels)
    log = logging.getLogger("instyle")
    handler, level = _progress_messages(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        if hasattr(args, "max_pixels"):  # a bad $INSTYLE_MAX_PIXELS is one error up front, not one per image
            try:
                max_pixels_limit()
            except ValueError as error:
                return fail(args.command, error, 2)
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:  # main() called in-process leaves the environment and logging as it found them
        log.removeHandler(handler)
        log.setLevel(level)
        if previous_limit is None:
            os.environ.pop(MAX_PIXELS_ENV, None)
        else:
            os.environ[MAX_PIXELS_ENV] = previous_limit
