# Copyright 2020 The VGD-GPT2 Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Render the facts of the synthetic AVSD task ([`avsd_dataset.synthetic`]) as real video files, offline.

```
python -m avsd_dataset.synthetic_video DATA_DIR [--max_videos N] [--height 96 --width 128]
```

For every video of a generated synthetic folder (its `synthetic_ground_truth.json`), an H.264 `.mp4` (PyAV,
FFmpeg bundled in the `av` wheels) shows

| fact | in the picture |
|---|---|
| place (8 rooms) | the wall: a colour and a stripe pattern per room |
| object (8 kinds) | the shape of the things on the table (square, frame, triangle, diamond, bar, pillar, ring, cross) |
| color (8) | their fill colour |
| count | how many of them stand on the table, at the video's object regions (fixed over time) |
| actions, in order | the person's motion, one action per segment of `frames_per_action` frames (walks: moves right, sits: goes down, eats / drinks: hand to the mouth at two speeds, laughs: head bobs, sneezes: jerks, dances: sways, waves: raised hand swings) |

Videos go to `DATA_DIR/videos/<image_id>.mp4` (train and validation) and `DATA_DIR/videos_testset/` (test),
so that `python -m avsd_dataset.extract_features DATA_DIR/videos DATA_DIR/features --backbone ...` (and
`... DATA_DIR/videos_testset ... --split test`) write features where the AVSD loader reads them.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any, Mapping, Optional

import numpy as np

from .synthetic import FACT_VALUES, load_ground_truth


VIDEO_DIR = "videos"
TEST_VIDEO_DIR = "videos_testset"
# Bumped whenever the same facts are drawn differently, so that cached videos of an older drawing are not reused
# (`avsd_dataset.video_demo` names its data folder with it). 2: objects are at least MIN_OBJECT_SIZE pixels.
# 3: the same file in every process and run (no macroblock tree, YUV converted on one thread; see `write_video`).
# 4: every action moves visibly in small frames: the person is short enough for the waving hand to stay in the
# picture (at 32 x 32 it was drawn above the frame's top edge, so "waves" showed no hand and no motion) and the
# laughing head bobs a fifth of the person's height (0.06 before: under one pixel at 32 x 32, so "laughs" was still).
# 5: the book a frame (a hollow square) and the pillow a diagonal cross. 6: the pillow the upright cross again (the
# thin diagonal cross, 12 pixels at 6 x 6, made the objects harder to count: its count errors rose from 3 to 10 of 18
# over three seeds). The book was a disc, 4 of the 36 pixels of the video demo's 6 x 6 objects from the cup's square
# (its cut corners) and from the bottle's ring (its hole): book / cup was the most frequent object error of renderer
# 4's models. The frame is at least 16 pixels from every other shape.
RENDERER_VERSION = 6
# Below 6 x 6 pixels the 8 shapes are not all different: at 4 x 4 the disc, the diamond and the cross are the same
# mask (book, box and pillow looked alike in the 32 x 32 video demo before renderer version 2).
MIN_OBJECT_SIZE = 6
# How far above the top of the head the waving hand goes, in units of the person's height (the highest point of any
# pose: the person is drawn no taller than keeps it inside the frame).
RAISED_HAND = 0.15

ROOM_COLORS = np.array(
    [[200, 180, 150], [150, 170, 210], [210, 230, 230], [120, 120, 120], [220, 200, 120], [110, 90, 80], [170, 210, 150], [200, 150, 190]],
    dtype=np.uint8,
)
OBJECT_COLORS = {
    "red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 40), "yellow": (240, 220, 20),
    "black": (15, 15, 15), "white": (250, 250, 250), "brown": (130, 80, 30), "pink": (250, 130, 200),
}


