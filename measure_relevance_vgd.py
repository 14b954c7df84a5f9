"""Deprecated alias: this module moved to benchmarks/measure_relevance.py (run it as `python benchmarks/measure_relevance.py`). It will be removed in vgd-gpt2 0.3."""

import warnings

warnings.warn("measure_relevance_vgd moved to benchmarks/measure_relevance.py; this alias will be removed in vgd-gpt2 0.3", FutureWarning, stacklevel=2)


if __name__ == "__main__":
    import os
    import runpy

    runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmarks/measure_relevance.py"), run_name="__main__")
