"""``train_adain(config)``: the run ``config`` asks for, the decoder's (:mod:`.trainer`) or, with
``distill_from``, the distilled pair's (:mod:`.distill`), driven by
:func:`~instyle.engine.training.loop.run_training`."""

from __future__ import annotations

from typing import Callable

from instyle.engine.training.adain.config import AdaINConfig
from instyle.engine.training.adain.distill import AdaINDistiller
from instyle.engine.training.adain.trainer import AdaINTrainer
from instyle.engine.training.config import TrainResult
from instyle.engine.training.loop import run_training

__all__ = ["train_adain"]


def train_adain(
    config: AdaINConfig, on_step: Callable[[int, dict[str, float]], None] | None = None, handle_signals: bool = True
) -> TrainResult:
    """Train the decoder ``config`` describes (or, with ``distill_from``, the distilled pair) and
    write it to ``config.output``.

    ``on_step(step, losses)`` follows each step. With ``handle_signals``, SIGINT and SIGTERM end the
    run after the step under way: a checkpoint is written and TrainingInterrupted raised."""
    run = AdaINDistiller(config) if config.distill_from is not None else AdaINTrainer(config)
    return run_training(run, on_step, handle_signals)
