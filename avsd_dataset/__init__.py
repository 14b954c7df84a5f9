"""AVSD (DSTC7 / DSTC8) data for VGD-GPT2: the `datasets` builder, the video feature store, scoring and demo data.

The exports are imported lazily, so `import avsd_dataset` (or one of its light sub-modules, such as
`avsd_dataset.offline_gpt2` or `python -m avsd_dataset.score`) does not import `datasets` until `AVSD` & co. are used.
"""

import importlib
from typing import TYPE_CHECKING


_EXPORTS = {
    "avsd": [
        "AVSD",
        "AVSDConfig",
        "AVSDFormatError",
        "UNDISCLOSED",
        "avsd_features",
        "history_pairs",
        "load_avsd",
        "load_avsd_dialogues",
        "load_avsd_references",
        "reference_name",
    ],
    "features": [
        "DEFAULT_FEATURE_STREAMS",
        "FeatureProblem",
        "MissingVideoFeatureError",
        "UnreadableVideoFeatureError",
        "VideoFeatureError",
        "VideoFeatureStore",
        "VideoFeatureValidationError",
        "parse_feature_streams",
        "read_npy_header",
    ],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)

if TYPE_CHECKING:
    from .avsd import (
        AVSD,
        UNDISCLOSED,
        AVSDConfig,
        AVSDFormatError,
        avsd_features,
        history_pairs,
        load_avsd,
        load_avsd_dialogues,
        load_avsd_references,
        reference_name,
    )
    from .features import (
        DEFAULT_FEATURE_STREAMS,
        FeatureProblem,
        MissingVideoFeatureError,
        UnreadableVideoFeatureError,
        VideoFeatureError,
        VideoFeatureStore,
        VideoFeatureValidationError,
        parse_feature_streams,
        read_npy_header,
    )


def __getattr__(name):
    module_name = _MODULE_OF.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
