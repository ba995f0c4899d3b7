"""A batch job on Ray Data: images listed in the driver, read and decoded in Ray tasks, stylized and
written by a pool of actors (one model each, loaded once), every image recorded in the manifest.

The driver checks everything it can before any work: the sources are listed, the output folder
checked, the model loaded (by the caller, into a :class:`ModelSpec`); then one task with the
resources of an actor must load the model and stylize a small image with the job's options on a
worker: a model that fails there is reported once, before any image is read and before anything is
written.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instyle.engine.batch.cluster import READY_SECONDS, ClusterError, Resources, blocks_for, connect, plan_resources
from instyle.engine.batch.manifest import MANIFEST_FILE, Manifest, remove_stray_temporaries
from instyle.engine.batch.sources import Item, list_sources, name_outputs, read_batch
from instyle.engine.batch.spec import ModelSpec, digest
from instyle.engine.config import ConfigError

__all__ = ["BatchJob", "BatchResult", "JobSummary", "DEFAULT_BATCH_SIZE", "READY_SECONDS"]

DEFAULT_BATCH_SIZE = 8  # images per actor call: small enough that a lost actor redoes little


@dataclass(frozen=True)
class BatchResult:
    """One image's row: ``status`` "ok" or "failed" (with ``error``); ``skipped``: done by an earlier run."""

    input: str
    output: str
    status: str
    error: str = ""
    seconds: float | None = None
    skipped: bool = False


@dataclass
class JobSummary:
    images: int = 0
    written: int = 0
    skipped: int = 0
    failed: int = 0
    manifest: Path | None = None
    seconds: float = 0.0
    failures: list[BatchResult] = field(default_factory=list)


def _remove(paths: list[Path]) -> None:
    """Files, then folders if they are empty (what a job made, in the order :meth:`BatchJob._open` gives)."""
    for path in paths:
        try:
            path.rmdir() if path.is_dir() else path.unlink()
        except OSError:
            pass


