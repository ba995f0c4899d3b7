"""What runs on the Ray workers: :class:`Stylizer`, the actor that loads the job's model once and
stylizes and writes batches of decoded images; and :func:`worker_error`, a worker's failure as the
exception it raised there."""

from __future__ import annotations

import socket
import time
from typing import Any

import numpy as np

__all__ = ["Stylizer", "WorkerError", "check_model", "worker_error"]

PROBE_SIDE = 64  # the warm-up image: every option and the device checked before the first photo


class WorkerError(RuntimeError):
    """A failure on a Ray worker that is no exception of instyle's (a crash, a lost node)."""


class Stylizer:
    """A Ray actor (``map_batches`` with a callable class): the model of ``spec`` (a
    :class:`instyle.engine.batch.spec.ModelSpec`) loaded once, checked on a small image with the
    job's ``options`` (``probe``; else only the device), then each batch's images stylized and
    written atomically to their outputs. ``threads``: torch's intra-op threads on a CPU actor (Ray's
    share of CPUs for it)."""

    def __init__(self, spec, options: dict[str, Any], threads: int | None = None, probe: bool = True) -> None:
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.model, self._folder = spec.load()
        self.options = {**options, **spec.options}
        if probe:  # every option, the device and the first call's set-up, before the first photo
            image = np.full((PROBE_SIDE, PROBE_SIDE, 3), 128, np.uint8)
            self.model.stylize(image, **{**self.options, "max_size": None})
        else:
            from instyle.engine.device import DeviceConfig

            DeviceConfig.resolve(str(options.get("device", "auto")), str(options.get("dtype", "auto")), "inference")

    def ready(self) -> str:
        """Where this actor runs (it is loaded and checked once this answers)."""
        return socket.gethostname()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each row read by :func:`instyle.engine.batch.sources.read_batch` stylized and written; the
        manifest's columns come back (status "ok", or "failed" with the error)."""
        status = [str(s) for s in batch["status"]]
        errors = [str(e) for e in batch["error"]]
        seconds = np.asarray(batch["seconds"], dtype=np.float64).copy()
        for i, output in enumerate(batch["output"]):
            if status[i]:  # not read: its error stands
                continue
            start = time.perf_counter()
            try:
                self._write(self._pixels(batch, i), str(output))
                status[i] = "ok"
            except (ValueError, RuntimeError, OSError) as error:  # an ImageError is a ValueError
                status[i], errors[i] = "failed", _first_line(error)
            seconds[i] += time.perf_counter() - start
        return {
            "input": batch["input"], "output": batch["output"], "status": np.array(status, dtype=object),
            "error": np.array(errors, dtype=object), "seconds": seconds,
        }  # fmt: skip

    @staticmethod
    def _pixels(batch: dict[str, np.ndarray], i: int) -> np.ndarray:
        shape = tuple(int(n) for n in batch["shape"][i])
        return np.frombuffer(batch["pixels"][i], dtype=np.dtype(str(batch["dtype"][i]))).reshape(shape)

    def _write(self, pixels: np.ndarray, output: str) -> None:
        """Stylize ``pixels`` and write the result as plain ``stylize`` would: 8 bits, atomically."""
        from PIL import Image

        from instyle.engine.image import save_image

        result = self.model.stylize(pixels, **self.options)  # an ndarray comes back as its kind
        if result.dtype != np.uint8:  # float32 for 16-bit and transparent inputs: quantized as a PIL result is
            result = np.round(np.clip(result, 0.0, 1.0) * 255).astype(np.uint8)
        save_image(Image.fromarray(result, mode="RGB"), output)


def check_model(spec, options: dict[str, Any], threads: int | None = None) -> str:
    """A Ray task: the model loaded and the device resolved as a :class:`Stylizer` does when it
    starts, once, before the job's pool starts (the pool's actors then each check the options on a
    small image); where it ran."""
    return Stylizer(spec, options, threads, probe=False).ready()


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _on_worker(error: Exception) -> Exception:
    """``error`` saying that it happened on a worker ("CUDA is not available on this machine": that
    machine), of a type the caller knows: ConfigError keeps its field, other ValueErrors stay ValueErrors."""
    from instyle.engine.config import ConfigError

    where = " (on a Ray worker)"
    if isinstance(error, ConfigError):
        return ConfigError(error.field, error.reason + where)
    if isinstance(error, ValueError):
        return ValueError(_first_line(error) + where)
    return WorkerError(f"{type(error).__name__}: {_first_line(error)}{where}")


def worker_error(error: BaseException) -> BaseException:
    """The exception a worker raised, out of Ray's wrappers (an actor that died in ``__init__``, a
    task's error inside the job's): instyle's own errors keep their type, so that their fields name
    the arguments; anything else is a :class:`WorkerError` with its first line."""
    import ray.exceptions as rex

    seen, current = set(), error
    while isinstance(current, rex.RayError) and id(current) not in seen:
        seen.add(id(current))
        inner = getattr(current, "cause", None)
        if inner is None or isinstance(inner, str):
            inner = next((a for a in getattr(current, "args", ()) if isinstance(a, BaseException)), None)
        if inner is None:
            break
        current = inner
    if not isinstance(current, rex.RayError) and isinstance(current, Exception):
        return _on_worker(current)
    text = _first_line(current)
    if isinstance(current, rex.ActorDiedError) or "actor died" in text.lower():
        text = f"a Ray worker died ({text}); see the Ray logs (/tmp/ray/session_latest/logs on the node)"
    return WorkerError(text)

