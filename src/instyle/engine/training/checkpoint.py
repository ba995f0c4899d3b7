"""The training checkpoint: written atomically, read back without running pickled code, and
checked before a run continues (or overwrites) it.

A checkpoint holds everything an exact resume needs: the model, the optimizer, the scheduler, the
step, the logs so far, the best evaluation, the RNG states and the run's settings. Its keys are
those of every earlier version, so old checkpoints still resume.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import torch

from instyle.engine.config import flat_json
from instyle.engine.fileio import write_atomic
from instyle.engine.training.config import TrainingError
from instyle.engine.weights import TorchFileError, torch_load_plain

CHECKPOINT_NAME = "checkpoint.pt"

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


def load_checkpoint(path: Path, what: str = "checkpoint") -> object:
    """What ``path`` holds, read without running pickled code (:func:`check_checkpoint` checks its
    structure). Raises TrainingError: ``what``, the file and why."""
    try:
        if path.stat().st_size == 0:
            raise TrainingError(f"{what} {path} is empty (0 bytes)")
        return torch_load_plain(path)
    except TorchFileError as error:  # truncated, garbage, or a pickle that would run code
        raise TrainingError(f"{what} {path}: {error}") from error
    except OSError as error:
        raise TrainingError(f"{what} {path}: cannot be read: {error.strerror or error}") from error


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, model, optimizer, scheduler, state: TrainState, config, extra: dict | None = None) -> None:
    """Write the checkpoint of ``state`` (and the current RNG states) to ``path``, atomically; ``extra``:
    entries a task adds (plain data, checked by the task when it resumes)."""
    atomic_torch_save(
        {
            **(extra or {}),
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


def resume_checkpoint(
    path: Path, model, optimizer, scheduler, config, may_change: Collection[str], check_extra=None
) -> tuple[TrainState, dict]:
    """Load the checkpoint at ``path`` into ``model``, ``optimizer`` and ``scheduler``, after checking
    its structure against them (:func:`check_checkpoint`) and that ``config`` continues the run it
    holds (changing only the settings ``may_change`` names), then ``check_extra(saved)`` (the task's
    own entries; raises TrainingError); returns the run's progress and the RNG states, for
    :func:`set_rng_state` once setup is done."""
    if not path.exists():
        raise TrainingError(f"resume: no checkpoint at {path}")
    saved = load_checkpoint(path, what="resume:")
    check_checkpoint(saved, path, model, optimizer, config, may_change)
    if check_extra is not None:
        check_extra(saved)
    for entry, target in (("model", model), ("optimizer", optimizer), ("scheduler", scheduler)):
        try:
            target.load_state_dict(saved[entry])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as error:  # what the checks missed
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise TrainingError(f"resume: {path}: entry {entry!r} cannot be loaded: {reason}") from error
    state = TrainState(
        step=saved["step"],
        history=list(saved.get("history", [])),
        heldout=list(saved.get("heldout", [])),
        train_seconds=float(saved.get("train_seconds", 0.0)),
        best=saved.get("best"),
        stopped_early=saved.get("stopped_early", False),
    )
    return state, saved["rng"]


# ---------------------------------------------------------------------------- the checkpoint's structure

_REQUIRED = ("model", "optimizer", "scheduler", "step", "rng")  # the rest may be absent (older runs)


def check_checkpoint(saved: object, path: Path, model, optimizer, config, may_change: Collection[str]) -> None:
    """The one check of what a checkpoint holds, before any of it is loaded: every entry's type, the
    settings (and that ``config`` continues them: :func:`check_resumable`), the weights and optimizer
    state against the run resuming it (names and shapes) and free of NaN and inf, the step, the RNG
    states and the logs. Raises TrainingError naming ``path`` and the first bad entry."""
    if not isinstance(saved, dict):
        kind = type(saved).__name__
        raise TrainingError(f"resume: {path} holds a {kind}, not a checkpoint (a dict of the model, optimizer, step, ...)")
    missing = [name for name in _REQUIRED if name not in saved]
    if missing:
        entries = "entry" if len(missing) == 1 else "entries"
        raise TrainingError(f"resume: {path} is not a whole checkpoint: no {entries} {', '.join(map(repr, missing))}")
    weights = model.state_dict()
    checks = {
        "config": lambda value: _config_problem(value, type(config)),
        "step": _step_problem,
        "rng": _rng_problem,
        "model": lambda value: _weights_problem(value, weights),
        "optimizer": lambda value: _optimizer_problem(value, optimizer),
        "scheduler": lambda value: _scheduler_problem(value, len(optimizer.param_groups)),
        "history": _rows_problem,
        "heldout": _rows_problem,
        "train_seconds": lambda value: None if _is_number(value) and 0 <= value < math.inf else f"{value!r} is not seconds",
        "best": lambda value: None if value is None else _best_problem(value, weights),
        "stopped_early": lambda value: None if isinstance(value, bool) else f"{value!r} is not true or false",
    }  # fmt: skip
    for entry, check in checks.items():
        problem = check(saved[entry]) if entry in saved else None
        if problem:
            raise TrainingError(f"resume: {path}: entry {entry!r}: {problem}")
        if entry == "config":  # changed settings explain weights of other shapes best: said first
            check_resumable(json.loads(saved.get("config", "{}")), config, path, may_change)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _step_problem(value) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return None
    return f"{value!r} is not a step number (a whole number, 0 or more)"


def _rng_problem(value) -> str | None:
    if not isinstance(value, dict) or "torch" not in value or not isinstance(value.get("cuda", []), (list, tuple)):
        return "not the random generators' states (a dict of a 'torch' state and a list of 'cuda' ones)"
    states = [("torch", value["torch"])] + [(f"cuda {i}", s) for i, s in enumerate(value.get("cuda", []))]
    for name, state in states:
        if not isinstance(state, torch.Tensor) or state.dtype != torch.uint8 or state.dim() != 1:
            return f"the {name} state is not a ByteTensor"
    expected = torch.get_rng_state().numel()
    if value["torch"].numel() != expected:
        return f"the torch state has {value['torch'].numel()} bytes, not {expected}"
    return None


def _config_problem(value, config_cls) -> str | None:
    try:
        settings = json.loads(value)
    except (TypeError, ValueError):
        return "the run's settings are not JSON text"
    if not isinstance(settings, dict):
        return f"the run's settings are not a JSON object: {value[:40]!r}"
    if not isinstance(settings.get("loss", {}), dict):
        return f"the run's loss settings are not a JSON object: {settings['loss']!r}"
    try:
        flat_json(config_cls.from_json(settings))
    except (TypeError, ValueError, AttributeError, KeyError) as error:
        return f"the run's settings are not a training config: {error}"
    return None


def _nonfinite(tensors) -> str | None:
    """The name of the first floating-point tensor of ``(name, tensor)`` pairs with NaN or inf values."""
    for name, tensor in tensors:
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            return name
    return None


def _weights_problem(value, expected: dict) -> str | None:
    """``value`` against the state dict ``expected``: the same names, tensors of the same shapes and
    kinds, all finite."""
    if not isinstance(value, dict):
        return f"a {type(value).__name__}, not the model's weights"
    missing = [name for name in expected if name not in value]
    if missing:
        names = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        return f"the model's weight{'s' if len(missing) > 1 else ''} {names} {'are' if len(missing) > 1 else 'is'} missing"
    unexpected = [str(name) for name in value if name not in expected]
    if unexpected:
        return f"weight {', '.join(unexpected[:3])} is not the model's"
    for name, tensor in value.items():
        if not isinstance(tensor, torch.Tensor):
            return f"weight {name} is a {type(tensor).__name__}, not a tensor"
        want = expected[name]
        if tensor.shape != want.shape:
            return f"weight {name} has shape {tuple(tensor.shape)}, the model's is {tuple(want.shape)}"
        if tensor.is_floating_point() != want.is_floating_point():
            return f"weight {name} is {tensor.dtype}, the model's is {want.dtype}"
    bad = _nonfinite(value.items())
    return f"weight {bad} has NaN or inf values" if bad else None


def _optimizer_problem(value, optimizer) -> str | None:
    """``value`` against the optimizer's own state: its groups, and per parameter, state values that
    are numbers, scalars or tensors of the parameter's shape, all finite."""
    if not isinstance(value, dict) or not isinstance(value.get("state"), dict) or not isinstance(value.get("param_groups"), list):
        return "not an optimizer's state (a dict of 'state' and 'param_groups')"
    groups = optimizer.param_groups
    if len(value["param_groups"]) != len(groups):
        return f"{len(value['param_groups'])} parameter groups, the optimizer has {len(groups)}"
    for saved, group in zip(value["param_groups"], groups):
        if not isinstance(saved, dict) or not isinstance(saved.get("params"), list) or len(saved["params"]) != len(group["params"]):
            return "its parameter groups do not match the model's parameters"
        if not (_is_number(saved.get("lr")) and math.isfinite(saved["lr"])):
            return f"learning rate {saved.get('lr')!r} is not a number"
    shapes = dict(enumerate(p.shape for group in groups for p in group["params"]))
    for index, state in value["state"].items():
        if index not in shapes or not isinstance(state, dict):
            return f"state of parameter {index!r}, which the model does not have"
        for name, x in state.items():
            x = torch.tensor(float(x)) if _is_number(x) else x  # older torch kept Adam's step as a number
            if not isinstance(x, torch.Tensor) or x.dim() and x.shape != shapes[index]:
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                return f"{name} of parameter {index} has shape {shape}, the parameter's is {tuple(shapes[index])}"
            if _nonfinite([(name, x)]):
                return f"{name} of parameter {index} has NaN or inf values"
    return None


