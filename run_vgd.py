#!/usr/bin/env python
"""Fine-tune, evaluate and share VGD-GPT2 on AVSD (or on the embedded synthetic task).

    python run_vgd.py                                   # the embedded demo: offline, CPU, a few minutes
    python run_vgd.py --max_steps 3                     # a smoke run of the same
    accelerate launch run_vgd.py --model_name_or_path gpt2 --data_dir data/avsd --do_train --do_eval --do_predict ...
    python run_vgd.py configs/vgd_gpt2_small.yaml       # every argument from a JSON / YAML file

Without `--data_dir` the embedded synthetic dataset is generated (cached) and, without
`--model_name_or_path`, a small GPT-2-shaped model with a tokenizer trained on that data is built offline.
Without any of `--do_train / --do_eval / --do_predict`, all three run.

The output folder holds the model, its card (README.md), metrics and predictions. A run refuses a folder that holds
another run's results (`--overwrite_output_dir` replaces them, `--resume_from_checkpoint last` continues them), checks
that the folder is writable and has room before the first step, and after any failure leaves the newest trained
state on disk (in a rescue folder if the output folder is the problem), saying where.
"""

from __future__ import annotations

import os

# OpenMP threads that wait for work sleep instead of spinning: a spinning thread on a busy machine steals the core
# the other threads need (a 2-thread step took 4x longer next to one busy process). Must precede the torch import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import hashlib
import json
import logging
import random
import shutil
import sys
from dataclasses import dataclass, field, fields

import datasets
import torch
import transformers
from transformers import AutoConfig, HfArgumentParser, set_seed

from avsd_dataset.features import VideoFeatureStore, VideoFeatureValidationError, parse_feature_streams
from checkpointing_vgd import (
    RUN_INFO_NAME,
    check_output_dir_writable,
    new_run_id,
    read_run_info,
    remove_results,
    results_in_folder,
    write_json_atomic,
)
from modeling_vgd_gpt2 import VGDGPT2ForDialogue
from processing_vgd import DataCollatorForVGD, VGDProcessor
from trainer_vgd import DialogueTurnDataset, TrainingDivergedError, VGDTrainer, VGDTrainingArguments, avsd_caption_metrics

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
    "num_train_epochs": 8,
    "logging_steps": 100,
    "save_strategy": "no",
    "eval_strategy": "no",
    "report_to": "none",
    "generation_num_beams": 3,
    "generation_max_new_tokens": 12,
    "eval_max_generation_examples": 64,
    "caption_fields": "caption",
    "max_history_turns": 1,
    "dataloader_num_workers": 0,
    "use_cpu": not torch.cuda.is_available(),
    "seed": 0,
    "cpu_threads": 1,
}


