"""Training the decoder of arbitrary style transfer with AdaIN: ``train_adain(AdaINConfig(...))``.

- :mod:`.config`: AdaINConfig and its checks;
- :mod:`.data`: the validation split (by file name), the images kept decoded, the crops of a step;
- :mod:`.trainer`: AdaINTrainer (the driver, checkpoint, logs, signals and NaN guard are ``instyle
  train``'s: :mod:`instyle.engine.training.loop`);
- :mod:`.distill`: AdaINDistiller, the light pair of ``--distill-from`` (``instyle stylize --fast``);
- :mod:`.run`: ``train_adain()``, which runs the one or the other.

The network is in :mod:`instyle.engine.models.adain`, its loss in :mod:`instyle.engine.losses.adain`.
"""

from instyle.engine.training.adain.config import AdaINConfig, check_config
from instyle.engine.training.adain.data import is_validation, split_folder, validation_listing
from instyle.engine.training.adain.run import train_adain
from instyle.engine.training.adain.trainer import AdaINTrainer

__all__ = [
    "AdaINConfig", "AdaINTrainer", "check_config", "is_validation", "split_folder", "train_adain", "validation_listing",
]  # fmt: skip
