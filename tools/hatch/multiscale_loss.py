"""Hatch experiment s22 (docs/training.md): `instyle` with a second style loss on the generated
image at half resolution, against the painting's statistics at half the style size. A fine texture
(the hatch's period is about 5.6 px) nearly vanishes at half resolution, so that term asks for the
painting's strokes at twice the scale. Training only (evaluation is left alone). Same arguments as
`instyle`, plus HATCH_STYLE (the painting) and HATCH_STYLE_SIZE (the run's style size):

    HATCH_STYLE=starry_night.jpg HATCH_STYLE_SIZE=384 OMP_NUM_THREADS=1 python tools/hatch/multiscale_loss.py \
        train --style starry_night.jpg -o s22.safetensors --width 0.375 --num-residual 3
"""

from __future__ import annotations

import copy
import os
import sys

import torch
import torch.nn.functional as F

from instyle.engine.image import load_image, resize_long_side
from instyle.engine.losses import LossTerms, PerceptualLoss

_forward = PerceptualLoss.forward


def _half_scale_loss(loss: PerceptualLoss) -> PerceptualLoss:
    """A style-only copy of ``loss`` whose targets come from the painting at half the style size."""
    half = copy.deepcopy(loss)
    half.content_weight, half.tv_weight = 0.0, 0.0
    style = resize_long_side(load_image(os.environ["HATCH_STYLE"]), int(os.environ["HATCH_STYLE_SIZE"]) // 2)
    device = next(loss.extractor.parameters()).device
    half.set_style(style.to(device))
    return half


def multiscale_forward(self, input, content=None, *, per_layer=False):
    """PerceptualLoss.forward plus the half-resolution style term while training."""
    total, terms = _forward(self, input, content, per_layer=per_layer)
    if not torch.is_grad_enabled():
        return LossTerms(total, terms)
    if getattr(self, "_half", None) is None:
        with torch.no_grad():
            object.__setattr__(self, "_half", _half_scale_loss(self))  # not a submodule: kept out of state_dict
    small = F.interpolate(input.float(), scale_factor=0.5, mode="bilinear", align_corners=False, antialias=True)
    half_total, half_terms = _forward(self._half, small, None)
    terms = {**terms, "style": terms["style"] + half_terms["style"]}
    return LossTerms(total + half_total, terms)


if __name__ == "__main__":
    PerceptualLoss.forward = multiscale_forward
    from instyle.apps.cli import main

    raise SystemExit(main(sys.argv[1:]))