def _shape_mask(kind: int, size: int) -> np.ndarray:
    """A `size x size` boolean mask of object shape `kind` (0..7)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    c = (size - 1) / 2
    dx, dy = x - c, y - c
    r = size / 2
    border = max(1, round(size / 6))
    masks = [
        np.ones((size, size), bool),  # cup: square
        ~((np.abs(dx) < c + 0.5 - border) & (np.abs(dy) < c + 0.5 - border)),  # book: frame (a hollow square)
        (y >= c - r) & (np.abs(dx) <= (y + 1) / 2),  # phone: triangle
        np.abs(dx) + np.abs(dy) <= r,  # box: diamond
        np.abs(dy) <= r / 3,  # towel: horizontal bar
        np.abs(dx) <= r / 3,  # laptop: vertical pillar
        (dx**2 + dy**2 <= r**2) & (dx**2 + dy**2 >= (r / 2) ** 2),  # bottle: ring
        (np.abs(dx) <= r / 4) | (np.abs(dy) <= r / 4),  # pillow: cross
    ]
    return masks[kind]


def _person_pose(action: str, t: float) -> tuple[float, float, float, float]:
    """`(x offset, y offset, hand x, hand y)` of the person for `action` at phase `t` in [0, 1) of its segment,
    in units of the person's height."""
    wave = np.sin(2 * np.pi * t * 2)
    if action == "walks":
        return -0.6 + 1.2 * t, 0.0, 0.25, 0.55
    if action == "sits":
        return 0.0, 0.35 * min(1.0, 2 * t), 0.25, 0.55
    if action == "eats":
        return 0.0, 0.0, 0.15, 0.55 - 0.4 * abs(np.sin(2 * np.pi * t * 3))
    if action == "drinks":
        return 0.0, 0.0, 0.1, 0.55 - 0.45 * min(1.0, 3 * t) * (t < 0.66) - 0.45 * (t >= 0.66)
    if action == "laughs":
        return 0.0, 0.2 * abs(np.sin(2 * np.pi * t * 4)), 0.25, 0.55
    if action == "sneezes":
        return 0.0, 0.15 * (0.45 < t < 0.6), 0.25, 0.55
    if action == "dances":
        return 0.35 * wave, 0.05 * abs(wave), 0.3 - 0.2 * wave, 0.2
    if action == "waves":
        return 0.0, 0.0, 0.25 + 0.2 * wave, -RAISED_HAND
    raise ValueError(f"unknown action {action!r}")


