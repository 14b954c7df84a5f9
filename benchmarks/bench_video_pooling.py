#!/usr/bin/env python
"""CPU cost of a model's video tokens in a training step (`config.video_pooling`, e.g. the video demo's
`spatial_and_temporal`: 16 region + 12 clip tokens) against the same model reading one token per clip (`temporal`:
12), in one process.

    python benchmarks/bench_video_pooling.py outputs/video-demo outputs/video-demo-cache/data-<hash> [--steps 200]

MODEL is a trained video demo (`python -m avsd_dataset.video_demo`); DATA_DIR its data folder. The same batches as
`bench_video_whitening.py` (32 training dialogues, their last turn the answer, `DataCollatorForVGD` with the four
objectives, the extracted features pooled by each model's processor), a forward with labels, a backward and an AdamW
update per step on one torch thread (the demo's training). The two models take turns in rounds of `--steps / 5`
steps, so that a change of the machine's speed hits both; printed: video tokens, sequence length and steps per
second of each, and the ratio. The `temporal` model is built from MODEL's config (random weights: the cost of a
step does not depend on them).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_extraction import _cpu_name as cpu_model  # noqa: E402
from bench_video_whitening import feature_folder, training_batches  # noqa: E402
from feature_extraction_vgd import VGDVideoFeatureExtractor  # noqa: E402
from modeling_vgd_gpt2 import VGDGPT2ForDialogue  # noqa: E402
from processing_vgd import VGDProcessor  # noqa: E402


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
    model = VGDGPT2ForDialogue.from_pretrained(args.model)
    if model.config.video_pooling == "temporal":
        raise SystemExit(f"{args.model} already reads one token per clip (video_pooling='temporal'): nothing to compare")
    config = type(model.config).from_dict({**model.config.to_dict(), "video_pooling": "temporal", "num_video_regions": None})
    temporal_model = VGDGPT2ForDialogue(config)
    extractor = processor.feature_extractor
    temporal_processor = VGDProcessor.from_pretrained(args.model)
    temporal_processor.feature_extractor = VGDVideoFeatureExtractor(
        video_feature_dim=extractor.video_feature_dim, max_video_frames=extractor.max_video_frames,
        video_pooling="temporal", stream_order=extractor.stream_order,
    )
    stream = extractor.stream_order[0]
    features = feature_folder(args.model, args.data_dir, stream)
    runs = {}
    for name, (run_model, run_processor) in {
        f"{model.config.video_pooling}": (model, processor),
        "temporal": (temporal_model, temporal_processor),
    }.items():
        batches = training_batches(run_processor, args.data_dir, features, stream, args.batch_size, 4)
        tokens = int(batches[0]["video_mask"][0].sum())
        runs[name] = (run_model, batches, torch.optim.AdamW(run_model.parameters(), lr=1e-4), tokens)
    seconds = dict.fromkeys(runs, 0.0)
    rounds, per_round = 5, max(1, args.steps // 5)
    print(f"CPU {cpu_model()}, load average {os.getloadavg()[0]:.2f}, torch {torch.__version__}, 1 thread; "
          f"4 batches of {args.batch_size}, {rounds} rounds x {per_round} steps per model")
    step = 0
    for _ in range(rounds):
        for name, (run_model, batches, optimizer, _) in runs.items():
            run_model.train()
            start = time.perf_counter()
            for i in range(per_round):
                loss = run_model(**batches[(step + i) % len(batches)]).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            seconds[name] += time.perf_counter() - start
        step += per_round
    rates = {name: rounds * per_round / value for name, value in seconds.items()}
    for name, rate in rates.items():
        _, batches, _, tokens = runs[name]
        length = sum(batch["input_ids"].shape[1] for batch in batches) / len(batches)
        print(f"{name:>22}: {tokens:3d} video tokens, mean padded length {length:5.1f}, {rate:6.2f} steps/s")
    first, second = list(rates)
    print(f"ratio ({first} / {second}): {rates[first] / rates[second]:.3f}")
    return rates


if __name__ == "__main__":
    main()
