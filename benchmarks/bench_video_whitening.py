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

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from modeling_vgd_gpt2 import VGDGPT2ForDialogue  # noqa: E402
from processing_vgd import VGDProcessor  # noqa: E402
from training_step_timing import feature_folder, parse_model_and_data, steps_per_second_in_turns, training_batches  # noqa: E402


def main(argv=None):
    args = parse_model_and_data(__doc__.split("\n\n")[0], argv)
    processor = VGDProcessor.from_pretrained(args.model)
    whitened = VGDGPT2ForDialogue.from_pretrained(args.model)
    if whitened.config.video_whitening_components is None:
        raise SystemExit(f"{args.model} does not whiten its video features (config.video_whitening_components is None)")
    config = type(whitened.config).from_dict({**whitened.config.to_dict(), "video_whitening_components": None})
    plain = VGDGPT2ForDialogue(config)
    stream = processor.feature_extractor.stream_order[0]
    batches = training_batches(processor, args.data_dir, feature_folder(args.model, args.data_dir, stream), stream, args.batch_size, 4)

    models = {"without whitening": plain, f"whitening {whitened.config.video_whitening_components}": whitened}
    rates = steps_per_second_in_turns({name: (model, batches) for name, model in models.items()}, args.steps, args.batch_size)
    for name, rate in rates.items():
        print(f"{name:>20}: {rate:6.2f} steps/s")
    names = list(rates)
    print(f"ratio (whitening / without): {rates[names[1]] / rates[names[0]]:.3f}")
    return rates


if __name__ == "__main__":
    main()