def _check_count(name: str, value: Any, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(name, f"must be an integer >= {low}, got {value!r}")


class BatchJob:
    """``sources`` (paths, folders, globs, URIs) stylized by ``spec`` into the folder ``output``
    with ``options`` (``stylize``'s: strength, preserve, max_size, tile, device, dtype). Creating
    the job lists and names the images and checks the output; :meth:`run` runs it on Ray."""

    def __init__(
        self, sources: Sequence[str | os.PathLike], output: str | os.PathLike, spec: ModelSpec, *,
        options: dict[str, Any] | None = None, suffix: str = ".png", recursive: bool = False,
        max_pixels: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE, actors: int | None = None,
        actors_per_gpu: int = 1,
    ) -> None:  # fmt: skip
        from instyle.engine.fileio import check_writable_output
        from instyle.engine.image import max_pixels_limit

        _check_count("batch_size", batch_size)
        if actors is not None:
            _check_count("actors", actors)
        _check_count("actors_per_gpu", actors_per_gpu)
        if suffix not in (".png", ".jpg", ".webp"):
            raise ConfigError("suffix", f"must be .png, .jpg or .webp, got {suffix!r}")
        if isinstance(sources, (str, os.PathLike)):
            sources = [sources]
        self.spec, self.options, self.suffix = spec, dict(options or {}), suffix
        self.batch_size, self.actors, self.actors_per_gpu = batch_size, actors, actors_per_gpu
        self.max_pixels = max_pixels_limit(max_pixels)  # resolved here: workers elsewhere lack this $INSTYLE_MAX_PIXELS
        self.output = Path(output)
        check_writable_output(self.output, field="output", folder=True, make_parents=True)
        items, self.filesystems = list_sources([os.fspath(s) for s in sources], recursive)
        self.items, self.refused = name_outputs(items, self.filesystems, self.output, spec.name, suffix)
        self.order = [item.input for item in items]
        settings = {"model": spec.source, "name": spec.name, "suffix": suffix, "options": self.options}
        self.manifest = Manifest(self.output, digest(spec, self.options, suffix), settings)
        self.summary = JobSummary(images=len(items), manifest=self.output / MANIFEST_FILE)

    def _split(self) -> tuple[list[Item], list[Item]]:
        """(done by an earlier run of this job: their outputs exist, complete; still to do)."""
        if not self.manifest.same_job():
            return [], list(self.items)
        done = [item for item in self.items if os.path.isfile(item.output)]
        exists = {item.input for item in done}
        return done, [item for item in self.items if item.input not in exists]

    def run(self, address: str | None = None, init_options: dict[str, Any] | None = None) -> Iterator[BatchResult]:
        """Run the job on Ray (the connection this process has, else the cluster at ``address``, else
        at $RAY_ADDRESS, else a local cluster started with ``init_options`` and stopped at the end),
        yielding each image's row as it is recorded; images an earlier run of the same job finished
        come first, ``skipped``. Interrupted (KeyboardInterrupt), the rows so far are kept: a rerun
        finishes the job."""
        start = time.perf_counter()
        started = connect(address, init_options)
        import ray
        created, failed = None, False
        try:
            done, todo = self._split()
            resources = plan_resources(
                ray.cluster_resources(), str(self.options.get("device", "auto")), self.actors, self.actors_per_gpu
            )  # fmt: skip
            if todo:
                self._check_workers(resources)
            created = self._open(done, todo)
            yield from self._record(self._earlier(done))
            if todo:
                yield from self._record(self._stream(todo, resources))
        except Exception:
            failed = True
            raise
        finally:
            if created is not None:
                self.manifest.finish(self.order)
                if failed and not self.summary.written + self.summary.failed:  # (the pool failed to start)
                    _remove(created)  # a job that failed before any image leaves nothing behind
            if started:
                ray.shutdown()
            self.summary.seconds = time.perf_counter() - start

    def _check_workers(self, resources: Resources) -> None:
        """A task with an actor's resources loads the model and stylizes a small image on a worker:
        a failure there (a missing GPU, a bad option, weights that cannot be fetched) is raised once,
        before any image is read and anything written. It runs alone, before the pool: beside it, an
        actor holding the last CPU or GPU would leave it waiting. (A task, not an actor: its worker
        process, torch imported, is then reused by the job's decoding tasks on a CPU.)"""
        import ray
        from ray.exceptions import GetTimeoutError, RayError

        from instyle.engine.batch.workers import check_model, worker_error

        # on a GPU the worker exits after it (max_calls): no idle process keeps a CUDA context
        task = ray.remote(**resources.actor_options, max_retries=1, max_calls=1 if resources.actor_gpus else 0)(check_model)
        ref = task.remote(self.spec, self.options, resources.threads)
        try:
            ray.get(ref, timeout=READY_SECONDS)
        except GetTimeoutError:
            ray.cancel(ref, force=True)
            need = ", ".join(f"{k.removeprefix('num_')} {v:g}" for k, v in resources.actor_options.items())
            raise ClusterError(
                "actors", f"none could load the model within {READY_SECONDS:g} s: the cluster has "
                f"{ray.cluster_resources()} and each actor needs {need}"
            ) from None  # fmt: skip
        except RayError as error:
            raise worker_error(error) from None

    def _open(self, done: list[Item], todo: list[Item]) -> list[Path]:
        """The output folder, the job record and the manifest, made only now that the job can run;
        temporary files a killed writer left beside the outputs removed. Returns what was made."""
        made = [p for p in (self.manifest.path, self.manifest.job_path) if not p.exists()]
        made += [p for p in (self.output, *self.output.parents) if not p.exists()]  # folders, deepest first
        self.output.mkdir(parents=True, exist_ok=True)
        self.manifest.start(continuing=bool(done) or self.manifest.same_job())
        remove_stray_temporaries([item.output for item in todo] + [str(self.manifest.path), str(self.manifest.job_path)])
        return made

    def _earlier(self, done: list[Item]) -> Iterator[dict[str, Any]]:
        """The rows of images finished before, and those refused (their output would replace an input)."""
        previous = self.manifest.previous()
        for item in done:
            row = previous.get(item.input)
            if row is None or row.get("status") != "ok" or row.get("output") != item.output:
                row = {"input": item.input, "output": item.output, "status": "ok", "error": "", "seconds": None}
            yield {**row, "skipped": True}
        for item in self.refused:
            yield {"input": item.input, "output": "", "status": "failed", "error": "refusing to overwrite an input file", "seconds": 0.0}

    def _stream(self, todo: list[Item], resources: Resources) -> Iterator[dict[str, Any]]:
        """The rows of ``todo`` as the actors finish them; a failure raised as the worker's error."""
        from ray.exceptions import RayError

        from instyle.engine.batch.workers import worker_error

        batches = self._dataset(todo, resources).iter_batches(batch_size=None, batch_format="numpy")
        try:
            for batch in batches:
                for i in range(len(batch["input"])):
                    yield {key: batch[key][i] for key in ("input", "output", "status", "error", "seconds")}
        except RayError as error:
            raise worker_error(error) from None
        finally:
            # stops Ray Data's executor thread now: one still running when the driver disconnects
            # (interrupted) makes Ray end the process with exit code 1
            getattr(batches, "close", lambda: None)()

    def _dataset(self, todo: list[Item], resources: Resources):
        """The Ray Data pipeline: the items, decoded by tasks, stylized and written by the actor pool.
        Ray Data retries a task whose worker dies, restarts a dead actor and resubmits its batch (its
        defaults: max_retries, max_restarts and max_task_retries -1): a lost worker loses no image."""
        import ray
        from ray.data import ActorPoolStrategy, TaskPoolStrategy

        from instyle.engine.batch.workers import Stylizer

        rows = [{"input": i.input, "path": i.path, "fs": i.fs, "output": i.output} for i in todo]
        read_compute = TaskPoolStrategy(size=resources.readers) if resources.readers else None
        return (
            ray.data.from_items(rows, override_num_blocks=blocks_for(len(rows), self.batch_size))
            .map_batches(
                read_batch, batch_size=self.batch_size, num_cpus=resources.read_cpus, compute=read_compute,
                fn_kwargs={"filesystems": self.filesystems, "max_pixels": self.max_pixels},
            )
            .map_batches(
                Stylizer, batch_size=self.batch_size, compute=ActorPoolStrategy(size=resources.actors),
                fn_constructor_kwargs={"spec": self.spec, "options": self.options, "threads": resources.threads},
                **resources.actor_options,
            )
        )  # fmt: skip

    def _record(self, rows: Iterator[dict[str, Any]]) -> Iterator[BatchResult]:
        """Each row into the manifest (a batch at a time) and the summary, then yielded."""
        pending: list[dict[str, Any]] = []
        last = time.monotonic()
        try:
            for row in rows:
                row = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
                pending.append(row)
                result = BatchResult(
                    str(row["input"]), str(row["output"]), str(row["status"]), str(row.get("error") or ""),
                    None if row.get("seconds") in (None, "") else float(row["seconds"]), bool(row.get("skipped")),
                )  # fmt: skip
                self._count(result)
                if len(pending) >= self.batch_size or time.monotonic() - last > 1.0:
                    self.manifest.append(pending)
                    pending, last = [], time.monotonic()
                yield result
        finally:
            self.manifest.append(pending)

    def _count(self, result: BatchResult) -> None:
        summary = self.summary
        if result.skipped:
            summary.skipped += 1
        elif result.status == "ok":
            summary.written += 1
        else:
            summary.failed += 1
            summary.failures.append(result)
