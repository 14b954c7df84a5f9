"""Fitting the PCA whitening that a VGD-GPT2 model with `config.video_whitening_components` reads its video features
through (`VGDGPT2ForDialogue.set_video_whitening`): on the training videos, pooled as the model reads them."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from tqdm.auto import tqdm


def fit_video_whitening(videos: Iterable[np.ndarray], components: int, floor: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """The PCA whitening of every feature row of `videos`, keeping the `components` largest components.

    Args:
        videos: arrays `[..., D]` (e.g. one video's `[F, P, D]` tokens); every row of every array counts once. Read
            one at a time (the sums are accumulated in float64), so a dataset need not fit in memory.
        components (`int`): K, the components kept (1 <= K <= D).
        floor (`float`): eigenvalues are floored at this fraction of their mean before the division, so that a
            direction with (almost) no variance is not blown up.

    Returns:
        `(mean [D], matrix [D, K])`, float32: `(x - mean) @ matrix` has unit variance along each of the K largest
        principal directions of the rows (a little less where the floor applies), the largest first.
    """
    total, outer, count = None, None, 0
    for array in videos:
        rows = np.asarray(array, dtype=np.float64).reshape(-1, np.shape(array)[-1])
        if total is None:
            total, outer = np.zeros(rows.shape[1]), np.zeros((rows.shape[1], rows.shape[1]))
        elif rows.shape[1] != total.shape[0]:
            raise ValueError(f"fit_video_whitening: a video has feature dim {rows.shape[1]}, the first had {total.shape[0]}")
        total += rows.sum(axis=0)
        outer += rows.T @ rows
        count += len(rows)
    if count < 2:
        raise ValueError(f"fit_video_whitening needs at least 2 feature rows, got {count}")
    dim = total.shape[0]
    if not 1 <= components <= dim:
        raise ValueError(f"fit_video_whitening: components must be between 1 and the feature dim {dim}, got {components}")
    mean = total / count
    covariance = (outer - count * np.outer(mean, mean)) / (count - 1)
    eigenvalues, vectors = np.linalg.eigh(covariance)  # ascending
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    scale = eigenvalues.mean()
    if not scale > 0:
        raise ValueError("fit_video_whitening: the video features do not vary (every row is the same)")
    matrix = vectors / np.sqrt(eigenvalues / scale + floor) / np.sqrt(scale)
    return mean.astype(np.float32), np.ascontiguousarray(matrix[:, ::-1][:, :components]).astype(np.float32)


def fit_model_video_whitening(model, processor, store, image_ids: Iterable[str], progress: bool = True) -> int:
    """Fit `model`'s video whitening (`config.video_whitening_components`) on the videos `image_ids` of the feature
    `store` (`avsd_dataset.VideoFeatureStore`), each pooled by `processor.feature_extractor` as the model will read it,
    and install it (`model.set_video_whitening`). Returns the number of videos read."""
    unique = list(dict.fromkeys(image_ids))
    pooled = (
        processor.feature_extractor.process_video(store[image_id])
        for image_id in tqdm(unique, desc="Fitting the video whitening", unit="video", disable=not progress)
    )
    mean, matrix = fit_video_whitening(pooled, model.config.video_whitening_components)
    model.set_video_whitening(torch.from_numpy(mean), torch.from_numpy(matrix))
    return len(unique)
