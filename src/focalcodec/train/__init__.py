"""Training recipes of SPEC §4: stage Q (quantizer), stage D (decoder), the streaming
distillation stages, WavLM initialisation and checkpoint export. See docs/training.md."""

from .config import load_train_config
from .export import export_checkpoint
from .trainer import Trainer, train

__all__ = ["Trainer", "export_checkpoint", "load_train_config", "train"]