def _scheduler_problem(value, groups: int) -> str | None:
    """A learning-rate schedule's state: its step count and a rate per parameter group (its other
    entries differ between torch versions, and loading only sets them)."""
    if not isinstance(value, dict):
        return f"a {type(value).__name__}, not a learning-rate schedule's state"
    last = value.get("last_epoch")
    if not isinstance(last, int) or isinstance(last, bool) or last < -1:
        return f"its step count last_epoch {last!r} is not a whole number"
    for key in ("base_lrs", "_last_lr"):
        rates = value.get(key, [0.0] * groups)
        if not isinstance(rates, list) or len(rates) != groups or not all(_is_number(r) and math.isfinite(r) for r in rates):
            return f"{key} {rates!r} is not one learning rate per parameter group ({groups})"
    lambdas = value.get("lr_lambdas", [None] * groups)
    if not isinstance(lambdas, list) or len(lambdas) != groups or not all(f is None or isinstance(f, dict) for f in lambdas):
        return f"lr_lambdas {lambdas!r} is not one entry per parameter group ({groups})"
    return None


def _rows_problem(value) -> str | None:
    if not isinstance(value, list):
        return f"a {type(value).__name__}, not a list of logged rows"
    for i, row in enumerate(value):
        if not isinstance(row, dict) or not all(isinstance(k, str) and _is_number(v) for k, v in row.items()):
            return f"row {i} is not a mapping of names to numbers"
    return None


