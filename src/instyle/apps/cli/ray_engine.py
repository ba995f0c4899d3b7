"""``instyle stylize --engine ray``: the same command on a Ray cluster (docs/ray.md).

The driver checks the model as plain ``stylize`` does (the same loading, the same errors), lists
the images and checks the output folder; :class:`instyle.engine.batch.BatchJob` does the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import warnings
from typing import Callable

from instyle.apps.cli.common import fail, number

# the flags of the Ray engine, by their field names in library errors
NAMES = {
    "address": "--ray-address", "batch_size": "--batch-size", "actors": "--actors", "actors_per_gpu": "--actors-per-gpu",
    "output": "-o", "sources": "SOURCE", "style": "--style", "strength": "--strength", "preserve": "--preserve-color",
    "max_size": "--max-size", "tile": "--tile", "runtime": "--runtime",
}  # fmt: skip
RAY_ONLY = {"ray_address": "--ray-address", "batch_size": "--batch-size", "actors": "--actors", "actors_per_gpu": "--actors-per-gpu"}


def add_flags(parser: argparse.ArgumentParser) -> None:
    """``--engine`` and the Ray engine's options."""
    from instyle.engine.batch.job import DEFAULT_BATCH_SIZE

    group = parser.add_argument_group("batch on a Ray cluster (--engine ray; needs `pip install 'instyle[ray]'`)")
    group.add_argument(
        "--engine", choices=("local", "ray"), default="local",
        help="local: this process, one image at a time; ray: Ray Data on a Ray cluster (a local one by default), "
        "with a manifest beside the outputs, and a rerun that finishes what an interrupted one left (default: local)",
    )  # fmt: skip
    group.add_argument(
        "--ray-address", metavar="ADDR", default=None,
        help="the Ray cluster: HOST:PORT of its head, ray://HOST:PORT, or auto (default: $RAY_ADDRESS, else a local cluster)",
    )  # fmt: skip
    group.add_argument(
        "--batch-size", type=number(int, 1), default=None,
        help=f"images per call of an actor (default: {DEFAULT_BATCH_SIZE})",
    )  # fmt: skip
    group.add_argument(
        "--actors", type=number(int, 1), default=None,
        help="stylizing actors, each with the model loaded once (default: one per GPU, times --actors-per-gpu; without GPUs one per CPU)",
    )  # fmt: skip
    group.add_argument(
        "--actors-per-gpu", type=number(int, 1), default=None,
        help="actors sharing each GPU, to overlap one's decoding and writing with another's forward (default: 1)",
    )  # fmt: skip


def check_flags(args: argparse.Namespace) -> str | None:
    """What is wrong with the engine flags, or None: the Ray options only with --engine ray."""
    if args.engine != "ray":
        given = [flag for field, flag in RAY_ONLY.items() if getattr(args, field) is not None]
        if given:
            return f"{given[0]}: only with --engine ray"
    return None


def _quiet_ray() -> None:
    """Ray's own chatter off the command line (its logs stay in its session folder): the CLI prints
    a line per image and a summary, as plain stylize does."""
    import ray.data  # noqa: F401 - configures its loggers, which are adjusted below

    warnings.filterwarnings("ignore", module=r"ray(\.|$)")
    for name in ("ray", "ray.data"):
        for handler in logging.getLogger(name).handlers:
            if not isinstance(handler, logging.FileHandler):  # its errors come back as the job's one error
                handler.setLevel(logging.CRITICAL + 1)
    ray.data.DataContext.get_current().enable_progress_bars = sys.stderr.isatty()


def run(args: argparse.Namespace, load: Callable) -> int:
    """The job: ``load(args)`` is plain stylize's model loading (``(model, extra)`` or ``(None, code)``)."""
    problem = check_flags(args)
    if problem:
        return fail("stylize", problem, 2)
    try:
        import ray  # noqa: F401
    except ImportError:
        return fail("stylize", "--engine ray needs Ray: pip install 'instyle[ray]'", 2)
    job = _plan(args, load)
    if isinstance(job, int):
        return job
    _quiet_ray()
    with _ray_log() as log:
        return _run(job, args, log)


