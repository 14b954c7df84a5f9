"""Training VGD-GPT2 with the Hugging Face `Trainer`: `VGDTrainer`, `VGDTrainingArguments`, checkpointing that
survives failures and resumes exactly. The model files (what a saved model ships) do not import this package."""

from .arguments import VGDTrainingArguments
from .trainer import OBJECTIVES, TrainingDivergedError, VGDTrainer, avsd_caption_metrics

__all__ = ["OBJECTIVES", "TrainingDivergedError", "VGDTrainer", "VGDTrainingArguments", "avsd_caption_metrics"]
