#!/usr/bin/env python
"""Diagnostic: train the video demo's model on one token per clip (the regions averaged), transformed.

    python benchmarks/diag_pooled_video_features.py DATA_DIR FEATURE_DIR OUTPUT_DIR GPT2_DIR \
        [--transform plain|contrast|both] [--whiten true|false] [--contrast_gain G] [run_vgd.py arguments ...]

DATA_DIR, FEATURE_DIR (a stream folder holding `r3d_18/` and `r3d_18_testset/`, raw or standardised) and GPT2_DIR are
a `python -m avsd_dataset.video_demo` run's data folder, extracted features and offline GPT-2. Every clip's regions are
averaged to one `[D]` token `p_t`; `--transform contrast` takes `p_t - mean_t(p_t)` (the video's static content
removed), `both` concatenates `[p_t, G * (p_t - mean_t p_t)]`; `--whiten true` PCA-whitens each half (fitted on the
training videos' tokens, eigenvalues floored at 1 % of their mean). The result is written as a feature folder next to
FEATURE_DIR (without `backbone.json`: a diagnostic, not a model that answers from .mp4 files) and trained with
`run_vgd.main` and the video demo's own training arguments (`--video_pooling temporal`). Prints the accuracies;
`docs/video.md` ("Why the actions are not learned") has the results.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vgd_training.video_whitening import fit_video_whitening  # noqa: E402

STREAM = "r3d_18"


def clip_tokens(features: np.ndarray, transform: str, contrast_gain: float) -> list[np.ndarray]:
    """`[F, P, D]` -> the halves of `[F, D']` (one entry, or two for `both`)."""
    pooled = features.mean(axis=1)
    contrast = pooled - pooled.mean(axis=0, keepdims=True)
    if transform == "plain":
        return [pooled]
    if transform == "contrast":
        return [contrast]
    return [pooled, contrast_gain * contrast]


def fit_whitening(rows: np.ndarray, floor: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """The model's whitening (`fit_video_whitening`) with every component kept, the smallest first (the column order
    these diagnostics were run with)."""
    mean, matrix = fit_video_whitening([rows], rows.shape[1], floor)
    return mean, matrix[:, ::-1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir")
    parser.add_argument("feature_dir")
    parser.add_argument("output_dir")
    parser.add_argument("gpt2_dir")
    parser.add_argument("--transform", choices=["plain", "contrast", "both"], default="plain")
    parser.add_argument("--whiten", choices=["true", "false"], default="true")
    parser.add_argument("--contrast_gain", type=float, default=1.0)
    args, run_vgd_args = parser.parse_known_args(argv)

    with open(os.path.join(args.data_dir, "train_set4DSTC7-AVSD.json"), encoding="utf-8") as f:
        train_ids = [dialog["image_id"] for dialog in json.load(f)["dialogs"]]
    load = lambda split, name: np.load(os.path.join(args.feature_dir, split, name))  # noqa: E731
    halves = [clip_tokens(load(STREAM, f"{i}.npy"), args.transform, args.contrast_gain) for i in train_ids]
    maps = []
    for half in range(len(halves[0])):
        rows = np.concatenate([h[half] for h in halves]).astype(np.float64)
        maps.append(fit_whitening(rows) if args.whiten == "true" else (np.zeros(rows.shape[1]), np.eye(rows.shape[1])))
    out_dir = os.path.join(args.data_dir, f"video_features-pooled-{args.transform}-whiten-{args.whiten}-gain-{args.contrast_gain:g}")
    for split in (STREAM, f"{STREAM}_testset"):
        os.makedirs(os.path.join(out_dir, split), exist_ok=True)
        for name in sorted(os.listdir(os.path.join(args.feature_dir, split))):
            if name.endswith(".npy"):
                parts = clip_tokens(load(split, name), args.transform, args.contrast_gain)
                tokens = np.concatenate([(part - mean) @ matrix for part, (mean, matrix) in zip(parts, maps)], axis=1)
                np.save(os.path.join(out_dir, split, name), tokens[:, None, :].astype(np.float32))

    from avsd_dataset.video_demo import VideoDemoArguments, paths, training_arguments

    demo_args = VideoDemoArguments(output_dir=args.output_dir, cache_dir=os.path.dirname(os.path.abspath(args.data_dir)), video_pooling="temporal")
    where = dict(paths(demo_args), data_dir=args.data_dir, feature_dir=out_dir)
    argv_run = training_arguments(demo_args, where, args.gpt2_dir) + run_vgd_args
    print("python run_vgd.py " + " ".join(argv_run), flush=True)
    import run_vgd

    metrics = run_vgd.main(argv_run)
    print(json.dumps({key: value for key, value in metrics.items() if "accuracy" in key}, indent=0))
    return metrics


if __name__ == "__main__":
    main()
