#!/usr/bin/env python
"""Fine-tune, evaluate and share VGD-GPT2 on AVSD (or on the embedded synthetic task).

    python run_vgd.py                                   # the embedded demo: offline, CPU, a few minutes
    python run_vgd.py --max_steps 3                     # a smoke run of the same
    accelerate launch run_vgd.py --model_name_or_path gpt2 --data_dir data/avsd --do_train --do_eval --do_predict ...
    python run_vgd.py configs/vgd_gpt2_small.yaml       # every argument from a JSON / YAML file

Without `--data_dir` the embedded synthetic dataset is generated (cached) and, without
`--model_name_or_path`, a small GPT-2-shaped model with a tokenizer trained on that data is built offline.
Without any of `--do_train / --do_eval / --do_predict`, all three run.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
from dataclasses import dataclass, field

import datasets
import numpy as np
import torch
import transformers
from transformers import AutoConfig, HfArgumentParser, set_seed
from transformers.trainer_utils import get_last_checkpoint

from avsd_dataset.features import VideoFeatureStore, VideoFeatureValidationError, parse_feature_streams
from modeling_vgd_gpt2 import VGDGPT2ForDialogue
from processing_vgd import DataCollatorForVGD, VGDProcessor
from trainer_vgd import DialogueTurnDataset, VGDTrainer, VGDTrainingArguments, avsd_caption_metrics

logger = logging.getLogger(__name__)

DEMO_OUTPUT_DIR = os.path.join("outputs", "demo")

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
    "num_train_epochs": 6,
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
    use_mlm: bool = field(default=True, metadata={"help": "Train with masked language modelling."})
    use_mvm: bool = field(default=True, metadata={"help": "Train with masked visual modelling."})
    use_mvt: bool = field(default=True, metadata={"help": "Train with video-text matching."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Fraction of context tokens masked for MLM."})
    mvm_probability: float = field(default=0.15, metadata={"help": "Fraction of video regions masked for MVM."})
    mvt_probability: float = field(default=0.15, metadata={"help": "Fraction of examples given another example's video."})
    demo_n_layer: int = field(default=2, metadata={"help": "Layers of the demo's offline GPT-2 (no --model_name_or_path)."})
    demo_n_embd: int = field(default=128, metadata={"help": "Width of the demo's offline GPT-2."})
    demo_n_head: int = field(default=4, metadata={"help": "Attention heads of the demo's offline GPT-2."})
    demo_vocab_size: int = field(default=600, metadata={"help": "BPE vocabulary of the demo's offline tokenizer."})
    demo_dropout: float = field(default=0.0, metadata={"help": "Dropout of the demo's offline GPT-2 (short runs learn faster without)."})


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


def parse_arguments(argv: list[str]):
    """Model / data / training arguments from the command line or from one JSON / YAML file. Runs without
    `--data_dir` get the demo's training defaults underneath whatever was given."""
    parser = HfArgumentParser((ModelArguments, DataArguments, VGDTrainingArguments))
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
            values = {**DEMO_TRAINING_DEFAULTS, **values}
        return parser.parse_dict(values)
    defaults = {}
    if torch.cuda.is_available():
        defaults.update(gpu_training_defaults())
    if "--data_dir" not in argv and not any(arg.startswith("--data_dir=") for arg in argv):
        defaults.update(DEMO_TRAINING_DEFAULTS)
    prefix = []
    for key, value in defaults.items():
        prefix += [f"--{key}", str(value)]
    argv = prefix + list(argv)
    return parser.parse_args_into_dataclasses(args=argv)


# ---------------------------------------------------------------------------------------------- data


def prepare_demo_data(data_args: DataArguments, model_args: ModelArguments, output_dir: str, main_process: bool):
    """Generate (or reuse) the embedded synthetic dataset and, without --model_name_or_path, an offline GPT-2."""
    from avsd_dataset.offline_gpt2 import build_offline_gpt2
    from avsd_dataset.synthetic import corpus_texts, generate_synthetic_avsd

    data_dir = os.path.join(output_dir, "data")
    info = generate_synthetic_avsd(
        data_dir,
        num_train_dialogs=data_args.demo_num_train_dialogs,
        num_valid_dialogs=data_args.demo_num_valid_dialogs,
        num_test_dialogs=data_args.demo_num_test_dialogs,
        noise=data_args.demo_noise,
        seed=data_args.demo_seed,
    )
    logger.info("Synthetic AVSD data in %s (%s)", data_dir, "generated" if info.regenerated else "cached")
    data_args.data_dir = data_dir
    data_args.feature_dir = info.feature_root
    data_args.feature_streams = ",".join(info.config.streams)
    if model_args.model_name_or_path is None:
        gpt2_dir = os.path.join(output_dir, "offline-gpt2")
        build_offline_gpt2(
            corpus_texts(data_dir, splits=("train",)), gpt2_dir, vocab_size=model_args.demo_vocab_size,
            n_positions=256, n_embd=model_args.demo_n_embd, n_layer=model_args.demo_n_layer, n_head=model_args.demo_n_head,
            dropout=model_args.demo_dropout,
        )
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


