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
from instyle.apps.cli import demo, experiment, export, models, optimize, serve, stylize, texture, train, train_adain, weights

__all__ = ["build_parser", "main"]

# in the order `instyle --help` lists them
COMMANDS = (demo, weights, models, optimize, train, train_adain, stylize, experiment, serve, export, texture)


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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    from instyle.engine.image import MAX_PIXELS_ENV

    log = logging.getLogger("instyle")
    handler, level = _progress_messages(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    previous_limit = os.environ.get(MAX_PIXELS_ENV)
    if getattr(args, "max_pixels", None) is not None:
        # The image loader (and subprocesses such as torchrun workers) read the limit from here.
        os.environ[MAX_PIXELS_ENV] = str(args.max_pixels)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:  # main() called in-process (tests, notebooks) leaves the environment and logging as it found them
        log.removeHandler(handler)
        log.setLevel(level)
        if previous_limit is None:
            os.environ.pop(MAX_PIXELS_ENV, None)
        else:
            os.environ[MAX_PIXELS_ENV] = previous_limit
