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
"""Extract spatio-temporal video features for a folder of videos (the paper's section 4.1).

```
python -m avsd_dataset.extract_features VIDEO_DIR FEATURE_DIR --backbone r3d_18 [--stream NAME] [--split test]
accelerate launch -m avsd_dataset.extract_features VIDEO_DIR FEATURE_DIR --backbone r3d_18     # several GPUs / machines
```

Every video file `VIDEO_DIR/<video id>.<ext>` (Charades layout: one flat folder) becomes one `[F, P, D]` float32
array `FEATURE_DIR/<stream>/<video id>.npy` (`<stream>_testset/` with `--split test`), exactly where
`avsd_dataset.VideoFeatureStore(FEATURE_DIR, streams=[stream], split=...)` reads it: F clips of `--clip_length`
frames (16, without overlap), P the cells of the backbone's last feature map, D its channels.

- Decoding (PyAV) and pixel preprocessing run in DataLoader worker processes while the backbone runs on the
  clips of earlier videos; clips of several videos are batched (`--batch_size` clips); bf16 autocast on GPUs.
- Under `accelerate launch` each process takes every N-th video of the list (N processes, any number of GPUs or
  machines sharing FEATURE_DIR).
- Each file is written to a temporary name and renamed, so a killed run leaves no partial file; a rerun skips
  the videos already done (and retries the failed ones).
- A video that cannot be decoded is logged with its reason to `<stream dir>/extract_failures.jsonl` and skipped;
  a video shorter than one clip is padded to one clip (by repeating its last frame) and counted; a variable frame
  rate is resampled to the average rate and counted; files that are not videos are listed and ignored.
- The stream folder records the backbone in `backbone.json`; a folder written by another backbone (or holding
  features that this command did not write) is refused with a message naming both.
- A progress bar shows videos/s and the ETA; a summary line counts done / skipped / failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from typing import Any, Iterable, Iterator

import numpy as np
import torch


logger = logging.getLogger("avsd_dataset.extract_features")

BACKBONE_FILE = "backbone.json"
FAILURES_FILE = "extract_failures.jsonl"
TEST_DIR_SUFFIX = "_testset"


def _repo_modules():
    """The video processor and backbone modules (top-level files of the repository / installed package)."""
    from video_backbone_vgd import VGDVideoBackbone, resolve_video_backbone, same_backbone, video_processor_settings
    from video_processing_vgd import VIDEO_FILE_EXTENSIONS, VGDVideoProcessor

    return VGDVideoBackbone, resolve_video_backbone, same_backbone, video_processor_settings, VIDEO_FILE_EXTENSIONS, VGDVideoProcessor


# ---------------------------------------------------------------------------------------------------- listing


def list_videos(video_dir: str, extensions: Iterable[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """`([(video id, path), ...] sorted by id, [names of files that are not videos])` of a flat folder.

    Hidden files and sub-folders are ignored. Two videos with the same id (e.g. `a.mp4` and `a.webm`) are an error.
    """
    if not os.path.isdir(video_dir):
        raise FileNotFoundError(f"VIDEO_DIR {video_dir!r} is not a folder")
    extensions = tuple(ext.lower() for ext in extensions)
    videos: dict[str, str] = {}
    others = []
    with os.scandir(video_dir) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith(".") or not entry.is_file():
                continue
            stem, ext = os.path.splitext(entry.name)
            if ext.lower() not in extensions:
                others.append(entry.name)
                continue
            if stem in videos:
                raise ValueError(
                    f"two videos have the id {stem!r} in {video_dir}: {os.path.basename(videos[stem])} and "
                    f"{entry.name}; a feature file is named by the id, so keep one of them"
                )
            videos[stem] = entry.path
    return sorted(videos.items()), others


def stream_dir(feature_dir: str, stream: str, split: str) -> str:
    """`<feature_dir>/<stream>` (`<stream>_testset` for the test split), as `VideoFeatureStore` reads it."""
    return os.path.join(feature_dir, stream + (TEST_DIR_SUFFIX if split == "test" else ""))


def check_or_record_backbone(directory: str, spec: dict[str, Any], same_backbone, write: bool) -> None:
    """Refuse a folder written by another backbone; record the backbone in a new folder (`write=True`)."""
    path = os.path.join(directory, BACKBONE_FILE)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            recorded = json.load(f)
        if not same_backbone(recorded, spec):
            keys = ("name", "weights", "clip_length", "fps", "resize_size", "crop_size", "layer", "random_init_seed", "rgb_difference")
            differences = ", ".join(f"{key}: {recorded.get(key)!r} there, {spec.get(key)!r} now" for key in keys if recorded.get(key) != spec.get(key))
            if any(recorded.get(key) != spec.get(key) for key in ("feature_mean", "feature_std")):
                differences = ", ".join(filter(None, [differences, "feature standardisation (feature_mean / feature_std) differs"]))
            raise ValueError(
                f"{directory} holds features of another backbone ({differences}); "
                "choose another --stream (or FEATURE_DIR), or the same backbone settings"
            )
        return
    existing = [name for name in os.listdir(directory) if name.endswith(".npy")] if os.path.isdir(directory) else []
    if existing:
        raise ValueError(
            f"{directory} already holds {len(existing)} feature file(s) (e.g. {existing[0]}) that this command did "
            f"not write (no {BACKBONE_FILE}): they may come from another network; choose another --stream"
        )
    if write:
        os.makedirs(directory, exist_ok=True)
        _atomic_write_bytes(path, (json.dumps(spec, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def is_done(path: str, num_regions: int, feature_dim: int) -> bool:
    """Whether `path` holds a complete `[F, P, D]` array of this backbone (header check only)."""
    from .features import read_npy_header

    try:
        shape, _ = read_npy_header(path)
    except (OSError, ValueError):
        return False
    return len(shape) == 3 and shape[0] >= 1 and shape[1] == num_regions and shape[2] == feature_dim


def _umask_mode() -> int:
    """The mode an ordinary `open()` gives a new file (0644 under the usual umask); mkstemp's files are 0600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _atomic_write_bytes(path: str, data: bytes) -> None:
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_features_atomic(path: str, features: np.ndarray) -> None:
    """`np.save` to a temporary file in the same folder, then rename: readers never see a partial file."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, features)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except OSError as error:
        if os.path.exists(tmp):
            os.remove(tmp)
        # e.g. a full disk: name the file and the folder (numpy's own message names neither)
        raise OSError(error.errno, f"could not write the features of {os.path.basename(path)} into {directory}: {error.strerror or error}", path) from error
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def remove_stale_temporary_files(directory: str) -> int:
    """Delete the temporary files a killed run left behind; returns how many."""
    removed = 0
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            if name.startswith(".") and name.endswith(".tmp"):
                os.remove(os.path.join(directory, name))
                removed += 1
    return removed


# ---------------------------------------------------------------------------------------------------- standardisation


def fit_feature_statistics(directory: str, video_ids: Iterable[str] | None = None, min_std: float = 1e-5) -> dict[str, Any]:
    """Per-channel mean and std of the `[F, P, D]` features of a stream folder (every clip and region of the
    listed videos, default all), computed in float64: `{"feature_mean": [D], "feature_std": [D], "count": rows}`.

    A random-init backbone's ReLU features are far from unit scale (the demo's r3d_18 layer3: mean 0.19, std 0.11
    per channel, 73% of their energy a constant vector); the model's `Linear + ReLU` video projection learns from
    them much better once they are standardised with these (see `with_feature_standardization`)."""
    names = sorted(name for name in os.listdir(directory) if name.endswith(".npy"))
    if video_ids is not None:
        wanted = set(video_ids)
        names = [name for name in names if name[:-4] in wanted]
    if not names:
        raise ValueError(f"no feature files to fit the standardisation on in {directory}")
    total = total_sq = None
    count = 0
    for name in names:
        array = np.load(os.path.join(directory, name)).astype(np.float64)
        rows = array.reshape(-1, array.shape[-1])
        total = rows.sum(0) if total is None else total + rows.sum(0)
        total_sq = (rows**2).sum(0) if total_sq is None else total_sq + (rows**2).sum(0)
        count += len(rows)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    std = np.maximum(std, min_std)
    return {"feature_mean": [float(v) for v in mean], "feature_std": [float(v) for v in std], "count": int(count), "videos": len(names)}


def standardize_features(features: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """`(features - feature_mean) / feature_std` per channel in float32, as `VGDVideoBackbone.standardize` does."""
    mean = np.asarray(spec["feature_mean"], dtype=np.float32)
    std = np.asarray(spec["feature_std"], dtype=np.float32)
    return np.ascontiguousarray((features.astype(np.float32) - mean) / std, dtype=np.float32)


def standardize_stream(raw_dir: str, out_dir: str, spec: dict[str, Any]) -> dict[str, int]:
    """Write the standardised copy of a raw stream folder (extracted without statistics) into `out_dir`, with
    `backbone.json` = `spec` (the raw backbone's spec plus `feature_mean` / `feature_std`): the same files an
    extraction with that spec would write (up to float rounding), without running the backbone again.
    Files already there are skipped (a rerun after a kill resumes)."""
    from video_backbone_vgd import same_backbone

    with open(os.path.join(raw_dir, BACKBONE_FILE), encoding="utf-8") as f:
        raw_spec = json.load(f)
    if raw_spec.get("feature_mean") is not None:
        raise ValueError(f"{raw_dir} holds features that are already standardised")
    plain = {key: value for key, value in spec.items() if key not in ("feature_mean", "feature_std", "feature_standardization_fitted_on")}
    if not same_backbone(raw_spec, plain):
        raise ValueError(f"{raw_dir} was written by another backbone than the one to standardise")
    check_or_record_backbone(out_dir, spec, same_backbone, write=True)
    remove_stale_temporary_files(out_dir)
    counts = Counter()
    for name in sorted(os.listdir(raw_dir)):
        if not name.endswith(".npy"):
            continue
        target = os.path.join(out_dir, name)
        if is_done(target, spec["num_regions"], spec["feature_dim"]):
            counts["skipped"] += 1
            continue
        save_features_atomic(target, standardize_features(np.load(os.path.join(raw_dir, name)), spec))
        counts["done"] += 1
    return {"done": counts["done"], "skipped": counts["skipped"]}


# ---------------------------------------------------------------------------------------------------- decoding


class VideoClipsDataset(torch.utils.data.Dataset):
    """One item per video: its clips from [`VGDVideoProcessor`], or the reason it could not be decoded.

    Item: `{"video_id", "path", "clips": [F, T, 3, H, W] float32, "num_frames": int, "variable_frame_rate": bool}` or
    `{"video_id", "path", "error": str}`.
    """

    def __init__(self, videos: list[tuple[str, str]], video_processor):
        self.videos = videos
        self.video_processor = video_processor

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> dict[str, Any]:
        video_id, path = self.videos[index]
        try:
            output = self.video_processor(path, return_tensors="pt", return_metadata=True)
        except (OSError, ValueError, RuntimeError) as error:  # decoding problems: logged, never fatal
            reason = getattr(error, "reason", None) or f"{type(error).__name__}: {error}"
            return {"video_id": video_id, "path": path, "error": reason}
        metadata = output["video_metadata"][0]
        return {
            "video_id": video_id,
            "path": path,
            "clips": output["pixel_values_videos"][0],
            "num_frames": int(output["video_num_frames"][0]),
            "variable_frame_rate": metadata.video_backend == "pyav+vfr",
            # native-rate frames (total_num_frames counts them after resampling to --fps)
            "decoded_num_frames": int(getattr(metadata, "decoded_num_frames", None) or metadata.total_num_frames or 0),
            "declared_num_frames": int(getattr(metadata, "declared_num_frames", 0) or 0),
        }


def _first(items):
    return items


def _worker_init(_):
    torch.set_num_threads(1)


def make_loader(dataset: VideoClipsDataset, num_workers: int, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """Decode videos in `num_workers` processes (0: in this process), a few videos ahead of the backbone."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        collate_fn=_first,
        num_workers=num_workers,
        prefetch_factor=4 if num_workers > 0 else None,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        pin_memory=pin_memory,
    )


