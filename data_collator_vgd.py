"""Deprecated alias: this module moved to avsd_dataset.collator (DataCollatorForVGD). It will be removed in vgd-gpt2 0.3."""

import warnings

warnings.warn("data_collator_vgd moved to avsd_dataset.collator; this alias will be removed in vgd-gpt2 0.3", FutureWarning, stacklevel=2)

from avsd_dataset.collator import DataCollatorForVGD  # noqa: E402,F401
from processing_vgd import IGNORE_INDEX  # noqa: E402,F401
