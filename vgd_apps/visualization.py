"""Drawing the video relevance map of VGD-GPT2 (matplotlib).

[`plot_video_relevance`] draws an `[F, P]` map (from `pipeline(..., return_video_relevance=True)` or
`VGDGPT2ForDialogue.video_relevance`) as one tile per sampled frame: the frame image with the heatmap laid over it
when frames are given, otherwise the heatmap of the frame's regions alone (regions on a square grid when P is a
square number, e.g. 7 x 7 ResNeXt cells, else a row). One colour scale for the whole map, so tiles compare.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def region_grid(num_regions: int) -> tuple[int, int]:
    """(rows, columns) of the spatial regions: a square grid when `num_regions` is a square number, else one row."""
    side = math.isqrt(num_regions)
    return (side, side) if side * side == num_regions else (1, num_regions)


def plot_video_relevance(
    relevance: np.ndarray,
    frames: Sequence[np.ndarray] | np.ndarray | None = None,
    path: str | None = None,
    title: str | None = None,
    tile_size: float = 1.8,
):
    """Draw a relevance map; save it as a PNG when `path` is given.

    Args:
        relevance (`np.ndarray` of shape `(frames, regions)`): non-negative weights (e.g. summing to 1).
        frames (`[F, H, W, 3]` uint8, *optional*): the sampled frames, one per row of `relevance`.
        path (`str`, *optional*): where to write the PNG.
        title (`str`, *optional*): a title above the tiles (e.g. the question and answer).
    Returns:
        The `matplotlib.figure.Figure` (closed with `matplotlib.pyplot.close(figure)` when done).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    relevance = np.asarray(relevance, dtype=np.float64)
    if relevance.ndim != 2 or relevance.shape[0] == 0 or relevance.shape[1] == 0:
        raise ValueError(f"relevance must be a non-empty [frames, regions] array, got shape {relevance.shape}")
    num_frames, num_regions = relevance.shape
    if frames is not None and len(frames) != num_frames:
        raise ValueError(f"{len(frames)} frames given for a relevance map of {num_frames} frames")
    rows, columns = region_grid(num_regions)
    vmax = float(relevance.max()) or 1.0
    figure = Figure(figsize=(tile_size * num_frames + 0.8, tile_size + (0.5 if title else 0.2)), dpi=100)
    axes = figure.subplots(1, num_frames, squeeze=False)[0]
    image = None
    for f, axis in enumerate(axes):
        grid = relevance[f].reshape(rows, columns)
        if frames is not None:
            frame = np.asarray(frames[f])
            height, width = frame.shape[:2]
            axis.imshow(frame)
            image = axis.imshow(grid, cmap="inferno", alpha=0.55, vmin=0.0, vmax=vmax, extent=(0, width, height, 0),
                                interpolation="nearest")
        else:
            image = axis.imshow(grid, cmap="inferno", vmin=0.0, vmax=vmax, interpolation="nearest")
        axis.set_title(f"frame {f + 1}: {relevance[f].sum():.0%}", fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.colorbar(image, ax=list(axes), fraction=0.03, pad=0.02)
    if title:
        figure.suptitle(title, fontsize=10)
    if path is not None:
        figure.savefig(path, format="png", bbox_inches="tight")
    return figure


def figure_to_array(figure) -> np.ndarray:
    """The RGB pixels `[H, W, 3]` uint8 of a matplotlib figure (for an image component)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()


__all__ = ["figure_to_array", "plot_video_relevance", "region_grid"]