def render_video_frames(
    facts: Mapping[str, Any], num_regions: int, frames_per_action: int = 16, height: int = 96, width: int = 128, seed: int = 0
) -> np.ndarray:
    """The frames `[num_actions * frames_per_action, height, width, 3]` uint8 of one synthetic video.

    `facts`: one entry of the ground truth's `videos` (place, object, color, count, actions, object_regions).
    """
    rng = np.random.default_rng(seed)
    place = FACT_VALUES["place"].index(facts["place"])
    kind = FACT_VALUES["object"].index(facts["object"])
    color = np.array(OBJECT_COLORS[facts["color"]], dtype=np.uint8)
    background = np.empty((height, width, 3), dtype=np.uint8)
    background[:] = ROOM_COLORS[place]
    y, x = np.mgrid[0:height, 0:width]
    period = 6 + 2 * (place % 4)
    stripes = ((x if place < 4 else y) // period) % 2 == 0
    background[stripes] = (background[stripes].astype(np.int16) * 3 // 4).astype(np.uint8)
    table_top = int(height * 0.7)
    background[table_top:] = (90, 60, 40)
    if width // num_regions < MIN_OBJECT_SIZE:
        raise ValueError(
            f"a frame {width} pixels wide cannot show {num_regions} object regions with objects of at least "
            f"{MIN_OBJECT_SIZE} pixels (the size at which the 8 shapes differ): use a width of at least {MIN_OBJECT_SIZE * num_regions}"
        )
    size = max(MIN_OBJECT_SIZE, min(width // (2 * num_regions), height // 6))
    slot = width / num_regions
    for region in facts["object_regions"]:
        left = int(slot * region + (slot - size) / 2)
        top = table_top - size
        mask = _shape_mask(kind, size)
        background[top : top + size, left : left + size][mask] = color

    # the person stands behind the objects, feet 2 pixels above them; no taller than leaves room above the head for
    # the waving hand
    feet = table_top - size - 2
    person_height = min(int(height * 0.45), int(feet / (1 + RAISED_HAND)))
    body_width = max(3, person_height // 4)
    head = max(3, person_height // 4)
    hand = max(2, person_height // 8)
    frames = np.empty((len(facts["actions"]) * frames_per_action, height, width, 3), dtype=np.uint8)
    for segment, action in enumerate(facts["actions"]):
        for step in range(frames_per_action):
            frame = background.copy()
            dx, dy, hx, hy = _person_pose(action, step / frames_per_action)
            cx = int(width / 2 + dx * person_height)
            top = int(feet - person_height + dy * person_height)
            body_top = top + head
            frame[max(0, top) : top + head, max(0, cx - head // 2) : cx + head // 2] = (240, 200, 160)  # head
            frame[max(0, body_top) : body_top + person_height - head, max(0, cx - body_width // 2) : cx + body_width // 2] = (60, 60, 160)
            hand_x = int(cx + hx * person_height)
            hand_y = int(top + hy * person_height)
            frame[max(0, hand_y) : hand_y + hand, max(0, hand_x) : hand_x + hand] = (240, 200, 160)
            noise = rng.integers(-6, 7, size=(height, width, 1), dtype=np.int16)
            frames[segment * frames_per_action + step] = np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return frames


def write_video(path: str, frames: np.ndarray, fps: int = 8, codec: str = "libx264") -> None:
    """Encode `[T, H, W, 3]` uint8 frames into a video file with PyAV (written under a temporary name, then
    renamed). H.264 needs an even width and height (yuv420p).

    The same frames give the same file in every process and every run: x264's macroblock-tree rate control is off
    (with it, libx264 encoded one of the demo's videos two ways in 30 tries in one process, even on one thread), and
    each frame is converted to the encoder's YUV on one swscale thread (left to the encoder, on swscale's automatic
    threads, 21 to 244 of the video demo's 1,792 files differed between two processes). Renderer 2 did both, which
    changed some videos' features, and so the trained model, from run to run (`benchmarks/check_render_determinism.py`
    measures it; docs/video.md)."""
    import av

    from video_processing_vgd import swscale_threads

    height, width = frames.shape[1:3]
    tmp = path + ".part"
    with av.open(tmp, "w", format="mp4" if path.endswith(".mp4") else None) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "veryfast", "crf": "20", "x264-params": "no-mbtree=1"}
        one_thread = swscale_threads(1)
        for frame in frames:
            yuv = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format=stream.pix_fmt, **one_thread)
            for packet in stream.encode(yuv):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)


def render_synthetic_videos(
    data_dir: str,
    frames_per_action: int = 16,
    height: int = 96,
    width: int = 128,
    fps: int = 8,
    max_videos: Optional[int] = None,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Render every video of a generated synthetic folder (see the module docstring).

    Returns `{"video_dir", "test_video_dir", "rendered", "existing", "seconds"}`; files already there are kept
    unless `overwrite`. `progress`: a tqdm bar (videos/s, ETA).
    """
    if height % 2 or width % 2:
        raise ValueError(f"H.264 needs an even frame size, got {width}x{height}")
    ground_truth = load_ground_truth(data_dir)
    num_regions = next(shape[1] for shape in ground_truth["streams"].values() if len(shape) == 3)  # the [F, P, D] stream
    folders = {"train": os.path.join(data_dir, VIDEO_DIR), "validation": os.path.join(data_dir, VIDEO_DIR), "test": os.path.join(data_dir, TEST_VIDEO_DIR)}
    for folder in set(folders.values()):
        os.makedirs(folder, exist_ok=True)
    start = time.perf_counter()
    rendered = existing = 0
    items = sorted(ground_truth["videos"].items())
    if max_videos is not None:
        items = items[:max_videos]
    from tqdm.auto import tqdm

    for index, (image_id, facts) in enumerate(tqdm(items, desc="rendering .mp4", unit="video", disable=not progress, dynamic_ncols=True)):
        path = os.path.join(folders[facts["split"]], image_id + ".mp4")
        if os.path.exists(path) and not overwrite:
            existing += 1
            continue
        frames = render_video_frames(facts, num_regions, frames_per_action, height, width, seed=index)
        write_video(path, frames, fps=fps)
        rendered += 1
    return {
        "video_dir": folders["train"],
        "test_video_dir": folders["test"],
        "rendered": rendered,
        "existing": existing,
        "seconds": time.perf_counter() - start,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m avsd_dataset.synthetic_video", description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", metavar="DATA_DIR", help="a folder written by avsd_dataset.synthetic.generate_synthetic_avsd")
    parser.add_argument("--frames_per_action", type=int, default=16)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--max_videos", type=int, default=None)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    info = render_synthetic_videos(
        args.data_dir, args.frames_per_action, args.height, args.width, args.fps, args.max_videos, args.overwrite, progress=True
    )
    print(
        f"synthetic_video: {info['rendered']} rendered, {info['existing']} already there, {info['seconds']:.1f} s -> "
        f"{info['video_dir']}, {info['test_video_dir']}"
    )


if __name__ == "__main__":
    main()
