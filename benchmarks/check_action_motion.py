"""Does every action of the synthetic videos show in the picture? Renders one video of each action at each frame
size and measures, per action, the pixels that move between frames and the pixels by which its average frame differs
from the closest other action's.

    python benchmarks/check_action_motion.py [--sizes 32x32 96x128]

A pixel counts when one of its channels changes by more than 20 (of 255; the renderer's noise is +-6). An action with
0 moving pixels is a still picture (at 32 x 32, renderer 3 drew "laughs" and "waves" so: the laughing head bobbed less
than a pixel and the waving hand was above the frame); the last column is what tells the action from its nearest
neighbour in a single frame. Renderer 4 (`RENDERER_VERSION`) moves every action at both sizes. Results: docs/video.md.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from avsd_dataset.synthetic import FACT_VALUES  # noqa: E402
from avsd_dataset.synthetic_video import RENDERER_VERSION, render_video_frames  # noqa: E402

THRESHOLD = 20
FRAMES_PER_ACTION = 16


def action_frames(height: int, width: int) -> dict[str, np.ndarray]:
    """`action: [FRAMES_PER_ACTION, H, W, 3]` int16 frames of the action (one kitchen, one cup, same noise seed)."""
    frames = {}
    for action in FACT_VALUES["action"]:
        facts = dict(place="kitchen", object="cup", color="red", count="one", actions=[action], object_regions=[0])
        frames[action] = render_video_frames(facts, num_regions=4, frames_per_action=FRAMES_PER_ACTION, height=height, width=width, seed=0).astype(np.int16)
    return frames


def motion_table(height: int, width: int) -> list[dict]:
    """Per action: moving pixels per frame step (mean, max) and the pixels between its mean frame and the nearest
    other action's mean frame."""
    frames = action_frames(height, width)
    means = {action: f.mean(axis=0) for action, f in frames.items()}
    rows = []
    for action, f in frames.items():
        moving = (np.abs(np.diff(f, axis=0)).max(axis=-1) > THRESHOLD).sum(axis=(1, 2))
        apart = {other: int((np.abs(means[action] - means[other]).max(axis=-1) > THRESHOLD).sum()) for other in frames if other != action}
        nearest = min(apart, key=apart.get)
        rows.append({"action": action, "moving_mean": float(moving.mean()), "moving_max": int(moving.max()), "nearest": nearest, "apart": apart[nearest]})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["32x32", "96x128"], help="HEIGHTxWIDTH frame sizes")
    args = parser.parse_args(argv)
    print(f"renderer {RENDERER_VERSION}; a pixel moves when a channel changes by > {THRESHOLD}")
    for size in args.sizes:
        height, width = (int(v) for v in size.split("x"))
        print(f"\n{height} x {width}: | action | moving pixels per frame step, mean / max | nearest action by mean frame | pixels apart |")
        for row in motion_table(height, width):
            print(f"| {row['action']} | {row['moving_mean']:.1f} / {row['moving_max']} | {row['nearest']} | {row['apart']} |")


if __name__ == "__main__":
    main()
