"""Feature-extraction benchmark: decode-only, backbone-only and end-to-end throughput, in one run.

```
python benchmarks/bench_extraction.py                      # CPU: r3d_18 (random init), 270 x 480 H.264 videos
python benchmarks/bench_extraction.py --device cuda --batch_size 64 --videos 64 --num_workers 8
```

What runs (the same code as `python -m avsd_dataset.extract_features`):
1. `--videos` synthetic videos (`avsd_dataset.synthetic_video`, `--frames` frames of `--height` x `--width`,
   H.264) are rendered into a temporary folder (not timed).
2. **decode-only**: the extraction's DataLoader (`--num_workers` decoding processes; PyAV decoding, resizing,
   cropping, normalising, clipping) is drained without running the backbone.
3. **backbone-only**: the backbone runs on the same clips, already in memory, in batches of `--batch_size`.
4. **end-to-end**: decoding in the workers overlapped with the backbone in this process, plus writing the
   `.npy` files (atomically), exactly as the command does.

The figure to read is the ratio `end-to-end / min(decode-only, backbone-only)` (1.0 = the slower stage
completely hides the other): all three run in one process, one after the other, so they see the same machine.
The projection for AVSD's 9,848 Charades videos assumes 30 s per video at 24 frames/s (45 clips of 16 frames).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np
import torch


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

CHARADES_VIDEOS = 9848  # the Charades videos (AVSD's dialogues are about them)
CHARADES_CLIPS_PER_VIDEO = 30 * 24 // 16  # ~30 s at 24 frames/s, clips of 16 frames


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def render_benchmark_videos(folder: str, num_videos: int, frames: int, height: int, width: int) -> list[tuple[str, str]]:
    from avsd_dataset.synthetic import generate_synthetic_avsd
    from avsd_dataset.synthetic_video import render_synthetic_videos

    data_dir = os.path.join(folder, "data")
    generate_synthetic_avsd(data_dir, num_train_dialogs=num_videos, num_valid_dialogs=0, num_test_dialogs=0)
    render_synthetic_videos(data_dir, frames_per_action=max(1, frames // 4), height=height, width=width, fps=24)
    video_dir = os.path.join(data_dir, "videos")
    return [(name[:-4], os.path.join(video_dir, name)) for name in sorted(os.listdir(video_dir))]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="r3d_18")
    parser.add_argument("--crop_size", type=int, default=None, help="backbone input size (default: the backbone's, 112 for r3d_18)")
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--frames", type=int, default=64, help="frames per video (4 actions)")
    parser.add_argument("--height", type=int, default=270)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--batch_size", type=int, default=8, help="clips per backbone call")
    parser.add_argument("--num_workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the backbone (CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None, help="autocast dtype (default: bf16 on cuda, fp32 on cpu)")
    parser.add_argument("--output_json", default=None)
    args = parser.parse_args(argv)

    from avsd_dataset.extract_features import VideoClipsDataset, batched_clip_features, make_loader, save_features_atomic
    from video_backbone_vgd import VGDVideoBackbone, resolve_video_backbone, video_processor_settings
    from video_processing_vgd import VGDVideoProcessor

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"float32": None, "bfloat16": torch.bfloat16, None: torch.bfloat16 if device.type == "cuda" else None}[args.dtype]
    spec = resolve_video_backbone(args.backbone, pretrained=False, crop_size=args.crop_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        backbone = VGDVideoBackbone(spec).to(device)
    processor = VGDVideoProcessor(**video_processor_settings(spec), decoder_threads=1 if args.num_workers > 0 else 0)
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory() as folder:
        videos = render_benchmark_videos(folder, args.videos, args.frames, args.height, args.width)
        dataset = VideoClipsDataset(videos, processor)

        def sync():
            if device.type == "cuda":
                torch.cuda.synchronize()

        # 1. decode-only
        start = time.perf_counter()
        items = [item for item in make_loader(dataset, args.num_workers, pin_memory=device.type == "cuda")]
        decode_seconds = time.perf_counter() - start
        failed = [item for item in items if "error" in item]
        if failed:
            raise RuntimeError(f"benchmark videos failed to decode: {failed[0]['error']}")
        clips = torch.cat([item["clips"] for item in items])
        num_clips = len(clips)

        # 2. backbone-only (one warm-up batch first)
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            backbone(clips[: args.batch_size].to(device))
        sync()
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            for offset in range(0, num_clips, args.batch_size):
                backbone(clips[offset : offset + args.batch_size].to(device, non_blocking=True)).float().cpu()
        sync()
        backbone_seconds = time.perf_counter() - start
        del clips, items

        # 3. end-to-end (decode in workers || backbone here, then atomic .npy writes)
        out_dir = os.path.join(folder, "features")
        os.makedirs(out_dir)
        start = time.perf_counter()
        loader = make_loader(dataset, args.num_workers, pin_memory=device.type == "cuda")
        written = 0
        for item, features in batched_clip_features(backbone, iter(loader), args.batch_size, device, dtype):
            save_features_atomic(os.path.join(out_dir, item["video_id"] + ".npy"), np.ascontiguousarray(features, dtype=np.float32))
            written += 1
        sync()
        end_to_end_seconds = time.perf_counter() - start
    load_after = os.getloadavg()

    rates = {
        "decode-only": num_clips / decode_seconds,
        "backbone-only": num_clips / backbone_seconds,
        "end-to-end": num_clips / end_to_end_seconds,
    }
    slower = min(rates["decode-only"], rates["backbone-only"])
    ratio = rates["end-to-end"] / slower
    clips_per_video = num_clips / len(videos)
    projected_hours = CHARADES_VIDEOS * CHARADES_CLIPS_PER_VIDEO / rates["end-to-end"] / 3600
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{_cpu_name()} x{os.cpu_count()}"
    lines = [
        f"device {device.type} | {card} | torch {torch.__version__} | threads {args.threads} | decoding workers {args.num_workers}",
        f"load average before / after: {load_before[0]:.1f} / {load_after[0]:.1f}",
        f"backbone {spec['name']} (random init) {spec['clip_length']} x {spec['crop_size']} x {spec['crop_size']} clips, "
        f"batch {args.batch_size}, {'bf16' if dtype is torch.bfloat16 else 'fp32'}; {len(videos)} videos of {args.frames} frames "
        f"{args.width} x {args.height} H.264 = {num_clips} clips ({clips_per_video:.1f} per video)",
        f"{'stage':<16}{'clips/s':>10}{'videos/s':>10}{'seconds':>10}",
        "-" * 46,
    ]
    for stage, seconds in (("decode-only", decode_seconds), ("backbone-only", backbone_seconds), ("end-to-end", end_to_end_seconds)):
        lines.append(f"{stage:<16}{rates[stage]:>10.2f}{len(videos) / seconds:>10.3f}{seconds:>10.1f}")
    lines += [
        "-" * 46,
        f"end-to-end / slower stage: {ratio:.2f} (goal >= 0.8)",
        f"projected AVSD (Charades) extraction, {CHARADES_VIDEOS} videos x {CHARADES_CLIPS_PER_VIDEO} clips, "
        f"one process at this rate: {projected_hours:,.1f} h",
    ]
    print("\n".join(lines))
    result = {
        "device": card, "backbone": spec["name"], "num_videos": len(videos), "num_clips": num_clips,
        "seconds": {"decode": decode_seconds, "backbone": backbone_seconds, "end_to_end": end_to_end_seconds},
        "clips_per_second": rates, "ratio_end_to_end_to_slower": ratio, "projected_charades_hours": projected_hours,
        "load_average": [load_before[0], load_after[0]], "threads": args.threads, "num_workers": args.num_workers,
    }
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
