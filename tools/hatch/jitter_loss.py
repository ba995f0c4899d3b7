"""Hatch experiment s21 (docs/training.md): `instyle` with the generated image and the content
target rescaled by a random 0.75-1.25 and shifted by 0-3 px before the VGG at every training step,
so that a fixed-frequency pattern stops paying (transformation robustness). Same arguments as
`instyle`:

    OMP_NUM_THREADS=1 python tools/hatch/jitter_loss.py train --style starry_night.jpg \
        -o s21.safetensors --width 0.375 --num-residual 3 --iterations 600
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from instyle.engine.losses import PerceptualLoss

_forward = PerceptualLoss.forward


def jittered_forward(self, input, content=None, *, per_layer=False):
    """PerceptualLoss.forward on a randomly rescaled and shifted copy of input and content
    (the same transform for both); evaluation (no grad) is left alone."""
    if not torch.is_grad_enabled():
        return _forward(self, input, content, per_layer=per_layer)
    h, w = input.shape[-2:]
    scale = float(torch.empty(()).uniform_(0.75, 1.25))
    size = (max(32, round(h * scale)), max(32, round(w * scale)))
    dy, dx = int(torch.randint(0, 4, ())), int(torch.randint(0, 4, ()))

    def transform(x):
        x = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
        return x[..., dy:, dx:]

    return _forward(self, transform(input), None if content is None else transform(content), per_layer=per_layer)


if __name__ == "__main__":
    PerceptualLoss.forward = jittered_forward
    from instyle.apps.cli import main

    raise SystemExit(main(sys.argv[1:]))