class _RayLog:
    keep = False


@contextlib.contextmanager
def _ray_log():
    """Ray's C++ core writes its own lines (warnings about every actor it starts) to the process's
    stderr, the file descriptor, not ``sys.stderr``: while the job runs, descriptor 2 goes to a log
    file and ``sys.stderr`` to the terminal, so that stderr has instyle's lines alone. The file is
    named when the job fails (``log.keep``: an error, not an image's), else removed."""
    sys.stderr.flush()
    fd, path = tempfile.mkstemp(prefix="instyle-ray-", suffix=".log")
    saved, previous, log = os.dup(2), sys.stderr, _RayLog()
    os.dup2(fd, 2)
    os.close(fd)
    sys.stderr = open(saved, "w", buffering=1, encoding=previous.encoding, errors="backslashreplace", closefd=False)
    try:
        yield log
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        sys.stderr.close()
        sys.stderr = previous
        os.close(saved)
        if log.keep and os.path.getsize(path):
            print(f"instyle stylize: Ray's own log lines are in {path}", file=sys.stderr)
        else:
            os.unlink(path)


def _plan(args: argparse.Namespace, load: Callable):
    """The job, checked in the driver before any work; or the exit code of what is wrong."""
    from instyle.engine.batch import BatchJob, spec_of
    from instyle.engine.batch.job import DEFAULT_BATCH_SIZE

    # The workers resolve --device: this machine (a laptop, a CPU head node) may lack their GPUs.
    here = argparse.Namespace(**{**vars(args), "device": args.device if args.device in ("auto", "cpu") else "auto"})
    model, extra = load(here)
    if model is None:
        return extra
    extra = dict(extra)
    name = extra.pop("name", None)
    options = dict(
        strength=args.strength, preserve=args.preserve_color, max_size=args.max_size, tile=args.tile,
        device=args.device, dtype=args.dtype,
    )  # fmt: skip
    try:
        return BatchJob(
            args.inputs, args.output, spec_of(model, extra, name=name), options=options, suffix=args.suffix,
            recursive=args.recursive, batch_size=args.batch_size or DEFAULT_BATCH_SIZE, actors=args.actors,
            actors_per_gpu=args.actors_per_gpu or 1,
        )  # fmt: skip
    except (ValueError, OSError) as error:  # ConfigError (sources, output, counts) is a ValueError
        return fail("stylize", error, 2, NAMES)


def _shown(path: str) -> str:
    """An output as plain stylize shows it: relative to the working folder when it is under it."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def _run(job, args: argparse.Namespace, log: _RayLog) -> int:
    from instyle.engine.batch.workers import WorkerError

    results = job.run(args.ray_address)
    try:
        for result in results:
            if result.skipped:
                continue
            if result.status == "ok":
                print(f"{result.input} -> {_shown(result.output)} ({(result.seconds or 0) * 1000:.0f} ms)", flush=True)
            else:
                print(f"FAILED {result.input}: {result.error}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        s = job.summary
        print(
            f"instyle stylize: interrupted after {s.written + s.skipped + s.failed} of {s.images} images; "
            f"run the same command again to finish (what is done is in {s.manifest})", file=sys.stderr, flush=True,
        )  # fmt: skip
        results.close()  # the rows so far into the manifest, the cluster left
        return 130
    except (ValueError, OSError, WorkerError) as error:  # ConfigError (the cluster) is a ValueError
        log.keep = True
        return fail("stylize", error, 2 if not isinstance(error, (WorkerError, OSError)) else 1, NAMES)
    s = job.summary
    earlier = f", {s.skipped} done before" if s.skipped else ""
    print(f"{s.written} written{earlier}, {s.failed} failed of {s.images} images in {s.seconds:.1f} s; manifest: {s.manifest}")
    return 1 if s.failed else 0
