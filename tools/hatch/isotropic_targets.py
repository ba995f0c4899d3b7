"""Hatch experiment s20 (docs/training.md): `instyle` with the style targets averaged over the
painting's 8 rotations and mirror images (an isotropic Gram target). Same arguments as `instyle`:

    OMP_NUM_THREADS=1 python tools/hatch/isotropic_targets.py train --style starry_night.jpg \
        -o s20.safetensors --width 0.375 --num-residual 3 --iterations 600
"""

from __future__ import annotations

import dataclasses
import sys

import torch

import instyle.engine.training.trainer
from instyle.engine.targets import StyleTargets, compute_style_targets


def isotropic_style_targets(image: torch.Tensor, **kwargs) -> StyleTargets:
    """compute_style_targets over the 8 rotations/mirrors of ``image``, Grams averaged."""
    views = []
    for quarter_turns in range(4):
        rotated = torch.rot90(image, quarter_turns, dims=(-2, -1))
        views += [rotated, rotated.flip(-1)]
    targets = [compute_style_targets(view, **kwargs) for view in views]
    grams = {layer: sum(t.grams[layer] for t in targets) / len(targets) for layer in targets[0].grams}
    return dataclasses.replace(targets[0], grams=grams)


if __name__ == "__main__":
    instyle.engine.training.trainer.compute_style_targets = isotropic_style_targets
    from instyle.apps.cli import main

    raise SystemExit(main(sys.argv[1:]))
