"""What `bench_video_whitening.py` and `bench_video_pooling.py` share: their command line (a trained video demo and its
data folder), the demo's training batches, and the timing of training steps of several models taking turns in one
process, so that a change of the machine's speed hits every model alike."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from avsd_dataset.collator import DataCollatorForVGD  # noqa: E402
from bench_extraction import _cpu_name as cpu_model  # noqa: E402
from processing_vgd import VGDProcessor  # noqa: E402


def parse_model_and_data(description: str, argv=None) -> argparse.Namespace:
    """`MODEL DATA_DIR [--steps N] [--batch_size B]`; one torch thread (the demo's training), seed 0."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("model", help="a model trained by `python -m avsd_dataset.video_demo`")
    parser.add_argument("data_dir", help="that run's synthetic data folder")
    parser.add_argument("--steps", type=int, default=200, help="Training steps of each model (5 rounds).")
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return args


def feature_folder(model_dir: str, data_dir: str, stream: str) -> str:
    """The features MODEL was trained on: those its `video_demo_result.json` records (the video demo's standardised
    `video_features-<hash>` folder in DATA_DIR, not the raw one beside it; a path recorded relative to another working
    folder is looked up in DATA_DIR), else `DATA_DIR/features`."""
    record = os.path.join(model_dir, "video_demo_result.json")
    if os.path.exists(record):
        with open(record, encoding="utf-8") as f:
            folder = json.load(f)["paths"]["feature_dir"]
        if not os.path.isdir(folder):  # recorded relative to the folder the demo ran in: it sits in DATA_DIR
            folder = os.path.join(data_dir, os.path.basename(os.path.normpath(folder)))
    else:
        folder = os.path.join(data_dir, "features")
    if not os.path.isdir(os.path.join(folder, stream)):
        raise SystemExit(f"{folder}: no {stream}/ folder of features (from {record if os.path.exists(record) else 'DATA_DIR'})")
    return folder


def training_batches(processor: VGDProcessor, data_dir: str, feature_dir: str, stream: str, batch_size: int, count: int) -> list[dict]:
    """`count` collated batches (the four objectives) of the first training dialogues, the last turn the answer to learn."""
    with open(os.path.join(data_dir, "train_set4DSTC7-AVSD.json")) as f:
        dialogs = json.load(f)["dialogs"][: batch_size * count]
    collator = DataCollatorForVGD(processor)  # the demo's MLM / MVM / MVT at 0.15 each
    examples = [
        processor(
            video_features=np.load(os.path.join(feature_dir, stream, f"{d['image_id']}.npy")),
            caption=d.get("caption", ""),
            history=[(t["question"], t["answer"]) for t in d["dialog"][:-1]],
            question=d["dialog"][-1]["question"],
            answer=d["dialog"][-1]["answer"],
        )
        for d in dialogs
    ]
    return [collator(examples[start : start + batch_size]) for start in range(0, len(examples), batch_size)]


def steps_per_second_in_turns(runs: dict[str, tuple[torch.nn.Module, list[dict]]], steps: int, batch_size: int) -> dict[str, float]:
    """Training steps (a forward with labels, a backward, an AdamW update) of each `name: (model, batches)`, the models
    taking turns in 5 rounds of `steps / 5` steps; prints the CPU and the load first. Returns steps per second."""
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-4) for name, (model, _) in runs.items()}
    seconds = dict.fromkeys(runs, 0.0)
    rounds, per_round = 5, max(1, steps // 5)
    counts = sorted({len(batches) for _, batches in runs.values()})
    print(f"CPU {cpu_model()}, load average {os.getloadavg()[0]:.2f}, torch {torch.__version__}, 1 thread; "
          f"{'/'.join(map(str, counts))} batches of {batch_size}, {rounds} rounds x {per_round} steps per model")
    step = 0
    for _ in range(rounds):
        for name, (model, batches) in runs.items():
            model.train()
            start = time.perf_counter()
            for i in range(per_round):
                loss = model(**batches[(step + i) % len(batches)]).loss
                loss.backward()
                optimizers[name].step()
                optimizers[name].zero_grad(set_to_none=True)
            seconds[name] += time.perf_counter() - start
        step += per_round
    return {name: rounds * per_round / value for name, value in seconds.items()}
