"""Deprecated alias: this module moved to vgd_apps.chat (run it as `python -m vgd_apps.chat`). It will be removed in vgd-gpt2 0.3."""

import warnings

warnings.warn("chat_vgd moved to vgd_apps.chat; this alias will be removed in vgd-gpt2 0.3", FutureWarning, stacklevel=2)

from vgd_apps.chat import *  # noqa: E402,F401,F403

if __name__ == "__main__":
    import runpy

    runpy.run_module("vgd_apps.chat", run_name="__main__", alter_sys=True)
