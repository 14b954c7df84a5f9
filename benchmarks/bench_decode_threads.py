"""Decoding speed with one swscale thread against swscale's automatic threads, in one process.

```
python benchmarks/bench_decode_threads.py                                   # 32 x 32 videos -> 24 x 24 (the video demo until 2026-12-06)
python benchmarks/bench_decode_threads.py --height 270 --width 480 --shortest_edge 128 --videos 16   # Charades-like
```

`decode_video(path, shortest_edge, scale_threads=T)` decodes every frame and resizes / converts it to RGB with swscale on
T threads (0: swscale's automatic choice, one per CPU). The videos are rendered into a temporary folder first (not
timed); then the two settings decode all of them in alternating rounds (`--rounds`, the order swapped each round),
so both see the same machine. Prints seconds per round for each, the ratio auto / one thread (above 1: one thread is
faster) and whether the frames are the same.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--height", type=int, default=32)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--shortest_edge", type=int, default=24, help="Resize while decoding (24: the video demo's size when this was measured; today it decodes its 32 x 32 frames as they are).")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)

    from avsd_dataset.synthetic_video import write_video
    from video_processing_vgd import decode_video

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for index in range(args.videos):
            base = rng.integers(0, 256, (1, args.height, args.width, 3))
            motion = rng.integers(-20, 21, (args.frames, 1, 1, 3)).cumsum(axis=0)
            frames = np.clip(base + motion, 0, 255).astype(np.uint8)
            paths.append(os.path.join(folder, f"{index:05d}.mp4"))
            write_video(paths[-1], frames)
        seconds: dict[int, list[float]] = {1: [], 0: []}
        outputs: dict[int, list[np.ndarray]] = {}
        for round_index in range(args.rounds):
            for threads in ((1, 0) if round_index % 2 == 0 else (0, 1)):
                start = time.perf_counter()
                decoded = [decode_video(path, shortest_edge=args.shortest_edge, scale_threads=threads)[0] for path in paths]
                seconds[threads].append(time.perf_counter() - start)
                outputs.setdefault(threads, decoded)
    same = all(np.array_equal(a, b) for a, b in zip(outputs[1], outputs[0]))
    one, auto = float(np.median(seconds[1])), float(np.median(seconds[0]))
    print(f"{args.videos} videos of {args.frames} frames, {args.width} x {args.height} -> shortest edge {args.shortest_edge}, "
          f"median of {args.rounds} alternating rounds, CPU threads available: {os.cpu_count()}")
    print(f"one swscale thread   {one:7.2f} s  ({1000 * one / args.videos:.1f} ms per video)")
    print(f"automatic threads    {auto:7.2f} s  ({1000 * auto / args.videos:.1f} ms per video)")
    print(f"ratio auto / one     {auto / one:7.2f}x   same frames: {same}")
    return {"one_thread_s": one, "auto_threads_s": auto, "ratio": auto / one, "same_frames": same}


if __name__ == "__main__":
    main()
