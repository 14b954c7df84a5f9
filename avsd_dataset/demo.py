"""The embedded demo: a small GPT-2-shaped model trained from scratch on the synthetic AVSD-format task, offline,
on the CPU (`python run_vgd.py` without `--data_dir`).

- `DemoArguments`: the size of the synthetic task and of the offline model (`--demo_*` flags of run_vgd.py);
  `DEMO_TRAINING_DEFAULTS`: the training settings a demo run gets under whatever the user gives.
- `prepare_demo_data`: the dataset and the offline GPT-2, cached by their settings beside the output folder.
- `evaluate_demo_answers`: answer accuracy with the dialogues' own videos, with shuffled videos, and chance.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field

import torch

from vgd_training.process import StageTimes

from .synthetic import answer_accuracy, load_ground_truth
from .turns import DialogueTurnDataset, shuffled_videos

logger = logging.getLogger(__name__)

DEMO_OUTPUT_DIR = os.path.join("outputs", "demo")
SMOKE_OUTPUT_DIR = os.path.join("outputs", "smoke")  # `--max_steps N` without --output_dir: never the trained demo

# Settings of the embedded demo (a model trained from scratch on a small synthetic task on a CPU); any
# argument given on the command line or in a config file overrides them.
DEMO_TRAINING_DEFAULTS = {
    "output_dir": DEMO_OUTPUT_DIR,
    "learning_rate": 3e-3,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,
    "weight_decay": 0.01,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    "num_train_epochs": 7.5,  # 2,310 steps (issue 24: with the 2 x 96 model, docs/experiments.md)
    "logging_steps": 100,
    "save_strategy": "no",
    "eval_strategy": "no",
    "report_to": "none",
    "generation_num_beams": 3,
    "generation_max_new_tokens": 12,
    "eval_max_generation_examples": 0,  # no validation decoding (the test set is decoded, twice)
    "caption_fields": "caption",
    "max_history_turns": 1,
    "dataloader_num_workers": 0,
    "use_cpu": not torch.cuda.is_available(),
    "seed": 0,
    "cpu_threads": 1,
}


@dataclass
class DemoArguments:
    """The embedded demo's task and model (used only without --data_dir / --model_name_or_path)."""

    _argument_group_name = "Embedded demo (without --data_dir)"

    demo_n_layer: int = field(default=2, metadata={"help": "Layers of the demo's offline GPT-2 (no --model_name_or_path)."})
    demo_n_embd: int = field(
        default=96,
        metadata={"help": "Width of the demo's offline GPT-2 (96: the same accuracy as 128 for 0.74x the CPU time of a step; 64 does "
                  "not learn the actions; issue 24, docs/experiments.md)."},
    )
    demo_n_head: int = field(default=4, metadata={"help": "Attention heads of the demo's offline GPT-2."})
    demo_vocab_size: int = field(default=600, metadata={"help": "BPE vocabulary of the demo's offline tokenizer."})
    demo_dropout: float = field(default=0.0, metadata={"help": "Dropout of the demo's offline GPT-2 (short runs learn faster without)."})
    demo_activation: str = field(
        default="gelu_pytorch_tanh",
        metadata={"help": "MLP activation of the demo's offline GPT-2: gelu_pytorch_tanh (GPT-2's gelu_new tanh approximation as "
                  "one fused kernel; 200 demo steps took 24.6 s against 25.4 s, one run each) or gelu_new (GPT-2's own)."},
    )
    demo_num_train_dialogs: int = field(default=1500, metadata={"help": "Size of the synthetic training split (demo)."})
    demo_num_valid_dialogs: int = field(default=100, metadata={"help": "Size of the synthetic validation split (demo)."})
    demo_num_test_dialogs: int = field(default=192, metadata={"help": "Size of the synthetic test split (demo)."})
    demo_noise: float = field(default=1.0, metadata={"help": "Feature noise of the synthetic videos (demo)."})
    demo_seed: int = field(default=0, metadata={"help": "Seed of the synthetic dataset (demo)."})


