#!/usr/bin/env python
"""Diagnostic: the video demo's clip tokens under linear transforms that rebalance what they carry, each written as a
feature folder for `benchmarks/sweep_video_training.py --feature_dir`.

    python benchmarks/diag_feature_transforms.py DATA_DIR FEATURE_DIR OUT_ROOT [--variants NAME ...]

DATA_DIR and FEATURE_DIR are a `python -m avsd_dataset.video_demo` run's data folder and standardised features
(`r3d_18/`, `r3d_18_testset/`, `[F, P, 512]`: the frames' 256 channels, then their differences' 256). Every clip's
regions are averaged to one token (what `--video_pooling temporal` reads); PCA whitening is fitted on the 1,500
training dialogues' tokens (`diag_pooled_video_features.fit_whitening`: eigenvalues floored at 1 % of their mean,
optionally only the top-k components kept). Variants (`OUT_ROOT/<name>/r3d_18{,_testset}/<id>.npy`, `[F, 1, D']`, or another layout):

| name | token |
|---|---|
| white | all 512 channels whitened |
| white64 | all 512 channels, the top 64 components whitened |
| frames_white64 | the frames' half, top 64 whitened; the differences' half as it is |
| frames_white | the frames' half, all 256 whitened; the differences' half as it is |
| both_white64 | each half, top 64 whitened |
| white64_differences_half | white64, then the differences' half at 0.5 |
| frames_white64_differences_half | frames_white64 with the differences' half at 0.5 |
| differences_half | the differences' half at 0.5 (nothing whitened) |
| differences_quarter | the differences' half at 0.25 |
| clips_and_regions | not a transform of the clip token: the F clip tokens as they are, then P region tokens (each region averaged over the clips), `[F + P, 1, D]` |

These folders have no `backbone.json`: a diagnostic of what the training makes of each balance, not a model that
answers from `.mp4` files. Results: docs/video.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from diag_pooled_video_features import fit_whitening  # noqa: E402
from vgd_training.video_whitening import fit_video_whitening  # noqa: E402

STREAM = "r3d_18"
HALF = 256


def whitening(rows: np.ndarray, top: int | None = None):
    """`x -> (x - mean) @ matrix`, the PCA whitening of `rows` (only the `top` largest components when given)."""
    mean, matrix = fit_whitening(rows) if top is None else fit_video_whitening([rows], top)
    return lambda x: (x - mean) @ matrix


def variants(train_rows: np.ndarray) -> dict:
    frames, differences = train_rows[:, :HALF], train_rows[:, HALF:]
    white, white64 = whitening(train_rows), whitening(train_rows, 64)
    frames_white, frames_white64, differences_white64 = whitening(frames), whitening(frames, 64), whitening(differences, 64)
    return {
        "white": white,
        "white64": white64,
        "frames_white64": lambda x: np.concatenate([frames_white64(x[:, :HALF]), x[:, HALF:]], 1),
        "frames_white": lambda x: np.concatenate([frames_white(x[:, :HALF]), x[:, HALF:]], 1),
        "both_white64": lambda x: np.concatenate([frames_white64(x[:, :HALF]), differences_white64(x[:, HALF:])], 1),
        "white64_differences_half": lambda x: np.concatenate([white64(x), 0.5 * x[:, HALF:]], 1),
        "frames_white64_differences_half": lambda x: np.concatenate([frames_white64(x[:, :HALF]), 0.5 * x[:, HALF:]], 1),
        "differences_half": lambda x: np.concatenate([x[:, :HALF], 0.5 * x[:, HALF:]], 1),
        "differences_quarter": lambda x: np.concatenate([x[:, :HALF], 0.25 * x[:, HALF:]], 1),
    }


# Token layouts other than one token per clip: `[F, P, D]` grid -> token rows.
LAYOUTS = {"clips_and_regions": lambda grid: np.concatenate([grid.mean(axis=1), grid.mean(axis=0)])}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir")
    parser.add_argument("feature_dir")
    parser.add_argument("out_root")
    parser.add_argument("--variants", nargs="*", default=None, help="Names to write (default: all).")
    args = parser.parse_args(argv)
    with open(os.path.join(args.data_dir, "train_set4DSTC7-AVSD.json"), encoding="utf-8") as f:
        train_ids = [dialog["image_id"] for dialog in json.load(f)["dialogs"]]
    tokens = lambda split, name: np.load(os.path.join(args.feature_dir, split, name)).mean(axis=1)  # noqa: E731
    train_rows = np.concatenate([tokens(STREAM, f"{i}.npy") for i in train_ids]).astype(np.float64)
    if train_rows.shape[1] != 2 * HALF:
        raise ValueError(f"{args.feature_dir} holds {train_rows.shape[1]} channels; the video demo's r3d_18 layer3 with frame differences has {2 * HALF}")
    transforms = variants(train_rows)
    unknown = sorted(set(args.variants or ()) - set(transforms) - set(LAYOUTS))
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {sorted(transforms) + sorted(LAYOUTS)}")
    for name in args.variants or list(transforms) + list(LAYOUTS):
        for split in (STREAM, f"{STREAM}_testset"):
            out = os.path.join(args.out_root, name, split)
            os.makedirs(out, exist_ok=True)
            for file in sorted(os.listdir(os.path.join(args.feature_dir, split))):
                if file.endswith(".npy"):
                    if name in LAYOUTS:
                        token = LAYOUTS[name](np.load(os.path.join(args.feature_dir, split, file)).astype(np.float64))
                    else:
                        token = transforms[name](tokens(split, file).astype(np.float64))
                    np.save(os.path.join(out, file), token.astype(np.float32)[:, None, :])
        print(name, "->", os.path.join(args.out_root, name), flush=True)


if __name__ == "__main__":
    main()
