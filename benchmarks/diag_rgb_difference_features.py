#!/usr/bin/env python
"""Diagnostic: extract features of RGB differences (TSN's motion input, Wang et al. 2016) instead of the frames.

    python benchmarks/diag_rgb_difference_features.py VIDEO_DIR FEATURE_DIR --backbone r3d_18 --random_init \
        --crop_size 24 --resize_size 24 --layer layer3 --clip_length 4 --fps 4 [--split test]   # extract_features' flags
    python benchmarks/probe_video_features.py DATA_DIR FEATURE_DIR --projection_epochs 0      # what they carry

`python -m avsd_dataset.extract_features` with the backbone fed the differences of consecutive frames of each clip
(`clip[:, :, 1:] - clip[:, :, :-1]`, T - 1 frames): a motion stream without the static room, to test whether a random
backbone's features of the person's motion carry the action better than those of the frames (docs/video.md, "Why the
actions are not learned"). The folder's `backbone.json` does not say that the input was differenced: a diagnostic, not a
stream to train a model that answers from .mp4 files.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import video_backbone_vgd  # noqa: E402

_frames_grid = video_backbone_vgd.VGDVideoBackbone._torchvision_grid


def _difference_grid(self, clips):
    """`clips` `[N, 3, T, H, W]` -> the backbone's grid of their consecutive-frame differences."""
    return _frames_grid(self, clips[:, :, 1:] - clips[:, :, :-1])


if __name__ == "__main__":
    video_backbone_vgd.VGDVideoBackbone._torchvision_grid = _difference_grid
    from avsd_dataset.extract_features import main

    main()