def print_demo_table(metrics: dict):
    rows = [(name, metrics[name]) for name in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr") if name in metrics]
    rows += [
        ("answer accuracy (video)", metrics.get("answer_accuracy")),
        ("answer accuracy (shuffled video)", metrics.get("answer_accuracy_shuffled_video")),
        ("answer accuracy (chance)", metrics.get("answer_accuracy_chance")),
    ]
    width = max(len(name) for name, _ in rows)
    print("\n" + "-" * (width + 10))
    for name, value in rows:
        if value is not None:
            print(f"{name:<{width}}  {value:7.3f}")
    print("-" * (width + 10))


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else argv
    model_args, data_args, training_args = parse_arguments(argv)
    demo = data_args.data_dir is None
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        training_args.do_train = training_args.do_eval = training_args.do_predict = True

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S", handlers=[logging.StreamHandler(sys.stdout)]
    )
    log_level = training_args.get_process_log_level()
    for log in (logger, logging.getLogger("trainer_vgd"), logging.getLogger("modeling_vgd_gpt2"), logging.getLogger("processing_vgd")):
        log.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    set_seed(training_args.seed)

    main_process = training_args.process_index == 0
    if demo:
        with training_args.main_process_first(desc="synthetic data"):
            demo_info = prepare_demo_data(data_args, model_args, training_args.output_dir, main_process)

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
    )

    # ------------------------------------------------------------------ train
    if training_args.do_train:
        checkpoint = training_args.resume_from_checkpoint
        if isinstance(checkpoint, str) and checkpoint.lower() in ("true", "last"):
            checkpoint = get_last_checkpoint(training_args.output_dir)
            if checkpoint is None:
                raise ValueError(f"--resume_from_checkpoint {training_args.resume_from_checkpoint}: no checkpoint-* folder in {training_args.output_dir}")
            logger.info("Resuming from %s", checkpoint)
        try:
            train_result = trainer.train(resume_from_checkpoint=checkpoint)
        except BaseException:
            if training_args.world_size == 1 and trainer.state.global_step > 0:
                trainer._save_checkpoint(trainer.model, trial=None)
                logger.error("Training stopped at step %d; a checkpoint of that step is in %s", trainer.state.global_step, training_args.output_dir)
            raise
        logger.warning(
            "process %d of %d trained %d steps", training_args.process_index, training_args.world_size, trainer.state.global_step
        )
        trainer.save_model()  # the trained model is on disk before any evaluation, prediction or push
        metrics = train_result.metrics
        metrics["train_samples"] = len(train_dataset)
        metrics["truncation"] = dict(processor.truncation_stats.as_dict()) if hasattr(processor.truncation_stats, "as_dict") else None
        trainer.log_metrics("train", {k: v for k, v in metrics.items() if not isinstance(v, dict)})
        trainer.save_metrics("train", {k: v for k, v in metrics.items() if not isinstance(v, dict)})
        trainer.save_state()

    all_metrics = {}
    # ------------------------------------------------------------------ evaluate
    if training_args.do_eval and eval_dataset is not None:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)

    # ------------------------------------------------------------------ predict
    if training_args.do_predict:
        test_generation = turns("test", for_generation=True)
        predictions = trainer.generate_responses(test_generation, description="Decoding the test split")
        if trainer.is_world_process_zero():
            result_path = write_result_file(test_json_path, splits["test"], predictions, os.path.join(training_args.output_dir, "test_result.json"))
            logger.info("Predictions (official DSTC7 result format): %s", result_path)
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
            with open(os.path.join(training_args.output_dir, "metrics.json"), "w", encoding="utf-8") as f:
                json.dump(all_metrics, f, indent=2)
            if demo:
                print_demo_table(all_metrics)

    # ------------------------------------------------------------------ share
    if training_args.push_to_hub:
        try:
            trainer.push_to_hub(commit_message="VGD-GPT2 fine-tuned with run_vgd.py", test_metrics=all_metrics)
        except Exception:
            logger.exception("Pushing to the Hub failed; the trained model is kept in %s", training_args.output_dir)
            raise
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # every process finishes together and closes its process group (no aborts at interpreter exit)
        trainer.accelerator.wait_for_everyone()
        torch.distributed.destroy_process_group()
    return all_metrics


if __name__ == "__main__":
    main()
