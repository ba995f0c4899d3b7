"""Experiments that check the seed's claims with numbers: ``instyle experiment in-vs-bn``.

``run_in_vs_bn(ExperimentConfig(...))`` trains one TransformerNet with instance norm and one
with batch norm (same seed, data, schedule and loss), measures them on held-out photos and
writes ``report.md``, ``report.json`` and ``figure.png`` into ``config.output``. It returns the
report as a dict and prints nothing (pass ``on_progress`` for stage messages).

The five claims (Ulyanov et al. 2016/2017, as the seed states them) and what is measured:

1. IN instead of BN in every generator layer stylizes better: held-out content, style and
   total loss in eval mode, with the same loss the generators were trained on.
2. The output should not depend on the content image's contrast: ``x_k = mean + k (x - mean)``
   (per image and channel, clamped to [0, 1]) for each ``k``; mean |G(x_k) - G(x_1)|.
3. IN behaves the same in training and at test time: one image alone and inside batches of
   other images, in train and eval modes; train-mode against eval-mode output.
4. About 16 content images, trained briefly, are enough: held-out loss after the same number of
   steps on 1, 4, 16, 64 content images (fixed augmented crops of the training photos).
5. The generator is orders of magnitude faster than the Gatys optimisation: time per image
   against :func:`instyle.optimize` at the same size and device.

Modules: :mod:`.config` (the settings), :mod:`.run` (the stages), :mod:`.measures` (what is
measured), :mod:`.report` (verdicts and report.md), :mod:`.figure` (figure.png).
"""

from instyle.apps.experiment.config import ExperimentConfig, ExperimentError
from instyle.apps.experiment.run import run_in_vs_bn

__all__ = ["ExperimentConfig", "ExperimentError", "run_in_vs_bn"]