def gpu_training_defaults() -> dict:
    """The fast path on a GPU, under any argument the user gives: bf16 where the card supports it, and
    dataloader workers to read the video features while the GPU computes."""
    defaults = {"dataloader_num_workers": min(4, os.cpu_count() or 1)}
    if torch.cuda.is_bf16_supported():
        defaults["bf16"] = True
    return defaults


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A plain GPT-2 checkpoint (gpt2, gpt2-medium or a folder: starts a new VGD-GPT2) or a VGD-GPT2 "
            "checkpoint (continues it). Default: a small GPT-2 built offline for the embedded demo."
        },
    )
    video_pooling: str = field(default="spatiotemporal", metadata={"help": "spatiotemporal | spatial | temporal (paper's ablation)."})
    max_video_frames: int = field(default=256, metadata={"help": "Frames kept per video (uniformly sampled when longer)."})
    max_video_regions: int = field(default=64, metadata={"help": "Rows of the spatial-position encoding."})
    use_mlm: bool = field(default=True, metadata={"help": "Masked language modelling objective (--no_use_mlm or --use_mlm false: off)."})
    use_mvm: bool = field(default=True, metadata={"help": "Masked visual modelling objective (--no_use_mvm or --use_mvm false: off)."})
    use_mvt: bool = field(default=True, metadata={"help": "Video-text matching objective (--no_use_mvt or --use_mvt false: off)."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Fraction of context tokens masked for MLM."})
    mvm_probability: float = field(default=0.15, metadata={"help": "Fraction of video regions masked for MVM."})
    mvt_probability: float = field(default=0.15, metadata={"help": "Fraction of examples given another example's video."})
    demo_n_layer: int = field(default=2, metadata={"help": "Layers of the demo's offline GPT-2 (no --model_name_or_path)."})
    demo_n_embd: int = field(default=128, metadata={"help": "Width of the demo's offline GPT-2."})
    demo_n_head: int = field(default=4, metadata={"help": "Attention heads of the demo's offline GPT-2."})
    demo_vocab_size: int = field(default=600, metadata={"help": "BPE vocabulary of the demo's offline tokenizer."})
    demo_dropout: float = field(default=0.0, metadata={"help": "Dropout of the demo's offline GPT-2 (short runs learn faster without)."})
    demo_activation: str = field(
        default="gelu_pytorch_tanh",
        metadata={"help": "MLP activation of the demo's offline GPT-2: gelu_pytorch_tanh (GPT-2's gelu_new tanh approximation as "
                  "one fused kernel; 200 demo steps took 24.6 s against 25.4 s, one run each) or gelu_new (GPT-2's own)."},
    )


@dataclass
class DataArguments:
    data_dir: str | None = field(
        default=None, metadata={"help": "Folder of the AVSD JSON files. Default: the embedded synthetic dataset."}
    )
    feature_dir: str | None = field(
        default=None, metadata={"help": "Folder holding <stream>/<image_id>.npy (and <stream>_testset/). Default: <data_dir>/features."}
    )
    feature_streams: str = field(default="i3d_rgb,i3d_flow,vggish", metadata={"help": "Comma-separated feature streams, concatenated in this order."})
    dataset_config: str = field(default="dstc7", metadata={"help": "dstc7 or dstc8 (file names of the test split)."})
    train_file: str | None = field(default=None, metadata={"help": "Override the training JSON name."})
    validation_file: str | None = field(default=None, metadata={"help": "Override the validation JSON name."})
    test_file: str | None = field(default=None, metadata={"help": "Override the test JSON name."})
    test_reference_file: str | None = field(default=None, metadata={"help": "Override the multi-reference JSON name."})
    caption_fields: str = field(default="caption,summary", metadata={"help": "Text fields that form the caption input."})
    max_history_turns: int | None = field(default=None, metadata={"help": "Keep at most this many history turns (default: all that fit)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training split (debugging)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the validation split."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Truncate the test split."})
    skip_missing_features: bool = field(default=False, metadata={"help": "Drop turns whose video has no feature file (counted and logged) instead of failing."})
    cache_dir: str | None = field(default=None, metadata={"help": "datasets cache folder."})
    demo_num_train_dialogs: int = field(default=1500, metadata={"help": "Size of the synthetic training split (demo)."})
    demo_num_valid_dialogs: int = field(default=100, metadata={"help": "Size of the synthetic validation split (demo)."})
    demo_num_test_dialogs: int = field(default=192, metadata={"help": "Size of the synthetic test split (demo)."})
    demo_noise: float = field(default=1.0, metadata={"help": "Feature noise of the synthetic videos (demo)."})
    demo_seed: int = field(default=0, metadata={"help": "Seed of the synthetic dataset (demo)."})


# ---------------------------------------------------------------------------------------------- arguments


HELP_DESCRIPTION = """Fine-tune, evaluate and share VGD-GPT2 on AVSD, or run the embedded demo.

  python run_vgd.py                         the embedded demo (synthetic data, a small model trained from scratch, CPU)
  python run_vgd.py --max_steps 3           a smoke run of the demo (into outputs/smoke)
  python run_vgd.py CONFIG.yaml             every argument from a JSON / YAML file
  accelerate launch run_vgd.py --model_name_or_path gpt2 --data_dir data/avsd --output_dir outputs/vgd-s ...

Our own arguments come first (model, data, VGD-GPT2 training); the transformers TrainingArguments follow.
Without --data_dir (the demo) these defaults change: {demo_defaults}."""


def demo_output_dir(argv: list[str]) -> str:
    """The demo's output folder: outputs/demo, or outputs/smoke for a run shortened with --max_steps."""
    shortened = any(arg == "--max_steps" or arg.startswith("--max_steps=") for arg in argv)
    return SMOKE_OUTPUT_DIR if shortened else DEMO_OUTPUT_DIR


def build_parser() -> HfArgumentParser:
    """The argument parser, with `--help` grouped: our model, data and training arguments before the Trainer's."""
    demo_defaults = ", ".join(f"--{key} {value}" for key, value in DEMO_TRAINING_DEFAULTS.items() if key != "output_dir")
    parser = HfArgumentParser(
        (ModelArguments, DataArguments, VGDTrainingArguments),
        description=HELP_DESCRIPTION.format(demo_defaults=f"--output_dir {DEMO_OUTPUT_DIR} ({SMOKE_OUTPUT_DIR} with --max_steps), {demo_defaults}"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="python run_vgd.py [CONFIG.json|CONFIG.yaml] | [--argument value ...]",
    )
    own_training = set(VGDTrainingArguments.__annotations__)
    groups = [
        (parser.add_argument_group("VGD-GPT2 model"), {f.name for f in fields(ModelArguments)}),
        (parser.add_argument_group("Data (AVSD or the embedded demo)"), {f.name for f in fields(DataArguments)}),
        (parser.add_argument_group("VGD-GPT2 training (our defaults: the paper's)"), own_training),
        (parser.add_argument_group("transformers TrainingArguments (see the Trainer documentation)"), None),
    ]
    options = parser._optionals
    for action in list(options._group_actions):
        if action.dest == "help":
            continue
        if any(option.startswith("--no_") or option.startswith("--no-") for option in action.option_strings):
            action.help = f"Switch off --{action.dest} (the same as --{action.dest} false)."
        if action.dest in DEMO_TRAINING_DEFAULTS and action.help and not any(option.startswith("--no") for option in action.option_strings):
            action.help = f"{action.help} [demo: {DEMO_TRAINING_DEFAULTS[action.dest] if action.dest != 'output_dir' else DEMO_OUTPUT_DIR}]"
        group = next(group for group, names in groups if names is None or action.dest in names)
        options._group_actions.remove(action)
        group._group_actions.append(action)
    return parser


def parse_arguments(argv: list[str]):
    """Model / data / training arguments from the command line or from one JSON / YAML file. Runs without
    `--data_dir` get the demo's training defaults underneath whatever was given."""
    parser = build_parser()
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        path = os.path.abspath(argv[0])
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                values = json.load(f)
        else:
            import yaml

            with open(path, encoding="utf-8") as f:
                values = yaml.safe_load(f)
        if not values.get("data_dir"):
            values = {**DEMO_TRAINING_DEFAULTS, "output_dir": demo_output_dir([f"--{key}" for key in values]), **values}
        return parser.parse_dict(values)
    defaults = {}
    if torch.cuda.is_available():
        defaults.update(gpu_training_defaults())
    if "--data_dir" not in argv and not any(arg.startswith("--data_dir=") for arg in argv):
        defaults.update(DEMO_TRAINING_DEFAULTS, output_dir=demo_output_dir(argv))
    prefix = []
    for key, value in defaults.items():
        prefix += [f"--{key}", str(value)]
    argv = prefix + list(argv)
    return parser.parse_args_into_dataclasses(args=argv)


def apply_total_train_batch_size(training_args: VGDTrainingArguments) -> None:
    """With --total_train_batch_size N: per-device batch x processes x accumulation = N on any number of
    processes. The per-device batch is the largest divisor of N / processes not above
    --per_device_train_batch_size (the memory cap); the rest is gradient accumulation."""
    total = training_args.total_train_batch_size
    if not total:
        return
    world_size = training_args.world_size
    if total % world_size:
        raise ValueError(f"--total_train_batch_size {total} is not divisible by the {world_size} processes of this run")
    per_process = total // world_size
    per_device = min(training_args.per_device_train_batch_size, per_process)
    while per_process % per_device:
        per_device -= 1
    training_args.per_device_train_batch_size = per_device
    training_args.gradient_accumulation_steps = per_process // per_device
    logger.warning(
        "Global batch %d = %d per device x %d processes x %d gradient accumulation steps",
        total, per_device, world_size, training_args.gradient_accumulation_steps,
    )


# ---------------------------------------------------------------------------------------------- data


def demo_cache_dir(data_args: DataArguments, output_dir: str) -> str:
    """Where the demo keeps its synthetic dataset and scratch backbone, outside the model folder: --cache_dir, else
    `demo-cache` beside the output folder (outputs/demo-cache for outputs/demo)."""
    if data_args.cache_dir:
        return os.path.join(data_args.cache_dir, "vgd-demo")
    return os.path.join(os.path.dirname(os.path.abspath(output_dir)), "demo-cache")


def _short_hash(values) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:10]


def _link_latest(link: str, target: str) -> None:
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


def prepare_demo_data(data_args: DataArguments, model_args: ModelArguments, output_dir: str, main_process: bool):
    """Generate (or reuse) the embedded synthetic dataset and, without --model_name_or_path, an offline GPT-2, in a
    cache folder named by their settings (`demo_cache_dir`): the output folder holds the trained model only."""
    from avsd_dataset.offline_gpt2 import build_offline_gpt2
    from avsd_dataset.synthetic import corpus_texts, generate_synthetic_avsd

    data_settings = {
        "train": data_args.demo_num_train_dialogs, "valid": data_args.demo_num_valid_dialogs,
        "test": data_args.demo_num_test_dialogs, "noise": data_args.demo_noise, "seed": data_args.demo_seed,
    }
    cache = demo_cache_dir(data_args, output_dir)
    data_dir = os.path.join(cache, f"data-{_short_hash(data_settings)}")
    info = generate_synthetic_avsd(
        data_dir,
        num_train_dialogs=data_args.demo_num_train_dialogs,
        num_valid_dialogs=data_args.demo_num_valid_dialogs,
        num_test_dialogs=data_args.demo_num_test_dialogs,
        noise=data_args.demo_noise,
        seed=data_args.demo_seed,
    )
    logger.info("Synthetic AVSD data in %s (%s)", data_dir, "generated" if info.regenerated else "cached")
    if main_process:
        _link_latest(os.path.join(cache, "data"), data_dir)
    data_args.data_dir = data_dir
    data_args.feature_dir = info.feature_root
    data_args.feature_streams = ",".join(info.config.streams)
    if model_args.model_name_or_path is None:
        shape = dict(
            vocab_size=model_args.demo_vocab_size, n_positions=256, n_embd=model_args.demo_n_embd,
            n_layer=model_args.demo_n_layer, n_head=model_args.demo_n_head, dropout=model_args.demo_dropout,
            activation_function=model_args.demo_activation,
        )
        gpt2_dir = os.path.join(cache, f"offline-gpt2-{_short_hash({**shape, 'data': data_settings})}")
        if not os.path.isfile(os.path.join(gpt2_dir, "model.safetensors")):
            staging = f"{gpt2_dir}.tmp-{os.getpid()}"
            build_offline_gpt2(corpus_texts(data_dir, splits=("train",)), staging, **shape)
            if os.path.isdir(gpt2_dir):
                shutil.rmtree(gpt2_dir)
            os.replace(staging, gpt2_dir)
        if main_process:
            _link_latest(os.path.join(cache, "offline-gpt2"), gpt2_dir)
        model_args.model_name_or_path = gpt2_dir
    return info


def load_splits(data_args: DataArguments):
    """The AVSD splits (prepared once, then read from the datasets cache) and the path of the test JSON."""
    from avsd_dataset.avsd import AVSD

    overrides = {
        key: getattr(data_args, key)
        for key in ("train_file", "validation_file", "test_file", "test_reference_file")
        if getattr(data_args, key) is not None
    }
    builder = AVSD(data_dir=data_args.data_dir, cache_dir=data_args.cache_dir, config_name=data_args.dataset_config, **overrides)
    builder.download_and_prepare()
    splits = builder.as_dataset()
    for name, limit in (("train", data_args.max_train_samples), ("validation", data_args.max_eval_samples), ("test", data_args.max_predict_samples)):
        if name in splits and limit is not None:
            splits[name] = splits[name].select(range(min(limit, len(splits[name]))))
    return splits, builder.config.resolve_file(builder.config.test_file)


def feature_stores(data_args: DataArguments, splits, names: list[str]) -> dict[str, VideoFeatureStore]:
    """One feature store per split, every needed file checked up front (headers, dtypes, values), so a long run never
    dies on a missing or malformed file. With --skip_missing_features the turns of videos without features
    are dropped (and counted) instead."""
    streams = parse_feature_streams(data_args.feature_streams)
    root = data_args.feature_dir or os.path.join(data_args.data_dir, "features")
    stores = {}
    for name in names:
        store = VideoFeatureStore(root, streams=streams, split=name, skip_missing_features=data_args.skip_missing_features)
        ids = sorted(set(splits[name]["image_id"]))
        problems = store.check(ids)  # one pass: headers, dtypes and values
        if problems and not data_args.skip_missing_features:
            raise VideoFeatureValidationError(problems, len(ids), root)
        missing = {problem.image_id for problem in problems}
        if missing:
            logger.warning("%s: dropping the turns of %d videos whose features are missing or unreadable", name, len(missing))
            splits[name] = splits[name].filter(lambda image_id: image_id not in missing, input_columns="image_id")
        stores[name] = store
    return stores


def video_token_counts(store: VideoFeatureStore, image_ids, processor) -> dict[str, int]:
    """Video tokens per video (frames x regions after alignment, frame cap and pooling), from the .npy
    headers only: the length estimate of length-grouped batching."""
    from avsd_dataset.features import read_npy_header

    extractor = processor.feature_extractor
    counts = {}
    for image_id in set(image_ids):
        shapes = [read_npy_header(store.feature_path(image_id, stream))[0] for stream in store.streams]
        frames = min(min(shape[0] for shape in shapes), extractor.max_video_frames)
        regions = max((shape[1] for shape in shapes if len(shape) == 3), default=1)
        if extractor.video_pooling == "spatial":
            frames = 1
        elif extractor.video_pooling == "temporal":
            regions = 1
        counts[image_id] = frames * regions
    return counts


# ---------------------------------------------------------------------------------------------- model


def is_vgd_checkpoint(path: str) -> bool:
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=True).model_type == "vgd_gpt2"
    except (OSError, ValueError):
        return False


def recorded_video_backbone(data_args: DataArguments) -> dict | None:
    """The backbone that wrote the features (the `backbone.json` of `python -m avsd_dataset.extract_features`), when
    the model reads one such stream alone: the model and processor then record it, so that the trained model answers
    from video files (`processor(videos=...)`, the pipeline, the chat) with the features it was trained on."""
    from avsd_dataset.extract_features import BACKBONE_FILE
    from video_backbone_vgd import same_backbone

    root = data_args.feature_dir or os.path.join(data_args.data_dir, "features")
    streams = parse_feature_streams(data_args.feature_streams)
    specs = {}
    for stream in streams:
        for folder in (stream, stream + "_testset"):
            path = os.path.join(root, folder, BACKBONE_FILE)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    specs.setdefault(stream, []).append((path, json.load(f)))
    if not specs:
        return None
    if len(streams) > 1:
        logger.warning("features of %s come from a video backbone but are combined with other streams: the model "
                       "takes pre-extracted features only (train on the backbone's stream alone to answer from video files)", ", ".join(specs))
        return None
    (first_path, spec), *others = specs[streams[0]]
    for path, other in others:
        if not same_backbone(spec, other):
            raise ValueError(f"{first_path} and {path} record different video backbones: extract both splits with the same settings")
    return spec


def load_processor_and_model(model_args: ModelArguments, video_feature_dim: int, stream_order, data_args: DataArguments):
    path = model_args.model_name_or_path
    if is_vgd_checkpoint(path):
        logger.info("Continuing from the VGD-GPT2 checkpoint %s", path)
        processor = VGDProcessor.from_pretrained(path)
        model = VGDGPT2ForDialogue.from_pretrained(path)
        if model.config.video_feature_dim != video_feature_dim:
            raise ValueError(f"{path} expects video features of dim {model.config.video_feature_dim}, the data has {video_feature_dim}")
    else:
        logger.info("Starting VGD-GPT2 from the plain GPT-2 checkpoint %s", path)
        video_backbone = recorded_video_backbone(data_args)
        if video_backbone is not None:
            logger.info("The features come from the video backbone %s: the model records it and answers from video files", video_backbone["name"])
        processor = VGDProcessor.from_gpt2_pretrained(
            path,
            video_feature_dim=video_feature_dim,
            video_backbone=video_backbone,
            max_video_frames=model_args.max_video_frames,
            video_pooling=model_args.video_pooling,
            stream_order=list(stream_order),
            max_history_turns=data_args.max_history_turns,
        )
        model = VGDGPT2ForDialogue.from_gpt2_pretrained(
            path,
            processor=processor,
            max_video_regions=model_args.max_video_regions,
            use_mlm=model_args.use_mlm,
            use_mvm=model_args.use_mvm,
            use_mvt=model_args.use_mvt,
        )
    return processor, model


# ---------------------------------------------------------------------------------------------- predictions


def write_result_file(test_json_path: str, test_split, predictions: list[str], output_path: str):
    """The official DSTC7 result format: the test JSON with the last (undisclosed) answer of each predicted
    dialogue filled in; dialogues are matched by image_id and turn."""
    with open(test_json_path, encoding="utf-8") as f:
        result = json.load(f)
    predicted = {(image_id, turn): text for image_id, turn, text in zip(test_split["image_id"], test_split["turn"], predictions)}
    dialogs = []
    for dialog in result["dialogs"]:
        key = (dialog["image_id"], len(dialog["dialog"]) - 1)
        if key in predicted:
            dialog["dialog"][-1]["answer"] = predicted[key]
            dialogs.append(dialog)
    result["dialogs"] = dialogs
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    with open(output_path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    return output_path


def shuffled_videos(split, seed: int):
    """A copy of `split` whose dialogues are each paired with another dialogue's video (a derangement)."""
    ids = list(split["image_id"])
    rng = random.Random(seed)
    order = list(range(len(ids)))
    while len(ids) > 1:
        rng.shuffle(order)
        if all(ids[i] != ids[j] for i, j in enumerate(order)):
            break
    shuffled = [ids[j] for j in order]
    return split.remove_columns("image_id").add_column("image_id", shuffled)


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


# ---------------------------------------------------------------------------------------------- output folder


def prepare_output_dir(training_args, model_args: ModelArguments, demo: bool) -> str | None:
    """Claim the output folder for this run (main process) and return the run id.

    A folder that holds another run's results is refused, unless `--overwrite_output_dir` (its results are deleted),
    `--resume_from_checkpoint` (the run continues: same run id), a demo run replaces an earlier demo run in the demo's
    own folder (outputs/demo, outputs/smoke), or the run only evaluates the model saved in that folder."""
    output_dir = training_args.output_dir
    previous = read_run_info(output_dir)
    if training_args.do_train and training_args.resume_from_checkpoint:
        return (previous or {}).get("run_id")  # None: the run of the checkpoint resumed from
    found = results_in_folder(output_dir)
    evaluates_own_model = not training_args.do_train and model_args.model_name_or_path and os.path.abspath(model_args.model_name_or_path) == os.path.abspath(output_dir)
    if found and not evaluates_own_model:
        # the demo's own folders (no --output_dir given) take a new demo run's results
        replaceable_demo = demo and (previous or {}).get("demo") and os.path.normpath(output_dir) in (DEMO_OUTPUT_DIR, SMOKE_OUTPUT_DIR)
        if not (training_args.overwrite_output_dir or replaceable_demo):
            shown = ", ".join(found[:6]) + (f" and {len(found) - 6} more" if len(found) > 6 else "")
            raise FileExistsError(
                f"the output folder {output_dir} holds the results of another run ({shown}). Pass --overwrite_output_dir "
                "to replace them, --resume_from_checkpoint last to continue that run from its newest checkpoint, or "
                "choose another --output_dir."
            )
        logger.info("Replacing the results of the earlier %srun in %s: %s", "demo " if replaceable_demo else "", output_dir, ", ".join(found))
        remove_results(output_dir, found)
    run_id = new_run_id()
    check_output_dir_writable(output_dir, needed_bytes=0)  # room for the model is checked once it is built
    write_json_atomic(
        os.path.join(output_dir, RUN_INFO_NAME),
        {"run_id": run_id, "demo": demo, "command": sys.argv[:1] + list(training_args._run_vgd_argv)},
    )
    return run_id


def bytes_needed_on_disk(model, training_args) -> int:
    """About what a run writes: the final model, and per kept checkpoint the model plus AdamW's two moments."""
    parameter_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    checkpoints = 0
    if training_args.do_train and training_args.save_strategy != "no":
        checkpoints = training_args.save_total_limit or 2
    elif training_args.do_train:
        checkpoints = 1  # the emergency checkpoint after a failure
    return parameter_bytes * (1 + 3 * checkpoints) + 32 * 2**20


def check_distributed_launch(training_args) -> None:
    """A launch of N processes that the Trainer does not see as one N-process run would train N separate models
    into the same folder (e.g. a GPU config on a machine without GPUs and without --use_cpu)."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and training_args.world_size != launched:
        raise RuntimeError(
            f"launched as {launched} processes, but the Trainer sees a {training_args.world_size}-process run "
            f"(device {training_args.device}): the processes would train separately. On a machine without GPUs, pass --use_cpu true."
        )
    ignored = [name for name, variable in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED")) if os.environ.get(variable) == "true"]
    if ignored and training_args.device.type == "cpu" and training_args.process_index == 0:
        logger.warning("The %s settings of the accelerate config are not used on the CPU: accelerate runs plain DDP there.", ignored[0])


def configure_cpu_threads(training_args) -> None:
    """Intra-op threads of torch on the CPU: `--cpu_threads` when given (the demo: 1)."""
    if training_args.cpu_threads is not None and training_args.device.type == "cpu":
        torch.set_num_threads(max(1, int(training_args.cpu_threads)))


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def keep_freed_memory_for_reuse(training_args) -> bool:
    """On a CPU, let glibc keep freed memory for the next step instead of returning it to the system.

    Every training step allocates and frees the same activation buffers (a few MB each). With glibc's defaults
    the larger ones are mmap-ed and unmapped, and the top of the heap is trimmed, at every step, so each step
    page-faults its memory in again: 19 million faults and ~15% of the demo's time in the kernel. With the mmap
    threshold at its maximum (32 MiB) and no trimming, the demo trains ~1.2x faster (`MALLOC_*` variables
    that the user set win; other C libraries are left alone). The process keeps its peak memory until it ends.
    """
    if training_args.device.type != "cpu" or sys.platform != "linux" or any(key.startswith("MALLOC_") for key in os.environ):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(
        mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024) and mallopt(_M_TRIM_THRESHOLD, 2**30) and mallopt(_M_TOP_PAD, 64 * 1024 * 1024)
    )


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else argv
    model_args, data_args, training_args = parse_arguments(argv)
    training_args._run_vgd_argv = list(argv)
    demo = data_args.data_dir is None
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        training_args.do_train = training_args.do_eval = training_args.do_predict = True

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S", handlers=[logging.StreamHandler(sys.stdout)]
    )
    log_level = training_args.get_process_log_level()
    # our own status lines are INFO on the main process (the libraries keep their own level)
    own_level = min(log_level, logging.INFO) if training_args.should_log and training_args.log_level == "passive" else log_level
    for log in (logger, logging.getLogger("trainer_vgd"), logging.getLogger("modeling_vgd_gpt2"), logging.getLogger("processing_vgd")):
        log.setLevel(own_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.disable_progress_bar()  # no bars for writing / loading a model of a few MB
    datasets.utils.logging.disable_progress_bar()
    configure_cpu_threads(training_args)
    keep_freed_memory_for_reuse(training_args)
    set_seed(training_args.seed)
    check_distributed_launch(training_args)
    apply_total_train_batch_size(training_args)

    main_process = training_args.process_index == 0
    run_id = None
    with training_args.main_process_first(desc="output folder"):
        if main_process:
            run_id = prepare_output_dir(training_args, model_args, demo)
    if training_args.world_size > 1:
        from accelerate.utils import broadcast_object_list

        run_id = broadcast_object_list([run_id])[0]
    if demo:
        with training_args.main_process_first(desc="synthetic data"):
            prepare_demo_data(data_args, model_args, training_args.output_dir, main_process)

    # ------------------------------------------------------------------ data
    with training_args.main_process_first(desc="AVSD splits"):
        splits, test_json_path = load_splits(data_args)
    for name, flag in (("train", "do_train"), ("test", "do_predict")):
        if getattr(training_args, flag) and name not in splits:
            raise ValueError(f"--{flag} needs the {name} split, but {data_args.data_dir} has no {name} file")
    needed = [name for name, flag in (("train", "do_train"), ("validation", "do_eval"), ("test", "do_predict")) if getattr(training_args, flag) and name in splits]
    if not needed:
        raise ValueError(f"nothing to do: {data_args.data_dir} holds none of the splits that the --do_* flags ask for")
    stores = feature_stores(data_args, splits, needed)
    streams = parse_feature_streams(data_args.feature_streams)
    stream_dims = stores[needed[0]].feature_dims()
    video_feature_dim = sum(stream_dims[stream] for stream in streams)

    # ------------------------------------------------------------------ model
    set_seed(training_args.seed)  # the new layers' initialisation does not depend on what ran before (e.g. a cache miss)
    processor, model = load_processor_and_model(model_args, video_feature_dim, streams, data_args)
    caption_fields = [name.strip() for name in data_args.caption_fields.split(",") if name.strip()]
    collator = DataCollatorForVGD(
        processor,
        mlm_probability=model_args.mlm_probability if model.config.use_mlm else 0.0,
        mvm_probability=model_args.mvm_probability if model.config.use_mvm else 0.0,
        mvt_probability=model_args.mvt_probability if model.config.use_mvt else 0.0,
        seed=training_args.seed,
    )
    if training_args.ddp_find_unused_parameters is None:
        # a switched-off objective leaves its head without gradients
        training_args.ddp_find_unused_parameters = not (model.config.use_mlm and model.config.use_mvm and model.config.use_mvt)

    video_lengths = {}  # per split, read once from the .npy headers

    def turns(name, for_generation=False):
        if name not in video_lengths:
            video_lengths[name] = video_token_counts(stores[name], splits[name]["image_id"], processor)
        return DialogueTurnDataset(splits[name], stores[name], processor, caption_fields, for_generation=for_generation, video_lengths=video_lengths[name])

    train_dataset = turns("train") if training_args.do_train else None
    eval_dataset = turns("validation") if "validation" in splits and training_args.do_eval else None
    eval_generation_dataset = turns("validation", for_generation=True) if eval_dataset is not None else None

    trainer = VGDTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=processor,
        eval_generation_dataset=eval_generation_dataset,
        run_id=run_id,
    )
    if main_process:
        check_output_dir_writable(training_args.output_dir, bytes_needed_on_disk(model, training_args))
    written = {}  # what this run wrote where, for the closing lines

    # ------------------------------------------------------------------ train
    if training_args.do_train:
        try:
            train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        except BaseException as error:
            if training_args.world_size == 1 and trainer.state.global_step > 0 and not isinstance(error, TrainingDivergedError):
                where = trainer.save_emergency_checkpoint()
                note = (
                    f"Training stopped at step {trainer.state.global_step}; "
                    + (f"the trained state of that step is saved in {where} (continue with --resume_from_checkpoint {where})" if where else "no folder could take a checkpoint")
                )
                logger.error("%s (%s: %s)", note, type(error).__name__, error)
                error.add_note(note)  # printed under the traceback
            raise
        logger.info("process %d of %d trained %d step(s)", training_args.process_index, training_args.world_size, trainer.state.global_step)
        # the trained model is on disk before any evaluation, prediction or push (in a rescue folder if need be)
        written["model"] = trainer.save_model_or_rescue()
        metrics = train_result.metrics
        metrics["train_samples"] = len(train_dataset)
        metrics["truncation"] = dict(processor.truncation_stats.as_dict()) if hasattr(processor.truncation_stats, "as_dict") else None
        trainer.log_metrics("train", {k: v for k, v in metrics.items() if not isinstance(v, dict)})
        trainer.save_metrics("train", {k: v for k, v in metrics.items() if not isinstance(v, dict)})
        trainer.save_state()
        if trainer.is_world_process_zero():
            trainer.create_model_card(dataset=describe_data(data_args, demo))

    try:
        all_metrics = evaluate_predict_and_share(
            trainer, training_args, data_args, splits, stores, processor, caption_fields, test_json_path, eval_dataset, turns, demo, written
        )
    except BaseException:
        if "model" in written:
            logger.error("The run failed after training; the trained model is saved in %s", written["model"])
        raise
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # every process finishes together and closes its process group (no aborts at interpreter exit)
        trainer.accelerator.wait_for_everyone()
        torch.distributed.destroy_process_group()
    if trainer.is_world_process_zero():
        report_outputs(written)
    return all_metrics


def describe_data(data_args: DataArguments, demo: bool) -> str:
    if demo:
        return (
            f"the embedded synthetic AVSD-format task ({data_args.demo_num_train_dialogs} training dialogues, noise "
            f"{data_args.demo_noise}, seed {data_args.demo_seed}), generated by avsd_dataset.synthetic"
        )
    return f"AVSD ({data_args.dataset_config} files in {data_args.data_dir}; features {data_args.feature_streams})"


def report_outputs(written: dict) -> None:
    """The closing lines: where the model, metrics and predictions were written."""
    labels = {"model": "model (load with from_pretrained)", "predictions": "predictions (official result format)"}
    lines = [f"  {labels.get(key, key):<36} {os.path.abspath(path)}" for key, path in written.items()]
    if lines:
        print("Written:\n" + "\n".join(lines))


def evaluate_predict_and_share(trainer, training_args, data_args, splits, stores, processor, caption_fields, test_json_path, eval_dataset, turns, demo, written):
    all_metrics = {}
    # ------------------------------------------------------------------ evaluate
    if training_args.do_eval and eval_dataset is not None:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        written["eval metrics"] = os.path.join(training_args.output_dir, "eval_results.json")
        # video-text matching on held-out pairs (validation dialogues with their own / another video)
        all_metrics.update({name[len("eval_") :]: value for name, value in metrics.items() if name.startswith("eval_matching_")})

    # ------------------------------------------------------------------ predict
    if training_args.do_predict:
        test_generation = turns("test", for_generation=True)
        predictions = trainer.generate_responses(test_generation, description="Decoding the test split")
        if trainer.is_world_process_zero():
            written["predictions"] = write_result_file(test_json_path, splits["test"], predictions, os.path.join(training_args.output_dir, "test_result.json"))
            empty = sum(1 for text in predictions if not text.strip())
            if empty:
                logger.warning("%d of %d generated answers are empty (scored as empty, as the official package does)", empty, len(predictions))
            if all(splits["test"]["references"]):
                # The official DSTC7 protocol on the predicted turns: stopword filter on the hypotheses, then the
                # PTB tokenizer and the four scorers against the multi-reference file's references, in file order.
                from avsd_dataset.score import filter_stopwords

                references = [list(refs) for refs in splits["test"]["references"]]
                all_metrics.update(avsd_caption_metrics([filter_stopwords(text) for text in predictions], references))
        if demo:
            from avsd_dataset.synthetic import answer_accuracy, load_ground_truth

            ground_truth = load_ground_truth(data_args.data_dir)["test"][: len(predictions)]
            accuracy = answer_accuracy(predictions, ground_truth)
            shuffled = DialogueTurnDataset(shuffled_videos(splits["test"], training_args.seed), stores["test"], processor, caption_fields, for_generation=True)
            shuffled_predictions = trainer.generate_responses(shuffled, description="Decoding with shuffled videos (control)")
            all_metrics.update(
                answer_accuracy=accuracy["accuracy"],
                answer_accuracy_shuffled_video=answer_accuracy(shuffled_predictions, ground_truth)["accuracy"],
                answer_accuracy_chance=accuracy["chance"],
            )
        if trainer.is_world_process_zero():
            written["test metrics"] = os.path.join(training_args.output_dir, "metrics.json")
            write_json_atomic(written["test metrics"], all_metrics)
            if demo:
                print_demo_table(all_metrics, f"test metrics ({len(predictions)} turns)")
            else:
                trainer.log_metrics("test", all_metrics)

    # ------------------------------------------------------------------ model card, share
    if trainer.is_world_process_zero() and (training_args.do_train or "model" in written):
        trainer.create_model_card(test_metrics=all_metrics, dataset=describe_data(data_args, demo))
    if training_args.push_to_hub:
        try:
            trainer.push_to_hub(commit_message="VGD-GPT2 fine-tuned with run_vgd.py", test_metrics=all_metrics, dataset=describe_data(data_args, demo))
        except Exception:
            logger.exception("Pushing to the Hub failed; the trained model is kept in %s", training_args.output_dir)
            raise
    return all_metrics


if __name__ == "__main__":
    main()
