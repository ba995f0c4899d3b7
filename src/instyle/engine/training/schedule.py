"""The learning-rate schedule of training (generators here, texture networks in
:mod:`instyle.engine.texture`)."""

from __future__ import annotations

import math
from typing import Callable


def cosine_lr(config) -> Callable[[int], float]:
    """The factor of the learning rate at each step, for ``LambdaLR``: a half cosine from 1 at step 0
    to ``config.lr_final_fraction`` at ``config.iterations``, flat after."""
    final = config.lr_final_fraction

    def factor(step: int) -> float:
        progress = min(step / max(config.iterations, 1), 1.0)
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
