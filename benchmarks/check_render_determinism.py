"""Do the synthetic videos come out the same in every process? Renders the same videos in two fresh processes, with
`write_video` (renderer 3: x264 without its macroblock tree, each frame converted to YUV on one swscale thread) and,
as the baseline, the way of renderer 2 (macroblock tree on, the conversion left to the encoder on swscale's automatic
threads), and counts the files that differ.

    python benchmarks/check_render_determinism.py outputs/video-demo-cache/data-<hash> [--max_videos 1792]

A DATA_DIR without `synthetic_ground_truth.json` gets the video demo's synthetic task (1500 / 100 / 192 dialogues)
generated there first. Prints one line per way of encoding: files differing between the two processes, and for
those the largest difference of the decoded frames (0-255). Each worker is a new interpreter, as a user's next run is.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WAYS = ("write_video", "renderer_2")


def encode(path: str, frames: np.ndarray, fps: int, way: str) -> None:
    """Write `frames` [T, H, W, 3] uint8 to the .mp4 `path`: with `write_video`, or as renderer 2 wrote them (the same
    codec, preset and crf, the macroblock tree on, the YUV conversion left to the encoder)."""
    import av

    from avsd_dataset.synthetic_video import write_video

    if way == "write_video":
        write_video(path, frames, fps=fps)
        return
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "20"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def worker(data_dir: str, way: str, max_videos: int, out_dir: str, height: int, width: int, fps: int) -> None:
    """Render the first `max_videos` videos of `data_dir` (as `render_synthetic_videos` draws them) into `out_dir`,
    encoded `way`."""
    from avsd_dataset.synthetic import load_ground_truth
    from avsd_dataset.synthetic_video import render_video_frames

    ground_truth = load_ground_truth(data_dir)
    num_regions = next(shape[1] for shape in ground_truth["streams"].values() if len(shape) == 3)
    os.makedirs(out_dir, exist_ok=True)
    for index, (video_id, facts) in enumerate(sorted(ground_truth["videos"].items())[:max_videos]):
        frames = render_video_frames(facts, num_regions, 16, height, width, seed=index)
        encode(os.path.join(out_dir, video_id + ".mp4"), frames, fps, way)


def main(argv=None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir")
    parser.add_argument("--max_videos", type=int, default=1792)
    parser.add_argument("--height", type=int, default=32)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS), help="Ways of encoding to check (default: both).")
    parser.add_argument("--work_dir", default=None, help="Where the two processes write their files (default: DATA_DIR/render-check).")
    parser.add_argument("--worker", choices=WAYS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out_dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.data_dir, args.worker, args.max_videos, args.out_dir, args.height, args.width, args.fps)
        return {}

    from avsd_dataset.synthetic import generate_synthetic_avsd
    from video_processing_vgd import decode_video

    if not os.path.exists(os.path.join(args.data_dir, "synthetic_ground_truth.json")):
        generate_synthetic_avsd(args.data_dir, num_train_dialogs=1500, num_valid_dialogs=100, num_test_dialogs=192, seed=0)
    work_dir = args.work_dir or os.path.join(args.data_dir, "render-check")
    results = {}
    for way in args.ways:
        runs, seconds = [], []
        for run in range(2):
            out_dir = os.path.join(work_dir, f"{way}-{run}")
            start = time.perf_counter()
            subprocess.run([sys.executable, os.path.abspath(__file__), args.data_dir, "--worker", way, "--out_dir", out_dir,
                            "--max_videos", str(args.max_videos), "--height", str(args.height), "--width", str(args.width),
                            "--fps", str(args.fps)], check=True)
            seconds.append(time.perf_counter() - start)
            runs.append(out_dir)
        names = sorted(os.listdir(runs[0]))
        differing, largest = 0, 0
        for name in names:
            first, second = (os.path.join(run, name) for run in runs)
            if not filecmp.cmp(first, second, shallow=False):
                differing += 1
                a, b = decode_video(first)[0], decode_video(second)[0]
                largest = max(largest, int(np.abs(a.astype(int) - b.astype(int)).max()) if a.shape == b.shape else 255)
        results[way] = {"videos": len(names), "differing": differing, "largest_pixel_difference": largest, "seconds": min(seconds)}
    print(f"\n{'way':<18} {'videos':>7} {'differing':>10} {'largest decoded difference':>27} {'render s':>9}")
    for way, row in results.items():
        print(f"{way:<18} {row['videos']:>7} {row['differing']:>10} {row['largest_pixel_difference']:>27} {row['seconds']:>9.1f}")
    return results


if __name__ == "__main__":
    main()