def evaluate_demo_answers(
    trainer, predictions: list[str], data_dir: str, test_split, test_store, processor, caption_fields, seed: int,
    per_type: bool = False, stages: StageTimes | None = None,
) -> dict[str, float]:
    """Answer accuracy of the decoded test `predictions` against the synthetic ground truth, the same with every
    dialogue given another dialogue's video (decoded here: the control for grounding), and chance. `per_type`: also
    `answer_accuracy/<question type>`, `answer_accuracy_shuffled_video/<type>` and `answer_accuracy_chance/<type>`.
    `stages`: the decoding and scoring time is added to it."""
    stages = stages or StageTimes()
    with stages.stage("decoding"):
        shuffled = DialogueTurnDataset(shuffled_videos(test_split, seed), test_store, processor, caption_fields, for_generation=True)
        shuffled_predictions = trainer.generate_responses(shuffled, description="Decoding with shuffled videos (control)")
    with stages.stage("scoring"):
        ground_truth = load_ground_truth(data_dir)["test"][: len(predictions)]
        accuracy = answer_accuracy(predictions, ground_truth)
        shuffled_accuracy = answer_accuracy(shuffled_predictions, ground_truth)
    metrics = {
        "answer_accuracy": accuracy["accuracy"],
        "answer_accuracy_shuffled_video": shuffled_accuracy["accuracy"],
        "answer_accuracy_chance": accuracy["chance"],
    }
    if per_type:
        for qtype, value in accuracy["per_question_type"].items():
            metrics[f"answer_accuracy/{qtype}"] = value
            metrics[f"answer_accuracy_shuffled_video/{qtype}"] = shuffled_accuracy["per_question_type"][qtype]
            metrics[f"answer_accuracy_chance/{qtype}"] = accuracy["chance_per_question_type"][qtype]
    return metrics


def demo_output_dir(argv: list[str]) -> str:
    """The demo's output folder: outputs/demo, or outputs/smoke for a run shortened with --max_steps."""
    shortened = any(arg == "--max_steps" or arg.startswith("--max_steps=") for arg in argv)
    return SMOKE_OUTPUT_DIR if shortened else DEMO_OUTPUT_DIR


def demo_cache_dir(data_args, output_dir: str) -> str:
    """Where the demo keeps its synthetic dataset and scratch backbone, outside the model folder: --cache_dir, else
    `demo-cache` beside the output folder (outputs/demo-cache for outputs/demo)."""
    if data_args.cache_dir:
        return os.path.join(data_args.cache_dir, "vgd-demo")
    return os.path.join(os.path.dirname(os.path.abspath(output_dir)), "demo-cache")


def _short_hash(values) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:10]


def link_latest(link: str, target: str) -> None:
    """Point `link` (e.g. demo-cache/data) at `target` (demo-cache/data-<hash>), replacing it atomically: the stable
    name that the README's commands and the chat's default use for the demo's newest dataset / backbone."""
    staging = f"{link}.tmp-{os.getpid()}"
    try:
        if os.path.lexists(staging):
            os.remove(staging)
        os.symlink(os.path.basename(target), staging)
        os.replace(staging, link)
    except OSError as error:  # e.g. a file system without symbolic links: only the stable name is missing
        logger.info("Could not point %s at %s (%s)", link, target, error)


