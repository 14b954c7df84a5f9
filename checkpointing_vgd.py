"""Deprecated alias: this module moved to vgd_training.checkpointing. It will be removed in vgd-gpt2 0.3."""

import warnings

warnings.warn("checkpointing_vgd moved to vgd_training.checkpointing; this alias will be removed in vgd-gpt2 0.3", FutureWarning, stacklevel=2)

from vgd_training.checkpointing import *  # noqa: E402,F401,F403
from vgd_training.checkpointing import CHECKPOINT_INFO_NAME, CHECKPOINT_PATTERN, RUN_INFO_NAME, STAGING_PREFIX  # noqa: E402,F401
