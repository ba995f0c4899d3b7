"""Training a feed-forward stylization generator: ``train(TrainConfig(...))``.

- :mod:`.config`: TrainConfig, its result and errors;
- :mod:`.data`: image files read, content photos, crops, flips and the seeded batch order (shared
  with the experiment and the AdaIN decoder);
- :mod:`.checkpoint`: the checkpoint, its atomic writes and the resume checks;
- :mod:`.log`: CSV logs, the loss curve and sample grids;
- :mod:`.schedule`: the cosine learning-rate schedule;
- :mod:`.loop`: what every run shares: ``run_training()``, the driver, and TrainingRun, the
  checkpoint, resume, NaN guard, signals and model file around a task's steps;
- :mod:`.trainer`: the Trainer of a style generator;
- :mod:`.multi`: the MultiStyleTrainer of a multi-style generator (several styles, or more for a base),
  and ``train()``, which picks the run for a config;
- :mod:`.adain`: the AdaIN decoder's run (``train_adain()``).
"""

from instyle.engine.training.checkpoint import CHECKPOINT_NAME, atomic_torch_save, load_checkpoint  # noqa: F401
from instyle.engine.training.config import (  # noqa: F401
    ModelNotSaved, TrainConfig, TrainingError, TrainingInterrupted, TrainResult, check_config,
)
from instyle.engine.training.data import (  # noqa: F401
    batch_for_step,
    corner_crops,
    crop_pool,
    heldout_crops,
    load_content_set,
    read_images,
    resize_short_side,
    sample_batch,
    training_scale_crops,
)
from instyle.engine.training.loop import TrainingRun, caught_signals, cudnn_autotuning, run_training  # noqa: F401
from instyle.engine.training.schedule import cosine_lr  # noqa: F401
from instyle.engine.training.trainer import Trainer, heldout_loss, resolve_defaults, stored_style_size  # noqa: F401
from instyle.engine.training.multi import MultiStyleTrainer, train  # noqa: F401

__all__ = [
    "ModelNotSaved", "MultiStyleTrainer", "TrainConfig", "TrainResult", "Trainer", "TrainingError", "TrainingInterrupted",
    "train",
]
