"""The training checkpoint: written atomically, read back without running pickled code, and
checked before a run continues (or overwrites) it.

A checkpoint holds everything an exact resume needs: the model, the optimizer, the scheduler, the
step, the logs so far, the best evaluation, the RNG states and the run's settings. Its keys are
those of every earlier version, so old checkpoints still resume.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from instyle.engine.config import flat_json
from instyle.engine.fileio import write_atomic
from instyle.engine.training.config import TrainConfig, TrainingError

CHECKPOINT_NAME = "checkpoint.pt"

# What a resumed run may change: how long it runs, what it logs and where, and how it computes (not
# what). Every other setting must be the checkpoint's, or the resumed run is not the run it continues.
_RESUME_MAY_CHANGE = frozenset({
    "iterations", "checkpoint_every", "sample_every", "eval_every", "eval_content", "patience", "log_dir",
    "resume", "output", "style", "content", "device", "compile", "cuda_graph", "save_dtype",
    # how the loss network and style weight were chosen, not what they are (both are compared)
    "follow_style_targets", "rescale_style_weight", "style_weight_network",
})  # fmt: skip


@dataclass
class TrainState:
    """The progress of a run, beside its model, optimizer and scheduler."""

    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    heldout: list[dict[str, float]] = field(default_factory=list)  # step, train_seconds, loss terms
    train_seconds: float = 0.0  # time in training steps, across resumes
    # with patience: the evaluation with the lowest held-out total, {"step", "total", "model" (on the CPU)}
    best: dict | None = None
    stopped_early: bool = False


def atomic_torch_save(obj: dict, path: Path) -> None:
    # serialized in memory first: torch.save's own writer turns "disk full" into an opaque error
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getbuffer())


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, garbage, or a pickle that wants to run code
        raise TrainingError(f"cannot load checkpoint {path}: {error}") from error


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, model, optimizer, scheduler, state: TrainState, config: TrainConfig) -> None:
    """Write the checkpoint of ``state`` (and the current RNG states) to ``path``, atomically."""
    atomic_torch_save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": state.step,
            "history": state.history,
            "heldout": state.heldout,
            "train_seconds": state.train_seconds,
            "best": state.best,
            "stopped_early": state.stopped_early,
            "rng": rng_state(),
            "config": json.dumps(config.to_json()),
        },
        path,
    )


def resume_checkpoint(path: Path, model, optimizer, scheduler, config: TrainConfig) -> TrainState:
    """Load the checkpoint at ``path`` into ``model``, ``optimizer``, ``scheduler`` and the RNGs,
    after checking that ``config`` continues the run it holds; returns the run's progress."""
    if not path.exists():
        raise TrainingError(f"resume: no checkpoint at {path}")
    saved = load_checkpoint(path)
    check_resumable(json.loads(saved.get("config", "{}")), config, path)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    state = TrainState(
        step=int(saved["step"]),
        history=list(saved.get("history", [])),
        heldout=list(saved.get("heldout", [])),
        train_seconds=float(saved.get("train_seconds", 0.0)),
        best=saved.get("best"),
        stopped_early=bool(saved.get("stopped_early", False)),
    )
    set_rng_state(saved["rng"])
    return state


def check_resumable(saved: dict, config: TrainConfig, checkpoint_path: Path) -> None:
    """Refuse to resume the run of the settings ``saved`` with settings that change what it computes."""
    current = flat_json(config)
    before = flat_json(TrainConfig.from_json(saved))  # either layout: loss nested, or flat (older runs)
    recorded = set(saved) | set(saved.get("loss") or ())  # a setting newer than the checkpoint is not compared
    changed = [n for n in current if n not in _RESUME_MAY_CHANGE and n in recorded and before[n] != current[n]]
    if changed:

        def shown(value):
            return " ".join(map(str, value)) if isinstance(value, list) else value

        settings = ", ".join(f"{n} {shown(before[n])} (now {shown(current[n])})" for n in changed)
        raise TrainingError(
            f"resume: {checkpoint_path} was made with {settings}; resume with its settings, "
            "or start a new run in another log_dir"
        )


def refuse_to_restart_unfinished(checkpoint_path: Path) -> None:
    """A new run would overwrite the checkpoint of an unfinished one (a run stopped by a signal, say):
    refuse, so that forgetting resume loses nothing. A finished run's checkpoint may be replaced."""
    try:
        state = load_checkpoint(checkpoint_path)
        step, planned = int(state["step"]), int(json.loads(state["config"])["iterations"])
        finished = step >= planned or bool(state.get("stopped_early"))
    except (TrainingError, KeyError, TypeError, ValueError):
        return  # not a checkpoint of ours: nothing to resume, so nothing is lost
    if not finished:
        raise TrainingError(
            f"{checkpoint_path} holds an unfinished run (step {step} of {planned}); continue it with resume, "
            f"or delete {checkpoint_path.parent} (or choose another log_dir) to start again"
        )
