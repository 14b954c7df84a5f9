"""Which backbone setting carries the synthetic task's facts best? Extract the same videos with several settings and
probe each (a linear classifier per fact type on the token the video demo's model reads).

    python benchmarks/probe_backbone_settings.py DATA_DIR WORK_DIR [--train_videos 800] [--settings JSON]

DATA_DIR: a `python -m avsd_dataset.video_demo` run's data folder (its `videos/`, `videos_testset/` and
`synthetic_ground_truth.json`). For every setting (default: the video demo's own, `r3d_18` `layer3` on the 32 x 32
frames with frame differences, then one change each: another backbone seed, `layer2`, `mc3_18`, `r2plus1d_18`, the
frames upsampled to 64 x 64), the first `--train_videos` training videos and all test videos are extracted with
`avsd_dataset.extract_features` (4-frame clips at 6 fps, random init, two threads, as the demo) into
`WORK_DIR/<setting>/`, every channel is standardised with the statistics of 300 training videos, and a softmax
regression (`probe_video_features.fit_probe`) reads from the region-and-clip mean token the object, colour and count,
and from a clip's region-mean token (what `--video_pooling temporal` gives the model) that clip's action; and the
model's own `Linear + ReLU` projection with a linear classifier (`probe_answer_ceiling.fit_projection`), trained on
the object alone for 20 and for 50 epochs (how fast the model's layer can learn it). Prints one JSON line per setting (test accuracy, extraction seconds), then
a table. Results: docs/video.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from avsd_dataset.synthetic import FACT_VALUES, load_ground_truth  # noqa: E402
from probe_answer_ceiling import clip_action_labels, fit_projection  # noqa: E402
from probe_video_features import fit_probe  # noqa: E402

DEMO = {"--backbone": "r3d_18", "--layer": "layer3", "--crop_size": "32", "--resize_size": "32"}


def demo_with(**changes: str) -> list[str]:
    """The video demo's extraction options with some replaced or added (`demo_with(layer="layer2")`)."""
    options = dict(DEMO, **{f"--{name}": value for name, value in changes.items()})
    return [part for option in options.items() for part in option] + ["--rgb_difference"]


SETTINGS = {
    "video demo (r3d_18 layer3, 32 px)": demo_with(),
    "backbone seed 1": demo_with(seed="1"),
    "layer2": demo_with(layer="layer2"),
    "mc3_18": demo_with(backbone="mc3_18"),
    "r2plus1d_18": demo_with(backbone="r2plus1d_18"),
    "frames upsampled to 64 px": demo_with(crop_size="64", resize_size="64"),
}
COMMON = ["--batch_size", "16", "--num_workers", "1", "--threads", "2", "--clip_length", "4", "--fps", "6", "--random_init"]


def linked_videos(source_dir: str, video_ids: list[str], target_dir: str) -> str:
    """A folder of symbolic links to the chosen videos (extract_features reads a whole folder)."""
    os.makedirs(target_dir, exist_ok=True)
    for video_id in video_ids:
        link = os.path.join(target_dir, f"{video_id}.mp4")
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(os.path.join(source_dir, f"{video_id}.mp4")), link)
    return target_dir


def probe_setting(features: dict[str, np.ndarray], videos: dict, train_ids: list[str], test_ids: list[str]) -> dict[str, float]:
    sample = np.concatenate([features[i].reshape(-1, features[i].shape[-1]) for i in train_ids[:300]])
    mean, std = sample.mean(0), sample.std(0) + 1e-6
    standardised = {i: (f - mean) / std for i, f in features.items()}
    result = {}
    for fact in ("object", "color", "count"):
        def rows(ids):
            return (np.stack([standardised[i].mean((0, 1)) for i in ids]),
                    np.array([FACT_VALUES[fact].index(videos[i][fact]) for i in ids]))
        (x_fit, y_fit), (x_test, y_test) = rows(train_ids), rows(test_ids)
        result[fact] = fit_probe(x_fit, y_fit, x_test, y_test, len(FACT_VALUES[fact]))[1]
        if fact == "object":
            for epochs in (20, 50):  # the model's projection + a linear layer, trained on the object alone (seeded: the same first epochs)
                classify = fit_projection(x_fit, y_fit, len(FACT_VALUES["object"]), epochs)
                result[f"object, projection probe, {epochs} epochs"] = float((classify(x_test).argmax(1) == y_test).mean())

    def clip_rows(ids):  # every clip's region-mean token and the action its segment shows
        return (np.concatenate([standardised[i].mean(1) for i in ids]),
                np.concatenate([clip_action_labels(videos[i]["actions"], len(standardised[i])) for i in ids]))

    result["action of a clip"] = fit_probe(*clip_rows(train_ids), *clip_rows(test_ids), len(FACT_VALUES["action"]))[1]
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir")
    parser.add_argument("work_dir")
    parser.add_argument("--train_videos", type=int, default=800)
    parser.add_argument("--settings", default=None, help="JSON object {name: [extract_features options]} (default: the six above)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    settings = json.loads(args.settings) if args.settings else SETTINGS
    videos = load_ground_truth(args.data_dir)["videos"]
    train_ids = sorted(i for i, v in videos.items() if v["split"] != "test")[: args.train_videos]
    test_ids = sorted(i for i, v in videos.items() if v["split"] == "test")
    video_dirs = {
        "train": linked_videos(os.path.join(args.data_dir, "videos"), train_ids, os.path.join(args.work_dir, "videos")),
        "test": linked_videos(os.path.join(args.data_dir, "videos_testset"), test_ids, os.path.join(args.work_dir, "videos_testset")),
    }
    table = []
    for index, (name, options) in enumerate(settings.items()):
        out = os.path.join(args.work_dir, f"setting-{index}")
        start = time.time()
        for split, video_dir in video_dirs.items():
            subprocess.run([sys.executable, "-m", "avsd_dataset.extract_features", video_dir, out, "--split", split, "--stream", "probe",
                            *COMMON, *options], check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.time() - start
        features = {i: np.load(os.path.join(out, "probe", f"{i}.npy")) for i in train_ids}
        features.update({i: np.load(os.path.join(out, "probe_testset", f"{i}.npy")) for i in test_ids})
        result = {"shape [F, P, D]": list(features[train_ids[0]].shape), "extract s": round(seconds, 1),
                  **{k: round(v, 3) for k, v in probe_setting(features, videos, train_ids, test_ids).items()}}
        print(name, json.dumps(result), flush=True)
        table.append((name, result))
    print(f"\nlinear probe, test accuracy ({len(train_ids)} training videos, {len(test_ids)} test videos)")
    print("| setting | [F, P, D] | object | colour | count | action of a clip | object, projection probe, 20 / 50 epochs | extract s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in table:
        print(f"| {name} | {r['shape [F, P, D]']} | {r['object']:.3f} | {r['color']:.3f} | {r['count']:.3f} | {r['action of a clip']:.3f} "
              f"| {r['object, projection probe, 20 epochs']:.3f} / {r['object, projection probe, 50 epochs']:.3f} | {r['extract s']} |")


if __name__ == "__main__":
    main()