def prepare_demo_data(demo_args: DemoArguments, data_args, model_args, output_dir: str, main_process: bool):
    """Generate (or reuse) the embedded synthetic dataset and, without --model_name_or_path, an offline GPT-2, in a
    cache folder named by their settings (`demo_cache_dir`): the output folder holds the trained model only."""
    from .offline_gpt2 import build_offline_gpt2
    from .synthetic import corpus_texts, generate_synthetic_avsd

    data_settings = {
        "train": demo_args.demo_num_train_dialogs, "valid": demo_args.demo_num_valid_dialogs,
        "test": demo_args.demo_num_test_dialogs, "noise": demo_args.demo_noise, "seed": demo_args.demo_seed,
    }
    cache = demo_cache_dir(data_args, output_dir)
    data_dir = os.path.join(cache, f"data-{_short_hash(data_settings)}")
    info = generate_synthetic_avsd(
        data_dir,
        num_train_dialogs=demo_args.demo_num_train_dialogs,
        num_valid_dialogs=demo_args.demo_num_valid_dialogs,
        num_test_dialogs=demo_args.demo_num_test_dialogs,
        noise=demo_args.demo_noise,
        seed=demo_args.demo_seed,
    )
    logger.info("Synthetic AVSD data in %s (%s)", data_dir, "generated" if info.regenerated else "cached")
    if main_process:
        link_latest(os.path.join(cache, "data"), data_dir)
    data_args.data_dir = data_dir
    data_args.feature_dir = info.feature_root
    data_args.feature_streams = ",".join(info.config.streams)
    if model_args.model_name_or_path is None:
        shape = dict(
            vocab_size=demo_args.demo_vocab_size, n_positions=256, n_embd=demo_args.demo_n_embd,
            n_layer=demo_args.demo_n_layer, n_head=demo_args.demo_n_head, dropout=demo_args.demo_dropout,
            activation_function=demo_args.demo_activation,
        )
        gpt2_dir = os.path.join(cache, f"offline-gpt2-{_short_hash({**shape, 'data': data_settings})}")
        if not os.path.isfile(os.path.join(gpt2_dir, "model.safetensors")):
            staging = f"{gpt2_dir}.tmp-{os.getpid()}"
            build_offline_gpt2(corpus_texts(data_dir, splits=("train",)), staging, **shape)
            if os.path.isdir(gpt2_dir):
                shutil.rmtree(gpt2_dir)
            os.replace(staging, gpt2_dir)
        if main_process:
            link_latest(os.path.join(cache, "offline-gpt2"), gpt2_dir)
        model_args.model_name_or_path = gpt2_dir
    return info


# The width at which the demo's learning rate (3e-3) was tuned and from which the H200 runs scaled it: 2 x 128, the
# demo's model until issue 24 made it 2 x 96 (where 3e-3 holds too).
LEARNING_RATE_REFERENCE_SHAPE = (2, 128)


def warn_if_demo_learning_rate_too_high(demo_args: DemoArguments, learning_rate: float) -> bool:
    """Warn when `--demo_n_embd` widens the demo's scratch model past 128 but the learning rate is above half the demo's
    rate scaled with the width (3e-3 x 128 / n_embd / 2): the H200 runs at the full scaled rate (6 x 384 at 1e-3,
    12 x 768 at 5e-4) went NaN under bf16. Returns whether it warned."""
    base_layers, base_width = LEARNING_RATE_REFERENCE_SHAPE
    scaled = DEMO_TRAINING_DEFAULTS["learning_rate"] * base_width / demo_args.demo_n_embd
    if demo_args.demo_n_embd <= base_width or learning_rate <= 0.5 * scaled * 1.0001:
        return False
    logger.warning(
        "--learning_rate %g is high for a %d x %d scratch model: the demo's %g is tuned for %d x %d. Scaled with the "
        "width it would be %.1e, but 6 x 384 at 1e-3 and 12 x 768 at 5e-4 went NaN under bf16 on an H200 (the learning "
        "rate drives the attention logits up: benchmarks/RESULTS.md). Use --learning_rate %.1e or lower.",
        learning_rate, demo_args.demo_n_layer, demo_args.demo_n_embd, DEMO_TRAINING_DEFAULTS["learning_rate"],
        base_layers, base_width, scaled, 0.5 * scaled,
    )
    return True


def print_demo_table(metrics: dict, title: str = "test metrics"):
    rows = [(name, metrics[name]) for name in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr") if name in metrics]
    rows += [
        ("answer accuracy (video)", metrics.get("answer_accuracy")),
        ("answer accuracy (shuffled video)", metrics.get("answer_accuracy_shuffled_video")),
        ("answer accuracy (chance)", metrics.get("answer_accuracy_chance")),
        ("video-text matching accuracy", metrics.get("matching_accuracy")),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"\n***** {title} *****")
    print("-" * (width + 10))
    for name, value in rows:
        if value is not None:
            print(f"{name:<{width}}  {value:7.3f}")
    print("-" * (width + 10))


def describe_data(data_args, demo_args: DemoArguments | None) -> str:
    if demo_args is not None:
        return (
            f"the embedded synthetic AVSD-format task ({demo_args.demo_num_train_dialogs} training dialogues, noise "
            f"{demo_args.demo_noise}, seed {demo_args.demo_seed}), generated by avsd_dataset.synthetic"
        )
    return f"AVSD ({data_args.dataset_config} files in {data_args.data_dir}; features {data_args.feature_streams})"
