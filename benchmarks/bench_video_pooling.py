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

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from feature_extraction_vgd import VGDVideoFeatureExtractor  # noqa: E402
from modeling_vgd_gpt2 import VGDGPT2ForDialogue  # noqa: E402
from processing_vgd import VGDProcessor  # noqa: E402
from training_step_timing import feature_folder, parse_model_and_data, steps_per_second_in_turns, training_batches  # noqa: E402


def main(argv=None):
    args = parse_model_and_data(__doc__.split("\n\n")[0], argv)
    processor = VGDProcessor.from_pretrained(args.model)
    model = VGDGPT2ForDialogue.from_pretrained(args.model)
    if model.config.video_pooling == "temporal":
        raise SystemExit(f"{args.model} already reads one token per clip (video_pooling='temporal'): nothing to compare")
    config = type(model.config).from_dict({**model.config.to_dict(), "video_pooling": "temporal", "num_video_regions": None})
    extractor = processor.feature_extractor
    temporal_processor = VGDProcessor.from_pretrained(args.model)
    temporal_processor.feature_extractor = VGDVideoFeatureExtractor(
        video_feature_dim=extractor.video_feature_dim, max_video_frames=extractor.max_video_frames,
        video_pooling="temporal", stream_order=extractor.stream_order,
    )
    stream = extractor.stream_order[0]
    features = feature_folder(args.model, args.data_dir, stream)
    runs = {
        name: (run_model, training_batches(run_processor, args.data_dir, features, stream, args.batch_size, 4))
        for name, run_model, run_processor in (
            (model.config.video_pooling, model, processor),
            ("temporal", VGDGPT2ForDialogue(config), temporal_processor),
        )
    }
    rates = steps_per_second_in_turns(runs, args.steps, args.batch_size)
    for name, rate in rates.items():
        batches = runs[name][1]
        tokens = int(batches[0]["video_mask"][0].sum())
        length = sum(batch["input_ids"].shape[1] for batch in batches) / len(batches)
        print(f"{name:>22}: {tokens:3d} video tokens, mean padded length {length:5.1f}, {rate:6.2f} steps/s")
    first, second = list(rates)
    print(f"ratio ({first} / {second}): {rates[first] / rates[second]:.3f}")
    return rates


if __name__ == "__main__":
    main()
