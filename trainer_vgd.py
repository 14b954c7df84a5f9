"""Deprecated alias: this module moved to vgd_training (VGDTrainer, VGDTrainingArguments) and avsd_dataset.turns (DialogueTurnDataset). It will be removed in vgd-gpt2 0.3."""

import warnings

warnings.warn("trainer_vgd moved to vgd_training (VGDTrainer, VGDTrainingArguments) and avsd_dataset.turns (DialogueTurnDataset); this alias will be removed in vgd-gpt2 0.3", FutureWarning, stacklevel=2)

from avsd_dataset.turns import DialogueTurnDataset, GenerationCollator, caption_text, held_out_matching_pairs  # noqa: E402,F401
from vgd_training import OBJECTIVES, TrainingDivergedError, VGDTrainer, VGDTrainingArguments, avsd_caption_metrics  # noqa: E402,F401
