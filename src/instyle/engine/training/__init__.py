"""Training a feed-forward stylization generator: ``train(TrainConfig(...))``."""

from instyle.engine.training.config import TrainConfig, TrainingError, TrainingInterrupted, TrainResult, check_config  # noqa: F401
from instyle.engine.training.trainer import (  # noqa: F401
    CHECKPOINT_NAME,
    _cosine_lr,
    atomic_torch_save,
    batch_for_step,
    corner_crops,
    heldout_crops,
    heldout_loss,
    load_checkpoint,
    load_content_set,
    resolve_sizes,
    sample_batch,
    stored_style_size,
    train,
)

__all__ = ["TrainConfig", "TrainResult", "TrainingError", "TrainingInterrupted", "train"]
