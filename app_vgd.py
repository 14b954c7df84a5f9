"""Deprecated alias: this module moved to vgd_apps.web (run it as `python -m vgd_apps.web`). It will be removed in vgd-gpt2 0.3."""

import warnings

warnings.warn("app_vgd moved to vgd_apps.web; this alias will be removed in vgd-gpt2 0.3", FutureWarning, stacklevel=2)

from vgd_apps.web import *  # noqa: E402,F401,F403

if __name__ == "__main__":
    import runpy

    runpy.run_module("vgd_apps.web", run_name="__main__", alter_sys=True)
