"""Deprecated alias: this module moved to vgd_apps.visualization. It will be removed in vgd-gpt2 0.3."""

import warnings

warnings.warn("visualization_vgd moved to vgd_apps.visualization; this alias will be removed in vgd-gpt2 0.3", FutureWarning, stacklevel=2)

from vgd_apps.visualization import *  # noqa: E402,F401,F403
