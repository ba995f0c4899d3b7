"""What every training run shares: :func:`run_training`, the loop that drives a run, and
:class:`TrainingRun`, the machinery around its steps.

A run's log folder (and the refusal to overwrite an unfinished run), the checkpoint and the exact
resume (:mod:`.checkpoint`: the RNG states are restored last, so N steps straight equal k steps +
resume + N - k steps), the optimizer step with the NaN guard, the history, the held-out log and
early stopping, SIGINT/SIGTERM, and the model file are here, once. A task fills in what it trains
and on what: :class:`~instyle.engine.training.trainer.Trainer` (a style generator) and
:class:`~instyle.engine.training.adain.trainer.AdaINTrainer` (the AdaIN decoder). Nothing here
prints: the caller's ``on_step`` reports progress.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from instyle.engine.cuda_graphs import GraphedStep
from instyle.engine.fileio import WriteError
from instyle.engine.modelfile import ModelFileError, load_generator, save_model
from instyle.engine.training import checkpoint as ckpt
from instyle.engine.training.checkpoint import CHECKPOINT_NAME, TrainState
from instyle.engine.training.config import ModelNotSaved, TrainingError, TrainingInterrupted, TrainResult, log_dir_of
from instyle.engine.training.log import write_log, write_rows
from instyle.engine.weights import file_sha256


def run_training(
    run: TrainingRun, on_step: Callable[[int, dict[str, float]], None] | None = None, handle_signals: bool = True
) -> TrainResult:
    """Set up ``run``, step it to the end and return its result.

    ``on_step(step, losses)`` follows each step (on the first process). With ``handle_signals``,
    SIGINT and SIGTERM end the run after the step under way: a checkpoint is written and
    TrainingInterrupted raised."""
    run.setup()
    with caught_signals(handle_signals) as caught, cudnn_autotuning(run.devices.device):
        while not run.done:
            losses = run.step()
            if run.evaluation_due():
                run.evaluate()
            if on_step is not None and run.rank == 0:
                on_step(run.state.step, losses)
            if run.checkpoint_due():
                run.save_checkpoint()
            if run.samples_due():
                run.save_samples()
            if caught:
                run.interrupt(caught[0])
    return run.finish()


class TrainingRun:
    """One training run: :meth:`setup`, then :meth:`step` until :attr:`done`, with :meth:`evaluate`,
    :meth:`save_checkpoint` and :meth:`save_samples` where due, then :meth:`finish`.

    A task config has ``output``, ``log_dir``, ``resume``, ``iterations``, ``batch_size``,
    ``checkpoint_every``, ``eval_every``, ``sample_every`` and ``save_dtype``. A task sets
    :attr:`resume_may_change` and implements the hooks: ``_resolve`` (check the settings, set
    ``devices``), ``_build_model`` (the seeded ``model``, its ``optimizer`` and ``scheduler``: ``_use_adam``),
    ``_load`` (the data and the loss network; ``eval_data`` where it evaluates), ``_ready``,
    ``_batch``, ``_loss``, ``_heldout_terms``, ``save_samples`` and ``_metadata``."""

    resume_may_change: frozenset[str] = frozenset()  # the settings a resume may change (see check_resumable)
    rank, world = 0, 1  # this process and how many train together (torchrun)
    style_targets = None  # what the model file stores beside the weights (a style generator's)

    def __init__(self, config: Any) -> None:
        self.config = config
        self.state = TrainState()
        self.losses: dict[str, float] = {}  # the last step's
        self.eval_data: Any = None  # what evaluate() judges by; None: no evaluation
        self._term_names: list[str] = []
        self._use_graph = False  # replay each step from a CUDA graph, once captured
        self._graphed: GraphedStep | None = None
        self._eager_steps = 0
        self._good_checkpoint: Path | None = None  # this run's last checkpoint (written, or resumed from)

    # ---------------------------------------------------------------------------- setup

    def setup(self) -> None:
        """Check and resolve the settings, build the model and optimizer, continue the checkpoint where
        ``config.resume`` asks, load the data and the loss network. The log folder is made last: a run
        refused on the way leaves nothing behind."""
        self._resolve()
        self.output = Path(self.config.output)
        self.log_dir = log_dir_of(self.config)
        self.checkpoint_path = self.log_dir / CHECKPOINT_NAME
        if not self.config.resume and self.checkpoint_path.exists():
            ckpt.refuse_to_restart_unfinished(self.checkpoint_path)
        self._build_model()
        init_from = getattr(self.config, "init_from", None)
        if init_from is not None and not self.config.resume:  # a resumed run has its own weights
            self._init_from(init_from)
        rng = self._resume() if self.config.resume else None  # before the data and the loss network load
        self._load()
        if self.rank == 0:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        if rng is not None:  # last: building the loss network draws random numbers
            ckpt.set_rng_state(rng)
        self._ready()
        self.start = time.perf_counter()

    def _resume(self) -> dict:
        """The checkpoint, checked, into the model, optimizer and schedule; its RNG states returned."""
        self.state, rng = ckpt.resume_checkpoint(
            self.checkpoint_path, self.model, self.optimizer, self.scheduler, self.config, self.resume_may_change,
            check_extra=self._check_resumed,
        )  # fmt: skip
        self._good_checkpoint = self.checkpoint_path
        if self.state.history:  # a finished run resumed to save its model: the losses of its last step
            self.losses = {k: v for k, v in self.state.history[-1].items() if k != "step"}
        return rng

    def _checkpoint_extra(self) -> dict:
        """Entries the task adds to each checkpoint: what a fine-tuned run started from."""
        return {"init_from": self._start} if self._start is not None else {}

    def _check_resumed(self, saved: dict) -> None:
        """A resumed fine-tuning run keeps the record of its start (older checkpoints have none)."""
        if getattr(self.config, "init_from", None) is not None:
            self._start = saved.get("init_from") or {"file": Path(self.config.init_from).name}

    def _ready(self) -> None:
        """What the steps need once everything is loaded (nothing by default)."""

    # ---------------------------------------------------------------------------- fine-tuning

    # Fine-tuning (``config.init_from``): a new run, with its own settings, starts from another run's
    # network instead of new weights (a resume keeps every setting; this keeps only the weights).
    _start: dict | None = None  # what this run started from: file, sha256 and that file's own training

    def _init_from(self, path: str) -> None:
        """Load the weights of the model file ``path`` into ``self.model``, before anything is written;
        it must hold this run's architecture and shapes (ModelFileError names the file otherwise)."""
        model, metadata = load_generator(path, archs=(self.model.arch,))
        theirs, ours = model.state_dict(), self.model.state_dict()
        differ = sorted(set(theirs) ^ set(ours)) or [k for k in ours if theirs[k].shape != ours[k].shape]
        if differ:
            raise ModelFileError(
                f"init_from {path}: its network is not this run's (it differs at {', '.join(differ[:3])}); "
                "start from a model trained with the same architecture, width and residual blocks"
            )
        self.model.load_state_dict(theirs)
        self._start = start_record(Path(path), metadata)

    def _use_adam(self, lr: float, schedule: Callable[[int], float]) -> None:
        """Adam on the model's weights that train (``requires_grad``) at ``lr``, times ``schedule(step)`` (LambdaLR)."""
        # fused: one kernel for the whole update on CUDA instead of several per parameter tensor
        fused = True if self.devices.device.type == "cuda" else None
        trained = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trained, lr=lr, fused=fused)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)

    # ---------------------------------------------------------------------------- steps

    @property
    def done(self) -> bool:
        return self.state.step >= self.config.iterations or self.state.stopped_early

    def step(self) -> dict[str, float]:
        """One optimizer step on this step's batch: its loss terms (the mean over the processes) and
        images_per_s, also appended to the history. A loss that is not finite stops the run before
        the weights change."""
        config, state = self.config, self.state
        batch = self._batch(state.step)
        step_start = time.perf_counter()
        # One device-to-host read per step for every term (each .item() waits for the GPU).
        values = self._forward_backward_step(batch).tolist()
        if not math.isfinite(values[0]):
            raise TrainingError(f"loss became {values[0]} at step {state.step + 1}; stopped without saving ({self._last_good()})")
        self.optimizer.step()
        self.scheduler.step()
        state.step += 1
        losses = dict(zip(["total", *self._term_names], values))
        if self.world > 1:
            packed = torch.tensor(list(losses.values()), dtype=torch.float64, device=self.devices.device)
            torch.distributed.all_reduce(packed)
            losses = dict(zip(losses, (packed / self.world).tolist()))
        seconds = time.perf_counter() - step_start
        state.train_seconds += seconds
        losses["images_per_s"] = config.batch_size / max(seconds, 1e-9)
        state.history.append({"step": state.step, **losses})
        self.losses = losses
        return losses

    def _forward_backward_step(self, batch: Any) -> Tensor:
        """Gradients of ``batch`` into .grad, replayed from the CUDA graph once captured; the loss terms."""
        if self._use_graph and self._graphed is None and self._eager_steps >= GraphedStep.EAGER_STEPS:
            self._graphed = GraphedStep.capture(self._forward_backward, batch, self.optimizer)
            self._use_graph = self._graphed is not None
        if self._graphed is not None:
            return self._graphed(batch)
        self.optimizer.zero_grad(set_to_none=True)
        # without autocast's weight cache where a capture follows, as the capture must run: a
        # compiled step would otherwise recompile for the changed autocast state
        values = self._forward_backward(batch, cache=not self._use_graph)
        self._eager_steps += 1
        return values

    def _forward_backward(self, batch: Any, cache: bool = True) -> Tensor:
        """Loss and gradients of one batch (into .grad); the loss terms as one tensor, total first."""
        with self.devices.autocast_context(cache=cache):
            total, terms = self._loss(batch)
        self._term_names[:] = list(terms)
        total.backward()
        return torch.stack([total.detach().float(), *(v.detach().float() for v in terms.values())])

    # ---------------------------------------------------------------------------- evaluation, files

    def evaluation_due(self) -> bool:
        step, config = self.state.step, self.config
        return self.eval_data is not None and (step % config.eval_every == 0 or step == config.iterations)

    def evaluate(self) -> None:
        """The held-out loss (:meth:`_heldout_terms`), logged to heldout.csv with the training seconds
        so far; with ``config.patience``, the best evaluation's weights are kept and the run stops early
        when they stop improving (rank 0 decides for all)."""
        state = self.state
        patience = getattr(self.config, "patience", 0)  # a task without early stopping has no such setting
        if self.rank == 0:
            terms = self._heldout_terms()
            state.heldout.append({"step": state.step, "train_seconds": round(state.train_seconds, 3), **terms})
            write_rows(state.heldout, self.log_dir / "heldout.csv")
            if patience:
                self._track_best(terms["total"], patience)
        if self.world > 1 and patience:
            flag = torch.tensor([float(state.stopped_early)], device=self.devices.device)
            torch.distributed.broadcast(flag, src=0)
            state.stopped_early = bool(flag.item())

    def _track_best(self, total: float, patience: int) -> None:
        state = self.state
        if state.best is None or total < state.best["total"]:
            weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            state.best = {"step": state.step, "total": total, "model": weights}
        state.stopped_early = sum(h["step"] > state.best["step"] for h in state.heldout) >= patience

    def checkpoint_due(self) -> bool:
        step, config = self.state.step, self.config
        return step % config.checkpoint_every == 0 or step == config.iterations or self.state.stopped_early

    def save_checkpoint(self) -> None:
        """The checkpoint and the CSV log (rank 0); weights or optimizer state gone NaN or inf never
        overwrite a good checkpoint (nor would a resume take them)."""
        if self.rank != 0:
            return
        bad = ckpt.nonfinite_state(self.model, self.optimizer)
        if bad:
            raise TrainingError(f"{bad} became NaN or inf by step {self.state.step}; stopped without saving ({self._last_good()})")
        ckpt.save_checkpoint(
            self.checkpoint_path, self.model, self.optimizer, self.scheduler, self.state, self.config,
            self._checkpoint_extra(),
        )  # fmt: skip
        self._good_checkpoint = self.checkpoint_path
        write_log(self.state.history, self.log_dir, self.state.heldout, plot=False)  # a plot costs more

    def _last_good(self) -> str:
        """Where this run can be resumed from: never a checkpoint another run left in the log folder."""
        if self._good_checkpoint is None:
            return "no checkpoint of this run yet"
        return f"last good checkpoint: {self._good_checkpoint}"

    def samples_due(self) -> bool:
        every = self.config.sample_every
        return self.rank == 0 and bool(every) and self.state.step % every == 0

    def interrupt(self, signum: int) -> None:
        """Stop after a signal: the checkpoint and the logs, then TrainingInterrupted."""
        self.save_checkpoint()
        if self.rank == 0:
            write_log(self.state.history, self.log_dir, self.state.heldout)
        raise TrainingInterrupted(signum, self.checkpoint_path, self.state.step)

    def finish(self) -> TrainResult:
        """The model of the best evaluation (with patience) or of the last step, saved with its
        metadata (rank 0), and the run's result."""
        state = self.state
        best_heldout = state.heldout[-1] if state.heldout else None
        if state.best is not None:  # the model of the best evaluation, not the last step's
            self.model.load_state_dict(state.best["model"])
            best_heldout = next(h for h in state.heldout if h["step"] == state.best["step"])
        best_step = state.best["step"] if state.best else state.step
        if self.rank == 0:
            try:
                write_log(state.history, self.log_dir, state.heldout)
                save_model(
                    self.model, self.output, self._metadata(best_heldout, best_step),
                    dtype=torch.float16 if self.config.save_dtype == "fp16" else None, style_targets=self.style_targets,
                )  # fmt: skip
            except OSError as error:  # the disk filled up, say: the checkpoint of the last step holds the run
                reason = error.strerror if isinstance(error, WriteError) else str(error)  # WriteError's names the file
                raise ModelNotSaved(reason, self.checkpoint_path, self.log_dir) from error
        if self.world > 1:
            torch.distributed.barrier()
        return TrainResult(
            self.model, state.step, self.losses, self.output, self.log_dir, time.perf_counter() - self.start,
            state.history, best_step=best_step, stopped_early=state.stopped_early,
        )  # fmt: skip


def start_record(path: Path, metadata: dict) -> dict:
    """What a fine-tuned run started from: the file, its sha256 and its own training (``metadata``, as
    the file was read), taken as the run starts and kept in its checkpoints (the file may be replaced
    before the run ends)."""
    keys = ("iterations", "train_seconds", "training", "validation_losses", "heldout_losses", "init_from")
    return {"file": path.name, "sha256": file_sha256(path), **{k: metadata[k] for k in keys if k in metadata}}


@contextlib.contextmanager
def caught_signals(enabled: bool) -> Iterator[list[int]]:
    """SIGINT and SIGTERM, while inside, only noted (in the list yielded), so that the step under way
    finishes and a checkpoint follows; the previous handlers come back on leaving."""
    caught: list[int] = []
    previous = {}
    if enabled:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda s, _frame: caught.append(s))
    try:
        yield caught
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def cudnn_autotuning(device: torch.device) -> Iterator[None]:
    """Every step has the same shapes: let cuDNN time its algorithms once (for this loop only)."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = previous or device.type == "cuda"
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous
