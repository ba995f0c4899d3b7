"""The images of a batch job: listed in the driver from local files, folders and globs (as
``instyle stylize`` lists them) or from any pyarrow filesystem URI (``s3://``, ``gs://``,
``file://``), named as plain ``stylize`` names its outputs, then read and decoded in Ray tasks
(:func:`read_batch`), each image's failure a row, never a failed job."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from instyle.engine.config import ConfigError

ANSWER_SECONDS = 30.0  # how long a URI's filesystem may take to answer its first request

__all__ = ["Item", "SourceError", "decode_pixels", "is_uri", "list_sources", "local_path", "name_outputs", "read_batch"]


class SourceError(ConfigError):
    """A source that does not exist or cannot be listed; ``field`` is ``sources``."""

    def __init__(self, reason: str) -> None:
        super().__init__("sources", reason)


@dataclass(frozen=True)
class Item:
    """One image of the job: ``input`` as shown (a path or a URI), where to read it (``path`` in
    filesystem ``fs``, an index into the job's filesystems, -1 for the local disk) and its output."""

    input: str
    path: str
    fs: int
    output: str = ""


def is_uri(text: str) -> bool:
    """``scheme://...`` (a one-letter scheme is a Windows drive, not a URI)."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").replace("-", "").isalnum()


def list_sources(sources: list[str], recursive: bool = False) -> tuple[list[Item], list[Any]]:
    """Every image of ``sources`` (files, folders and globs on this machine; files and folders
    under URIs), each once, in a stable order; and the filesystems the URIs need. SourceError names
    a source that does not exist, cannot be listed or holds no image."""
    from instyle.engine.image import iter_image_files

    items, filesystems, seen = [], [], set()
    for source in map(os.fspath, sources):
        if is_uri(source):
            fs, found = _list_uri(source, recursive)
            filesystems.append(fs)
            new = [Item(uri, path, len(filesystems) - 1) for uri, path in found]
        else:
            try:
                # read by workers whose working folder may be another: an absolute path
                new = [Item(os.fspath(p), os.path.abspath(p), -1) for p in iter_image_files([source], recursive=recursive)]
            except OSError as error:  # FileNotFoundError: "SOURCE: no such file or folder"
                raise SourceError(str(error)) from error
        if not new:
            raise SourceError(f"{source}: no images found")
        for item in new:
            key = _key(item, filesystems)
            if key not in seen:  # a file named twice, or by two names, is stylized once
                seen.add(key)
                items.append(item)
    return items, filesystems


def local_path(item: Item, filesystems: list[Any]) -> str | None:
    """The item's path on this machine's disk (a path, or a ``file://`` URI), else None."""
    if item.fs < 0:
        return item.path
    return item.path if type(filesystems[item.fs]).__name__ == "LocalFileSystem" else None


def _key(item: Item, filesystems: list[Any]):
    local = local_path(item, filesystems)
    return os.path.realpath(local) if local is not None else (item.fs, item.path)


def _list_uri(uri: str, recursive: bool) -> tuple[Any, list[tuple[str, str]]]:
    """The filesystem of ``uri`` and (URI, path) of its image files: the file itself, or the
    images in the folder (``recursive``: below it too), hidden names skipped."""
    from pyarrow import fs as pafs

    from instyle.engine.image import IMAGE_EXTENSIONS

    try:
        fs, root, info = _within(ANSWER_SECONDS, uri, lambda: _first_answer(pafs, uri))
        if info.type == pafs.FileType.File:
            return fs, [(uri, root)]
        if info.type != pafs.FileType.Directory:
            raise SourceError(f"{uri}: no such file or folder")
        entries = fs.get_file_info(pafs.FileSelector(root, recursive=recursive))
    except SourceError:
        raise
    except Exception as error:  # pyarrow raises OSError, ValueError, ArrowInvalid... with its reason
        raise SourceError(f"{uri}: cannot be listed ({_first_line(error)})") from error
    prefix = uri[: uri.index("://") + 3]
    found = []
    for entry in sorted(entries, key=lambda e: e.path):
        name = PurePosixPath(entry.path)
        hidden = any(part.startswith(".") for part in name.relative_to(root).parts) if root else name.name.startswith(".")
        if entry.type == pafs.FileType.File and name.suffix.lower() in IMAGE_EXTENSIONS and not hidden:
            found.append((prefix + entry.path, entry.path))
    return fs, found


def _first_answer(pafs, uri: str):
    fs, root = pafs.FileSystem.from_uri(uri)
    return fs, root, fs.get_file_info(root)


def _within(seconds: float, uri: str, call):
    """``call()``, or SourceError if it has not answered within ``seconds`` (an unreachable bucket:
    pyarrow's clients retry for many minutes). The call goes on in a daemon thread, abandoned."""
    import queue
    import threading

    answer: queue.Queue = queue.Queue()

    def run() -> None:
        try:
            answer.put((True, call()))
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
            answer.put((False, error))

    threading.Thread(target=run, daemon=True, name="instyle-list").start()
    try:
        ok, value = answer.get(timeout=seconds)
    except queue.Empty:
        raise SourceError(f"{uri}: no answer within {seconds:g} s; is the storage reachable from here, with credentials?") from None
    if not ok:
        raise value
    return value


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def name_outputs(
    items: list[Item], filesystems: list[Any], output: Path, name: str, suffix: str
) -> tuple[list[Item], list[Item]]:  # fmt: skip
    """``items`` with their outputs named as plain ``stylize`` names them
    (:func:`instyle.engine.inference.stylize.output_paths`), as absolute paths (written by workers
    whose working folder may be another); and those whose output would replace an input file (a
    row with that error, never stylized)."""
    from instyle.engine.inference.stylize import output_paths

    paths = [Path(item.path) if item.fs < 0 else Path("/", f"fs{item.fs}", item.path.lstrip("/")) for item in items]
    targets = output_paths(paths, Path(os.path.abspath(output)), name, suffix)
    inputs = {_key(item, filesystems) for item in items}
    named = [Item(item.input, item.path, item.fs, os.fspath(t)) for item, t in zip(items, targets)]
    clash = [os.path.realpath(item.output) in inputs for item in named]
    return [item for item, c in zip(named, clash) if not c], [item for item, c in zip(named, clash) if c]


def read_batch(batch: dict[str, np.ndarray], filesystems: list[Any], max_pixels: int | None) -> dict[str, np.ndarray]:
    """A Ray task: each row's file read and decoded (:func:`instyle.engine.image.load_pixels`, with
    its limits and checks) into ``pixels`` (the (H, W, 3) array's bytes), ``shape`` and ``dtype``
    (uint8, or float32 for 16-bit and transparent images); an image that cannot be read is a row
    with status "failed" and its ``error``."""
    rows = len(batch["input"])
    pixels, shapes, dtypes = [b""] * rows, np.zeros((rows, 3), np.int64), [""] * rows
    status, errors, seconds = [""] * rows, [""] * rows, np.zeros(rows)
    for i in range(rows):
        start = time.perf_counter()
        try:
            array = decode_pixels(_read_bytes(str(batch["path"][i]), int(batch["fs"][i]), filesystems), max_pixels)
            pixels[i], shapes[i], dtypes[i] = array.tobytes(), array.shape, str(array.dtype)
        except Exception as error:  # noqa: BLE001 - any file's failure is its row, not the job's
            status[i], errors[i] = "failed", _reason(error)
        seconds[i] = time.perf_counter() - start
    return {
        "input": batch["input"], "output": batch["output"], "status": np.array(status, dtype=object),
        "error": np.array(errors, dtype=object), "seconds": seconds,
        "pixels": np.array(pixels, dtype=object), "shape": shapes, "dtype": np.array(dtypes, dtype=object),
    }  # fmt: skip


def _read_bytes(path: str, fs: int, filesystems: list[Any]) -> bytes:
    if fs < 0:
        with open(path, "rb") as f:
            return f.read()
    with filesystems[fs].open_input_stream(path) as f:
        return f.read()


def decode_pixels(data: bytes, max_pixels: int | None) -> np.ndarray:
    """An encoded image as (H, W, 3) uint8, or float32 in [0, 1] where the file has more than 8
    opaque bits: the pixels plain ``stylize`` reads from the same file."""
    from instyle.engine.image import load_pixels

    pixels = load_pixels(data, max_pixels=max_pixels)  # (3, H, W)
    return np.ascontiguousarray(pixels.permute(1, 2, 0).numpy())


def _reason(error: BaseException) -> str:
    """Why an image failed, without the ``<bytes>`` or path an ImageError starts with: the row names it."""
    from instyle.engine.image import ImageError

    if isinstance(error, ImageError):
        return error.reason
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return _first_line(error)
