"""Perceptual losses for style transfer: Gram matrices, content, style and total-variation terms.

- :mod:`~instyle.engine.losses.terms`: the statistics and the content, style and TV losses, as
  functions and as small modules;
- :mod:`~instyle.engine.losses.perceptual`: :class:`PerceptualLoss`, which combines them on the
  features of a frozen extractor;
- :mod:`~instyle.engine.losses.gram`: the Gram matrix's tuned GEMMs.

Every statistic and loss is computed in at least fp32 whatever the feature dtype (bf16 autocast
included), and every loss is a mean over the batch, so the weights mean the same thing for the
optimiser (N = 1) and for trainers.
"""

from instyle.engine.losses.perceptual import FeatureExtractor, LossTerms, PerceptualLoss
from instyle.engine.losses.terms import (
    STYLE_STATS, ContentLoss, StyleLoss, TotalVariationLoss, content_loss, gram_matrix, mean_std, style_loss,
    style_statistic, total_variation,
)  # fmt: skip

__all__ = [
    "ContentLoss",
    "FeatureExtractor",
    "LossTerms",
    "PerceptualLoss",
    "STYLE_STATS",
    "StyleLoss",
    "TotalVariationLoss",
    "content_loss",
    "gram_matrix",
    "mean_std",
    "style_loss",
    "style_statistic",
    "total_variation",
]