def batched_clip_features(
    backbone, items: Iterator[dict[str, Any]], batch_size: int, device: torch.device, autocast_dtype: torch.dtype | None
) -> Iterator[tuple[dict[str, Any], np.ndarray | None]]:
    """Run the backbone on the clips of several videos at a time; yield `(item, [F, P, D] float32)` per video
    (`(item, None)` for an item that failed to decode), in input order."""
    pending: list[dict[str, Any]] = []
    pending_clips = 0

    def flush():
        clips = torch.cat([item["clips"] for item in pending]).to(device, non_blocking=True)
        outputs = []
        with torch.inference_mode(), torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            for start in range(0, len(clips), batch_size):
                outputs.append(backbone(clips[start : start + batch_size]).float())
        features = torch.cat(outputs).cpu().numpy()
        offset = 0
        for item in pending:
            count = len(item["clips"])
            yield item, features[offset : offset + count]
            offset += count

    for item in items:
        if "error" in item:
            if pending:  # keep the input order
                yield from flush()
                pending, pending_clips = [], 0
            yield item, None
            continue
        pending.append(item)
        pending_clips += len(item["clips"])
        if pending_clips >= batch_size:
            yield from flush()
            pending, pending_clips = [], 0
    if pending:
        yield from flush()


# ---------------------------------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m avsd_dataset.extract_features",
        description="Extract [F, P, D] spatio-temporal features for every video of a folder (one .npy per video).",
    )
    parser.add_argument("video_dir", metavar="VIDEO_DIR", help="folder of video files (<video id>.mp4, .webm, ...)")
    parser.add_argument("feature_dir", metavar="FEATURE_DIR", help="feature root: writes FEATURE_DIR/<stream>/<video id>.npy")
    parser.add_argument("--backbone", required=True, help="torchvision video model (r3d_18, r2plus1d_18, mc3_18, s3d, mvit_v2_s, swin3d_t, ...) or a transformers video model id / folder (VideoMAE, ...)")
    parser.add_argument("--stream", default=None, help="feature folder name (default: the backbone's name)")
    parser.add_argument("--split", default="train", help="'test' writes to <stream>_testset/ (AVSD layout); anything else to <stream>/")
    parser.add_argument("--random_init", action="store_true", help="random backbone weights: nothing is downloaded (tests, offline runs)")
    parser.add_argument("--weights", default=None, help="torchvision weights enum member (default: the model's DEFAULT, e.g. KINETICS400_V1)")
    parser.add_argument("--clip_length", type=int, default=None, help="frames per clip, one feature map each (default 16)")
    parser.add_argument("--fps", type=float, default=None, help="resample videos to this frame rate first (default: native rate)")
    parser.add_argument("--crop_size", type=int, default=None, help="center crop (default: the backbone's, e.g. 112)")
    parser.add_argument("--resize_size", type=int, default=None, help="shorter side before cropping (default: the backbone's, e.g. 128)")
    parser.add_argument("--layer", default=None, help="feature map taken (3D ResNets: layer2 / layer3 / layer4; default the last)")
    parser.add_argument("--rgb_difference", action="store_true", help="also run the backbone on each clip's frame-to-frame differences (TSN's motion input) and append those features: D doubles (torchvision backbones)")
    parser.add_argument("--max_clips", type=int, default=None, help="at most this many clips per video, uniformly spread (default: all)")
    parser.add_argument("--batch_size", type=int, default=32, help="clips per backbone call (default 32)")
    parser.add_argument("--num_workers", type=int, default=None, help="decoding processes (default: CPU cores - 1, at most 8; 0 decodes in the main process)")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto", help="autocast dtype of the backbone (auto: bfloat16 on GPUs, float32 on CPU); features are saved as float32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the backbone on CPU (default: torch's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --random_init weights (every process builds the same backbone)")
    parser.add_argument("--feature_stats", default=None, help="a JSON file with feature_mean / feature_std (D values each, e.g. the backbone.json of a standardised stream): the backbone standardises its output with them, and backbone.json records them")
    args = parser.parse_args(argv)
    for name in ("clip_length", "crop_size", "resize_size", "max_clips", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1, got {value}")
    if args.fps is not None and args.fps <= 0:
        parser.error(f"--fps must be a positive frame rate, got {args.fps}")
    if args.crop_size is not None and args.resize_size is not None and args.crop_size > args.resize_size:
        parser.error(
            f"--crop_size {args.crop_size} is larger than --resize_size {args.resize_size}: the crop would be mostly black "
            "padding; pass --resize_size >= --crop_size"
        )
    return args


def main(argv=None) -> dict[str, int]:
    args = parse_args(argv)
    logging.basicConfig(format="%(message)s", level=logging.INFO)
    VGDVideoBackbone, resolve_video_backbone, same_backbone, video_processor_settings, extensions, VGDVideoProcessor = _repo_modules()
    from accelerate import PartialState
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    state = PartialState(cpu=not torch.cuda.is_available())  # CPU-only: gloo across the launched processes
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = resolve_video_backbone(
        args.backbone, pretrained=not args.random_init, weights=args.weights, clip_length=args.clip_length,
        fps=args.fps, crop_size=args.crop_size, resize_size=args.resize_size, layer=args.layer,
        rgb_difference=args.rgb_difference,
    )
    if args.random_init:  # recorded in backbone.json: a model trained on these features rebuilds the same weights
        spec["random_init_seed"] = int(args.seed)
    if args.feature_stats:
        from video_backbone_vgd import with_feature_standardization

        with open(args.feature_stats, encoding="utf-8") as f:
            stats = json.load(f)
        spec = with_feature_standardization(spec, stats["feature_mean"], stats["feature_std"], stats.get("feature_standardization_fitted_on"))
    stream = args.stream or os.path.basename(os.path.normpath(args.backbone))
    out_dir = stream_dir(args.feature_dir, stream, args.split)
    failures_path = os.path.join(out_dir, FAILURES_FILE)
    videos, not_videos = list_videos(args.video_dir, extensions)
    if state.is_main_process:
        os.makedirs(args.feature_dir, exist_ok=True)
        check_or_record_backbone(out_dir, spec, same_backbone, write=True)
        remove_stale_temporary_files(out_dir)
        if os.path.exists(failures_path):
            os.remove(failures_path)  # this run retries every failed video and lists its own failures
        if not_videos:
            shown = ", ".join(not_videos[:5]) + (f", ... ({len(not_videos)} in all)" if len(not_videos) > 5 else "")
            logger.info(f"ignoring {len(not_videos)} file(s) that are not videos (by name ending) in {args.video_dir}: {shown}")
    state.wait_for_everyone()
    if not state.is_main_process:
        check_or_record_backbone(out_dir, spec, same_backbone, write=False)

    counts = Counter()
    todo = []
    for video_id, path in videos:
        if is_done(os.path.join(out_dir, video_id + ".npy"), spec["num_regions"], spec["feature_dim"]):
            counts["skipped"] += 1
        else:
            todo.append((video_id, path))
    counts["skipped"] = counts["skipped"] if state.is_main_process else 0  # every process sees them; count once
    shard = todo[state.process_index :: state.num_processes]

    device = state.device
    backbone = VGDVideoBackbone(spec)  # --random_init: seeded by spec["random_init_seed"], the caller's RNG state kept
    if spec.get("weights") is not None:
        backbone.load_pretrained_weights()
    backbone.to(device)
    dtype = {"auto": torch.bfloat16 if device.type == "cuda" else None, "float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    num_workers = args.num_workers if args.num_workers is not None else min(8, max(1, (os.cpu_count() or 2) - 1))
    settings = video_processor_settings(spec)
    video_processor = VGDVideoProcessor(
        **settings, max_clips=args.max_clips or 10**9, decoder_threads=1 if num_workers > 0 else 0
    )
    loader = make_loader(VideoClipsDataset(shard, video_processor), num_workers, pin_memory=device.type == "cuda")

    start = time.perf_counter()
    bar = tqdm(total=len(shard), unit="video", desc=f"{stream} [{spec['name']}]", disable=not state.is_local_main_process, dynamic_ncols=True)
    with open(failures_path, "a", encoding="utf-8") as failures:
        for item, features in batched_clip_features(backbone, iter(loader), args.batch_size, device, dtype):
            if features is None:
                counts["failed"] += 1
                failures.write(json.dumps({"video_id": item["video_id"], "path": item["path"], "reason": item["error"]}) + "\n")
                failures.flush()
                logger.warning(f"skipped {item['path']}: {item['error']}")
            else:
                save_features_atomic(os.path.join(out_dir, item["video_id"] + ".npy"), np.ascontiguousarray(features, dtype=np.float32))
                counts["done"] += 1
                counts["clips"] += len(features)
                counts["padded"] += int(item["num_frames"] < spec["clip_length"])
                counts["variable_frame_rate"] += int(item["variable_frame_rate"])
                declared, decoded = item.get("declared_num_frames", 0), item.get("decoded_num_frames", 0)
                if declared and declared - decoded > spec["clip_length"]:  # more than one clip missing: truncated?
                    counts["truncated"] += 1
                    logger.warning(
                        f"{item['path']}: the container declares {declared} frames but only {decoded} could be decoded "
                        f"(a truncated or damaged file?); its features cover the decoded part only"
                    )
            bar.update(1)
            bar.set_postfix(failed=counts["failed"], refresh=False)
    bar.close()
    elapsed = time.perf_counter() - start

    totals = Counter()
    for part in gather_object([dict(counts)]) if state.num_processes > 1 else [dict(counts)]:
        totals.update(part)
    totals["not_videos"] = len(not_videos)
    if state.is_main_process:
        if totals["failed"] == 0 and os.path.exists(failures_path) and os.path.getsize(failures_path) == 0:
            os.remove(failures_path)
        rate = totals["done"] / elapsed if elapsed > 0 else 0.0
        failed = f"{totals['failed']} failed" + (f" (reasons in {failures_path})" if totals["failed"] else "")
        print(
            f"extract_features: {totals['done']} done, {totals['skipped']} skipped (already extracted), {failed}; "
            f"{totals['padded']} shorter than one clip (padded), {totals['variable_frame_rate']} variable frame rate "
            f"(resampled), {totals['truncated']} shorter than their container declares (truncated?), {totals['not_videos']} non-video file(s) ignored; {totals['clips']} clips in {elapsed:.1f} s "
            f"({rate:.2f} videos/s) -> {out_dir}",
            flush=True,
        )
    state.wait_for_everyone()
    return {key: int(totals.get(key, 0)) for key in ("done", "skipped", "failed", "padded", "variable_frame_rate", "truncated", "clips", "not_videos")}


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as error:  # bad arguments or folders: the message says what to do
        print(f"extract_features: error: {error}", file=sys.stderr)
        sys.exit(2)
