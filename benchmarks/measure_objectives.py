#!/usr/bin/env python
"""What a trained demo model learned from its objectives, on the held-out (validation) turns of its data:

- the response loss (next-token cross-entropy on the answers, mean over answer tokens) on the clean context, as
  at decoding time, and on a context masked the way training masks it (15% of the context tokens and of the video
  regions, fixed seed);
- the video-text matching accuracy on held-out pairs (`VGDTrainer.matching_accuracy`: the last turn of every
  validation dialogue with its own video and with another dialogue's video);
- on the same pairs, how often the answer is more likely (lower response loss) with the dialogue's own video than
  with the other one: what the response head knows about the pairing, for comparison with the matching head.

    python benchmarks/measure_objectives.py outputs/demo [outputs/demo-masked ...]

Each folder is the `--output_dir` of a finished `run_vgd.py` demo run (model, processor); the data is the demo's
cache beside it (`outputs/demo-cache/data`), or `--data_dir`.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from modeling_vgd_gpt2 import VGDGPT2ForDialogue  # noqa: E402
from avsd_dataset.collator import DataCollatorForVGD  # noqa: E402
from processing_vgd import VGDProcessor  # noqa: E402
from avsd_dataset.demo import demo_cache_dir  # noqa: E402
from avsd_dataset.splits import feature_stores, load_splits  # noqa: E402
from run_vgd import DataArguments  # noqa: E402
from avsd_dataset.turns import DialogueTurnDataset, held_out_matching_pairs  # noqa: E402
from vgd_training import VGDTrainer, VGDTrainingArguments  # noqa: E402


def response_loss(model, dataset, collator, batch_size=64) -> float:
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            batch = collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            batch.pop("mlm_labels", None)
            count = int((batch["labels"][:, 1:] != -100).sum())
            total += float(model(**batch).response_loss) * count
            tokens += count
    return total / tokens


def answer_likelihood_ranking(model, dataset, collator, batch_size=64) -> float:
    """Fraction of dialogues whose last answer has a lower response loss with their own video than with the next
    dialogue's (the pairs of `VGDTrainer.matching_accuracy`)."""
    examples = []
    for index, video_id, _ in held_out_matching_pairs(dataset):  # own video, then the other one, per dialogue
        inputs = dataset.raw_inputs(index)
        inputs["video_features"] = dataset.feature_store[video_id]
        examples.append(dataset.processor.process_example(**inputs))
    losses = []
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = collator(examples[start : start + batch_size])
            logits = model(**batch).logits[:, :-1].float()
            labels = batch["labels"][:, 1:]
            token_losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
            losses.extend(((token_losses * (labels != -100)).sum(1) / (labels != -100).sum(1)).tolist())
    own, other = losses[0::2], losses[1::2]
    return sum(a < b for a, b in zip(own, other)) / len(own)


def measure(folder: str, data_dir: str | None = None) -> dict[str, float]:
    processor = VGDProcessor.from_pretrained(folder)
    model = VGDGPT2ForDialogue.from_pretrained(folder).eval()
    data_dir = data_dir or os.path.join(demo_cache_dir(DataArguments(), folder), "data")
    data_args = DataArguments(data_dir=data_dir, feature_dir=os.path.join(data_dir, "features"))
    from avsd_dataset.synthetic import load_config

    data_args.feature_streams = ",".join(load_config(data_args.data_dir).streams)
    splits, _ = load_splits(data_args)
    store = feature_stores(data_args, splits, ["validation"])["validation"]
    dataset = DialogueTurnDataset(splits["validation"], store, processor, caption_fields=["caption"])
    clean = DataCollatorForVGD(processor, mlm_probability=0, mvm_probability=0, mvt_probability=0)
    masked = DataCollatorForVGD(processor, mlm_probability=0.15, mvm_probability=0.15, mvt_probability=0, seed=0)
    results = {
        "validation response loss, clean context": response_loss(model, dataset, clean),
        "validation response loss, masked context": response_loss(model, dataset, masked),
    }
    args = VGDTrainingArguments(output_dir=os.path.join(folder, "measure"), use_cpu=True, report_to="none", per_device_eval_batch_size=64)
    trainer = VGDTrainer(model=model, args=args, processing_class=processor)
    results.update(trainer.matching_accuracy(dataset))
    results["matching by answer likelihood (ranking)"] = answer_likelihood_ranking(model, dataset, clean)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--data_dir", default=None, help="the synthetic data the models were trained on (default: the demo cache beside each folder)")
    args = parser.parse_args()
    for folder in args.folders:
        for name, value in measure(folder, args.data_dir).items():
            print(f"{folder}\t{name}\t{value:.4f}" if isinstance(value, float) else f"{folder}\t{name}\t{value}")


if __name__ == "__main__":
    main()