def _best_problem(value, weights: dict) -> str | None:
    if not isinstance(value, dict) or not all(key in value for key in ("step", "total", "model")):
        return "not the best evaluation (a dict of its step, total and model)"
    if _step_problem(value["step"]) or not _is_number(value["total"]):
        return f"step {value['step']!r} and total {value['total']!r} are not a step and a loss"
    problem = _weights_problem(value["model"], weights)
    return f"its model: {problem}" if problem else None


def nonfinite_state(model, optimizer) -> str | None:
    """The first of ``model``'s weights and ``optimizer``'s state with NaN or inf values (what
    :func:`check_checkpoint` refuses), or None: only then is a checkpoint written."""
    bad = _nonfinite(model.state_dict().items())
    if bad:
        return f"weight {bad}"
    for group in optimizer.param_groups:
        for param in group["params"]:
            bad = _nonfinite(optimizer.state.get(param, {}).items())
            if bad:
                return f"optimizer state {bad}"
    return None


def check_resumable(saved: dict, config, checkpoint_path: Path, may_change: Collection[str]) -> None:
    """Refuse to resume the run of the settings ``saved`` (as ``config.to_json()`` recorded them) with
    settings ``config`` that change what it computes: any but those ``may_change`` names (what a
    resumed run may change: how long it runs, what it logs and where, how it computes, not what)."""
    current = flat_json(config)
    before = flat_json(type(config).from_json(saved))  # either layout: loss nested, or flat (older runs)
    recorded = set(saved) | set(saved.get("loss") or ())  # a setting newer than the checkpoint is not compared
    changed = [n for n in current if n not in may_change and n in recorded and before[n] != current[n]]
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
    except (TrainingError, KeyError, TypeError, ValueError, AttributeError):
        return  # not a checkpoint of ours: nothing to resume, so nothing is lost
    if not finished:
        raise TrainingError(
            f"{checkpoint_path} holds an unfinished run (step {step} of {planned}); continue it with resume, "
            f"or delete {checkpoint_path.parent} (or choose another log_dir) to start again"
        )
