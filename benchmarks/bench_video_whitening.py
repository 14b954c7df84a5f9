#!/usr/bin/env python
"""CPU cost of the video whitening (`config.video_whitening_components`) in a training step, against the same model
without it, in one process.

    python benchmarks/bench_video_whitening.py outputs/video-demo outputs/video-demo-cache/data-<hash> [--steps 200]

MODEL is a trained video demo (`python -m avsd_dataset.video_demo`: whitening 64); DATA_DIR its data folder. Batches
of 32 training dialogues (their last turn, the processor of MODEL, `DataCollatorForVGD` with the four objectives) with
their extracted features; each step is a forward with labels, a backward and an AdamW update, on one torch thread (the demo's training). The two models take
turns in rounds of `--steps / 5` steps, so that a change of the machine's speed hits both; printed: steps per second
of each and the ratio. The whitened model is MODEL's own; the other is built from its config with
`video_whitening_components=None` (random weights: the cost of a step does not depend on them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from avsd_dataset.collator import DataCollatorForVGD  # noqa: E402
from bench_extraction import _cpu_name as cpu_model  # noqa: E402
from modeling_vgd_gpt2 import VGDGPT2ForDialogue  # noqa: E402
from processing_vgd import VGDProcessor  # noqa: E402


def feature_folder(model_dir: str, data_dir: str, stream: str) -> str:
    """The features MODEL was trained on: those its `video_demo_result.json` records (the video demo's standardised
    `video_features-<hash>` folder, not the raw one beside it), else `DATA_DIR/features`."""
    record = os.path.join(model_dir, "video_demo_result.json")
    if os.path.exists(record):
        with open(record, encoding="utf-8") as f:
            folder = json.load(f)["paths"]["feature_dir"]
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
    batches = [collator(examples[start : start + batch_size]) for start in range(0, len(examples), batch_size)]
    return batches


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("data_dir")
    parser.add_argument("--steps", type=int, default=200, help="Training steps of each model (5 rounds).")
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)

    processor = VGDProcessor.from_pretrained(args.model)
    whitened = VGDGPT2ForDialogue.from_pretrained(args.model)
    if whitened.config.video_whitening_components is None:
        raise SystemExit(f"{args.model} does not whiten its video features (config.video_whitening_components is None)")
    config = type(whitened.config).from_dict({**whitened.config.to_dict(), "video_whitening_components": None})
    plain = VGDGPT2ForDialogue(config)
    stream = processor.feature_extractor.stream_order[0]
    batches = training_batches(processor, args.data_dir, feature_folder(args.model, args.data_dir, stream), stream, args.batch_size, 4)

    models = {"without whitening": plain, f"whitening {whitened.config.video_whitening_components}": whitened}
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-4) for name, model in models.items()}
    seconds = dict.fromkeys(models, 0.0)
    rounds, per_round = 5, max(1, args.steps // 5)
    print(f"CPU {cpu_model()}, load average {os.getloadavg()[0]:.2f}, torch {torch.__version__}, 1 thread; "
          f"{len(batches)} batches of {args.batch_size}, {rounds} rounds x {per_round} steps per model")
    for model in models.values():
        model.train()
    step = 0
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            for i in range(per_round):
                loss = model(**batches[(step + i) % len(batches)]).loss
                loss.backward()
                optimizers[name].step()
                optimizers[name].zero_grad(set_to_none=True)
            seconds[name] += time.perf_counter() - start
        step += per_round
    rates = {name: rounds * per_round / value for name, value in seconds.items()}
    for name, rate in rates.items():
        print(f"{name:>20}: {rate:6.2f} steps/s")
    names = list(rates)
    print(f"ratio (whitening / without): {rates[names[1]] / rates[names[0]]:.3f}")
    return rates


if __name__ == "__main__":
    main()
