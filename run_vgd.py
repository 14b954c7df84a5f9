#!/usr/bin/env python
"""Fine-tune, evaluate and share VGD-GPT2 on AVSD (or on the embedded synthetic task).

    python run_vgd.py                                   # the embedded demo: offline, CPU, a few minutes
    python run_vgd.py --max_steps 3                     # a smoke run of the same
    accelerate launch run_vgd.py --model_name_or_path gpt2 --data_dir data/avsd --do_train --do_eval --do_predict ...
    python run_vgd.py configs/vgd_gpt2_small.yaml       # every argument from a JSON / YAML file

Without `--data_dir` the embedded synthetic dataset is generated (cached) and, without `--model_name_or_path`, a small
GPT-2-shaped model with a tokenizer trained on that data is built offline (`avsd_dataset/demo.py`). Without any of
`--do_train / --do_eval / --do_predict`, all three run.

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
import json
import logging
import sys
from dataclasses import dataclass, field

import datasets
import torch
import transformers
from transformers import AutoConfig, HfArgumentParser, set_seed

from avsd_dataset.collator import DataCollatorForVGD
from vgd_training.hub_access import ModelSourceError, check_model_source
from avsd_dataset.demo import (
    DEMO_OUTPUT_DIR,
    DEMO_TRAINING_DEFAULTS,
    SMOKE_OUTPUT_DIR,
    DemoArguments,
    demo_output_dir,
    describe_data,
    evaluate_demo_answers,
    prepare_demo_data,
    print_demo_table,
    warn_if_demo_learning_rate_too_high,
)
from avsd_dataset.features import parse_feature_streams
from avsd_dataset.splits import (
    check_test_keys_unique,
    check_video_regions,
    drop_bad_examples,
    feature_stores,
    load_splits,
    recorded_video_backbone,
    video_token_counts,
    write_result_file,
)
from avsd_dataset.turns import CachedTurnDataset, DialogueTurnDataset, whole_dialogues
from configuration_vgd_gpt2 import VIDEO_FRAME_INIT_MODES, VIDEO_POOLING_MODES
from modeling_vgd_gpt2 import VGDGPT2ForDialogue
from processing_vgd import VGDProcessor
from vgd_training import TrainingDivergedError, VGDTrainer, VGDTrainingArguments, avsd_caption_metrics
from vgd_training.checkpointing import check_output_dir_writable, write_json_atomic
from vgd_training.output_folder import bytes_needed_on_disk, prepare_output_dir, release_output_dirs, replace_earlier_results, report_outputs
from vgd_training.signals import StopOnSignalCallback, stop_after_signal
from vgd_training.video_whitening import fit_model_video_whitening
from vgd_training.process import (
    StageTimes,
    apply_total_train_batch_size,
    check_distributed_launch,
    configure_cpu_threads,
    gpu_training_defaults,
    keep_freed_memory_for_reuse,
)

logger = logging.getLogger(__name__)


CAPTION_FIELDS = ("caption", "summary")  # the text fields of an AVSD dialogue that --caption_fields may name


@dataclass
class ModelArguments:
    """The model: the GPT-2 to start from (or a VGD-GPT2 checkpoint to continue), the video encoding and the objectives."""

    _argument_group_name = "VGD-GPT2 model"

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A plain GPT-2 checkpoint (gpt2, gpt2-medium or a folder: starts a new VGD-GPT2) or a VGD-GPT2 "
            "checkpoint (continues it). Default: a small GPT-2 built offline for the embedded demo."
        },
    )
    video_pooling: str = field(
        default="spatiotemporal",
        metadata={"help": "spatiotemporal | spatial | temporal (paper's ablation) | spatial_and_temporal (the region tokens "
                  "averaged over time, then the clip tokens averaged over space: P + F tokens)."},
    )
    max_video_frames: int = field(default=256, metadata={"help": "Frames kept per video (uniformly sampled when longer)."})
    max_video_regions: int = field(default=64, metadata={"help": "Rows of the spatial-position encoding."})
    use_mlm: bool = field(default=True, metadata={"help": "Masked language modelling objective (--no_use_mlm or --use_mlm false: off)."})
    use_mvm: bool = field(default=True, metadata={"help": "Masked visual modelling objective (--no_use_mvm or --use_mvm false: off)."})
    use_mvt: bool = field(default=True, metadata={"help": "Video-text matching objective (--no_use_mvt or --use_mvt false: off)."})
    video_frame_init_std: float | None = field(
        default=None,
        metadata={"help": "Std of the initial temporal encoding of a new model (default: GPT-2's initializer_range, 0.02); "
                  "the video demo uses 0.5 so that the clips can be told apart in time (VGDGPT2Config.video_frame_init_std)."},
    )
    video_frame_init: str = field(
        default="normal",
        metadata={"help": "How the temporal encoding of a new model starts: normal (at random, std --video_frame_init_std) or "
                  "sinusoidal (the sine / cosine table, its entries of that std; neighbouring frames start alike). The video "
                  "demo starts sinusoidal (VGDGPT2Config.video_frame_init, docs/video.md).",
                  "choices": list(VIDEO_FRAME_INIT_MODES)},
    )
    video_whitening_components: int | None = field(
        default=None,
        metadata={"help": "A new model reads its video features PCA-whitened, keeping this many components, fitted on the "
                  "training videos before step 1 (VGDGPT2Config.video_whitening_components; saved with the weights). Default: "
                  "the features as they are. The video demo uses 64: its object is learned, not only its room (docs/video.md)."},
    )
    mlm_probability: float = field(default=0.15, metadata={"help": "Fraction of context tokens masked for MLM."})
    mvm_probability: float = field(default=0.15, metadata={"help": "Fraction of video regions masked for MVM."})
    mvt_probability: float = field(default=0.15, metadata={"help": "Fraction of examples given another example's video."})

    def __post_init__(self):
        for name in ("mlm_probability", "mvm_probability", "mvt_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"--{name} must be between 0 and 1, got {value}")
        if self.video_pooling not in VIDEO_POOLING_MODES:
            raise ValueError(f"--video_pooling must be one of {', '.join(VIDEO_POOLING_MODES)}, got {self.video_pooling!r}")
        if self.video_frame_init_std is not None and not self.video_frame_init_std > 0:
            raise ValueError(f"--video_frame_init_std must be > 0, got {self.video_frame_init_std}")
        if self.video_whitening_components is not None and self.video_whitening_components < 1:
            raise ValueError(f"--video_whitening_components must be at least 1, got {self.video_whitening_components}")
        for name in ("max_video_frames", "max_video_regions"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class DataArguments:
    """The AVSD data: dialogue files, feature streams and their checks."""

    _argument_group_name = "Data (AVSD)"

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
    train_on_whole_dialogues: bool = field(
        default=False,
        metadata={"help": "One training sequence per dialogue (its last turn with the whole history) with the response loss on "
                  "every answer, instead of one per turn: each video and caption is encoded once per dialogue (fewer tokens "
                  "per epoch). Needs every history turn (no --max_history_turns), as decoding a turn then sees them all."},
    )
    cache_train_turns: bool | None = field(
        default=None,
        metadata={"help": "Process each training turn once (features read and pooled, text tokenised) and keep it in memory "
                  "instead of once per epoch: the same batches, less CPU per step, the memory of every turn's pooled "
                  "features (the video demo: ~0.6 GB). Default: on for the embedded demo, off otherwise (AVSD-sized data)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training split (debugging)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the validation split."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Truncate the test split."})
    skip_missing_features: bool = field(default=False, metadata={"help": "Drop turns whose video has no feature file (counted and logged) instead of failing."})
    skip_bad_examples: bool = field(
        default=False,
        metadata={"help": "Drop turns the processor cannot make into model inputs (e.g. a question longer than the text "
                  "budget; counted and logged) instead of refusing the data before training."},
    )
    cache_dir: str | None = field(default=None, metadata={"help": "datasets cache folder."})
    synthetic_answer_accuracy: bool = field(
        default=False,
        metadata={"help": "--data_dir is a synthetic task (avsd_dataset.synthetic): score the test answers against its ground "
                  "truth as the demo does (accuracy with the videos, shuffled videos, chance; also per question type)."},
    )

    def __post_init__(self):
        unknown = [name.strip() for name in self.caption_fields.split(",") if name.strip() and name.strip() not in CAPTION_FIELDS]
        if unknown:
            raise ValueError(
                f"--caption_fields {self.caption_fields}: {', '.join(repr(name) for name in unknown)} "
                f"{'is not a field' if len(unknown) == 1 else 'are not fields'} of the AVSD data; choose among {', '.join(CAPTION_FIELDS)}"
            )
        if self.train_on_whole_dialogues and self.max_history_turns is not None:
            raise ValueError(
                f"--train_on_whole_dialogues trains every answer on all the turns before it, but --max_history_turns "
                f"{self.max_history_turns} would decode with fewer: leave --max_history_turns unset (all turns that fit)"
            )
        for name in ("max_train_samples", "max_eval_samples", "max_predict_samples", "max_history_turns"):
            value = getattr(self, name)
            if value is not None and value < (0 if name == "max_history_turns" else 1):
                raise ValueError(f"--{name} must be at least {0 if name == 'max_history_turns' else 1}, got {value}")


# ---------------------------------------------------------------------------------------------- arguments

HELP_DESCRIPTION = """Fine-tune, evaluate and share VGD-GPT2 on AVSD, or run the embedded demo.

  python run_vgd.py                         the embedded demo (synthetic data, a small model trained from scratch, CPU)
  python run_vgd.py --max_steps 3           a smoke run of the demo (into outputs/smoke)
  python run_vgd.py CONFIG.yaml             every argument from a JSON / YAML file
  accelerate launch run_vgd.py --model_name_or_path gpt2 --data_dir data/avsd --output_dir outputs/vgd-s ...

Without --data_dir (the demo) these defaults change: {demo_defaults}."""


def build_parser() -> HfArgumentParser:
    """The argument parser; `--help` is grouped by each dataclass's `_argument_group_name`."""
    demo_defaults = ", ".join(f"--{key} {value}" for key, value in DEMO_TRAINING_DEFAULTS.items() if key != "output_dir")
    return HfArgumentParser(
        (ModelArguments, DataArguments, DemoArguments, VGDTrainingArguments),
        description=HELP_DESCRIPTION.format(demo_defaults=f"--output_dir {DEMO_OUTPUT_DIR} ({SMOKE_OUTPUT_DIR} with --max_steps), {demo_defaults}"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="python run_vgd.py [CONFIG.json|CONFIG.yaml] | [--argument value ...]",
    )


def parse_arguments(argv: list[str]) -> tuple[ModelArguments, DataArguments, DemoArguments, VGDTrainingArguments]:
    """Model / data / demo / training arguments from the command line or from one JSON / YAML file. Runs without
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
    return parser.parse_args_into_dataclasses(args=prefix + list(argv))


def setup_logging(training_args: VGDTrainingArguments) -> None:
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S", handlers=[logging.StreamHandler(sys.stdout)]
    )
    log_level = training_args.get_process_log_level()
    # our own status lines are INFO on the main process (the libraries keep their own level)
    own_level = min(log_level, logging.INFO) if training_args.should_log and training_args.log_level == "passive" else log_level
    for name in (__name__, "vgd_training", "avsd_dataset", "modeling_vgd_gpt2", "processing_vgd"):
        logging.getLogger(name).setLevel(own_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.disable_progress_bar()  # no bars for writing / loading a model of a few MB
    datasets.utils.logging.disable_progress_bar()


# ---------------------------------------------------------------------------------------------- model


def is_vgd_checkpoint(path: str) -> bool:
    """True for a folder or Hub id holding a VGD-GPT2 model (a plain GPT-2 starts a new one)."""
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=True).model_type == "vgd_gpt2"
    except (OSError, ValueError):
        return False


def load_processor_and_model(
    model_args: ModelArguments, video_feature_dim: int, stream_order, data_args: DataArguments, num_video_regions: int | None = None
):
    """A new VGD-GPT2 from a plain GPT-2 checkpoint, or the processor and model of a VGD-GPT2 checkpoint to continue.
    `num_video_regions`: the features' regions per frame (P), which `--video_pooling spatial_and_temporal` records."""
    path = model_args.model_name_or_path
    if is_vgd_checkpoint(path):
        logger.info("Continuing from the VGD-GPT2 checkpoint %s", path)
        if model_args.video_frame_init_std is not None:
            logger.warning("--video_frame_init_std is ignored: %s is a trained VGD-GPT2, whose temporal encoding is loaded", path)
        if model_args.video_frame_init != "normal":
            logger.warning("--video_frame_init is ignored: %s is a trained VGD-GPT2, whose temporal encoding is loaded", path)
        if model_args.video_whitening_components is not None:
            logger.warning("--video_whitening_components is ignored: %s is a trained VGD-GPT2, whose video projection is loaded", path)
        processor = VGDProcessor.from_pretrained(path)
        model = VGDGPT2ForDialogue.from_pretrained(path)
        if model.config.video_feature_dim != video_feature_dim:
            raise ValueError(f"{path} expects video features of dim {model.config.video_feature_dim}, the data has {video_feature_dim}")
    else:
        logger.info("Starting VGD-GPT2 from the plain GPT-2 checkpoint %s", path)
        whitening = model_args.video_whitening_components
        if whitening is not None and whitening > video_feature_dim:
            raise ValueError(
                f"--video_whitening_components {whitening} keeps more components than the video features have channels "
                f"({video_feature_dim}, --feature_streams {data_args.feature_streams}): give at most {video_feature_dim}"
            )
        video_backbone = recorded_video_backbone(data_args)
        if video_backbone is not None:
            logger.info("The features come from the video backbone %s: the model records it and answers from video files", video_backbone["name"])
        processor = VGDProcessor.from_gpt2_pretrained(
            path,
            video_feature_dim=video_feature_dim,
            video_backbone=video_backbone,
            max_video_frames=model_args.max_video_frames,
            video_pooling=model_args.video_pooling,
            num_video_regions=num_video_regions if model_args.video_pooling == "spatial_and_temporal" else None,
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
            video_frame_init_std=model_args.video_frame_init_std,
            video_frame_init=model_args.video_frame_init,
            video_whitening_components=model_args.video_whitening_components,
        )
    return processor, model


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None):
    """Train / evaluate / predict as the arguments say (see the module docstring); returns the test metrics. The
    output folder stays locked until this returns; a run that fails before its first training step releases it
    (its `_run_vgd.json` claim is removed when the folder holds nothing else of it)."""
    progress = {}
    try:
        return _main(sys.argv[1:] if argv is None else argv, progress)
    except BaseException:
        trainer = progress.get("trainer")
        release_output_dirs(failed_before_training=trainer is None or trainer.state.global_step == 0)
        raise
    finally:
        release_output_dirs()


def _main(argv: list[str], progress: dict):
    stages = StageTimes()  # wall and CPU seconds per stage, printed at the end of a demo run
    startup_cpu = StageTimes.cpu_now()  # the interpreter and the imports, before main
    model_args, data_args, demo_args, training_args = parse_arguments(argv)
    demo = data_args.data_dir is None
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        training_args.do_train = training_args.do_eval = training_args.do_predict = True

    setup_logging(training_args)
    configure_cpu_threads(training_args)
    keep_freed_memory_for_reuse(training_args)
    set_seed(training_args.seed)
    check_distributed_launch(training_args)
    apply_total_train_batch_size(training_args)

    main_process = training_args.process_index == 0
    if model_args.model_name_or_path is not None:
        # a local folder, a cached or reachable Hub id: checked with one request before the output folder is touched
        # (an unreachable Hub is said in one line, not after minutes of retries)
        check_model_source(model_args.model_name_or_path)
    run_id = None
    with training_args.main_process_first(desc="output folder"):
        if main_process:
            run_id = prepare_output_dir(
                training_args, model_args.model_name_or_path, demo, demo_dirs=(DEMO_OUTPUT_DIR, SMOKE_OUTPUT_DIR), argv=argv
            )
    if training_args.world_size > 1:
        from accelerate.utils import broadcast_object_list

        run_id = broadcast_object_list([run_id])[0]
    stages.start("data")
    if demo:
        if model_args.model_name_or_path is None and training_args.do_train and main_process:
            warn_if_demo_learning_rate_too_high(demo_args, training_args.learning_rate)
        with training_args.main_process_first(desc="synthetic data"):
            prepare_demo_data(demo_args, data_args, model_args, training_args.output_dir, main_process)

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
    stream_shapes = stores[needed[0]].feature_shapes()  # one .npy header per stream
    video_feature_dim = sum(stream_shapes[stream][-1] for stream in streams)
    num_video_regions = max((shape[1] for shape in stream_shapes.values() if len(shape) == 3), default=1)

    stages.stop("data")

    # ------------------------------------------------------------------ model
    set_seed(training_args.seed)  # the new layers' initialisation does not depend on what ran before (e.g. a cache miss)
    with stages.stage("model"):
        processor, model = load_processor_and_model(model_args, video_feature_dim, streams, data_args, num_video_regions)
        if processor.feature_extractor.video_pooling == "spatial_and_temporal":
            check_video_regions(stores, splits, processor.feature_extractor.num_video_regions)
        if model.config.video_whitening_components is not None and not bool(model.video_whitening_matrix.any()):
            # a new model that whitens its video features: fitted on the training videos, as the model will read them
            if "train" not in stores:
                raise ValueError("a new model with --video_whitening_components fits its whitening on the train split: run with --do_train")
            count = fit_model_video_whitening(model, processor, stores["train"], splits["train"]["image_id"], progress=main_process)
            logger.info("Video whitening (%d components) fitted on %d training videos", model.config.video_whitening_components, count)
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

    # every turn through the processor's text side once, before step 1: a turn it refuses is named here (file,
    # dialogue, video id, turn), not at the step that draws it
    with stages.stage("data"):
        if training_args.do_predict:
            check_test_keys_unique(test_json_path)
        for name in needed:
            generation = name == "test"
            drop_bad_examples(name, splits, processor, caption_fields, data_args.skip_bad_examples, for_generation=generation,
                              max_new_tokens=training_args.generation_max_new_tokens if generation else None)

    video_lengths = {}  # per split, read once from the .npy headers

    def turns(name, for_generation=False):
        if name not in video_lengths:
            video_lengths[name] = video_token_counts(stores[name], splits[name]["image_id"], processor)
        # training turns processed once, not once per epoch (same batches; avsd_dataset/turns.py)
        cache = data_args.cache_train_turns if data_args.cache_train_turns is not None else demo
        cached = cache and name == "train" and not for_generation
        dataset_class = CachedTurnDataset if cached else DialogueTurnDataset
        whole = data_args.train_on_whole_dialogues and name == "train" and not for_generation
        return dataset_class(
            whole_dialogues(splits[name]) if whole else splits[name], stores[name], processor, caption_fields,
            for_generation=for_generation, video_lengths=video_lengths[name], label_history_answers=whole,
        )

    with stages.stage("data"):
        train_dataset = turns("train") if training_args.do_train else None
        eval_dataset = turns("validation") if "validation" in splits and training_args.do_eval else None
        # --eval_max_generation_examples 0: the evaluation computes the losses and the matching accuracy, decodes nothing
        decode_validation = eval_dataset is not None and training_args.eval_max_generation_examples != 0
        eval_generation_dataset = turns("validation", for_generation=True) if decode_validation else None
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
    progress["trainer"] = trainer
    if main_process:
        check_output_dir_writable(training_args.output_dir, bytes_needed_on_disk(model, training_args))
    written = {}  # what this run wrote where, for the closing lines
    description = describe_data(data_args, demo_args if demo else None)
    all_metrics = {}

    # ------------------------------------------------------------------ train
    if training_args.do_train:
        stages.start("training")
        # SIGTERM / SIGUSR1 (cluster schedulers, `timeout`): finish the step, save a checkpoint, stop (vgd_training/signals.py)
        stopper = StopOnSignalCallback()
        trainer.add_callback(stopper)
        stopper.install()
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
        finally:
            stopper.uninstall()
        if stopper.received is not None:
            raise SystemExit(stop_after_signal(trainer, stopper))
        logger.info("process %d of %d trained %d step(s)", training_args.process_index, training_args.world_size, trainer.state.global_step)
        # the trained model is on disk before any evaluation, prediction or push (in a rescue folder if need be)
        written["model"] = trainer.save_model_or_rescue()
        metrics = dict(train_result.metrics, train_samples=len(train_dataset))
        # what the processor dropped to fit its limits (history turns, caption / answer tokens), as flat metrics
        metrics.update({f"train_truncation_{name}": value for name, value in processor.truncation_stats.as_dict().items()})
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        if trainer.is_world_process_zero():
            trainer.create_model_card(dataset=description)
        stages.stop("training")

    if main_process:
        # an evaluation-only run into a folder it replaces: the earlier results go before the new ones are written
        # (a training run replaced them when it saved its model)
        replace_earlier_results(training_args.output_dir)
    try:
        # ------------------------------------------------------------------ evaluate
        if training_args.do_eval and eval_dataset is not None:
            with stages.stage("evaluation"):
                metrics = trainer.evaluate()
            trainer.log_metrics("eval", metrics)
            trainer.save_metrics("eval", metrics)
            written["eval metrics"] = os.path.join(training_args.output_dir, "eval_results.json")
            # video-text matching on held-out pairs (validation dialogues with their own / another video)
            all_metrics.update({name[len("eval_") :]: value for name, value in metrics.items() if name.startswith("eval_matching_")})

        # ------------------------------------------------------------------ predict
        if training_args.do_predict:
            with stages.stage("decoding"):
                predictions = trainer.generate_responses(turns("test", for_generation=True), description="Decoding the test split")
            stages.start("scoring")
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
            stages.stop("scoring")
            if demo or data_args.synthetic_answer_accuracy:
                all_metrics.update(
                    evaluate_demo_answers(trainer, predictions, data_args.data_dir, splits["test"], stores["test"], processor, caption_fields,
                                          training_args.seed, per_type=data_args.synthetic_answer_accuracy, stages=stages)
                )
            if trainer.is_world_process_zero():
                written["test metrics"] = os.path.join(training_args.output_dir, "metrics.json")
                write_json_atomic(written["test metrics"], all_metrics)
                if demo or data_args.synthetic_answer_accuracy:
                    print_demo_table(all_metrics, f"test metrics ({len(predictions)} turns)")
                else:
                    trainer.log_metrics("test", all_metrics)

        # ------------------------------------------------------------------ model card, share
        if trainer.is_world_process_zero() and (training_args.do_train or "model" in written):
            trainer.create_model_card(test_metrics=all_metrics, dataset=description)
        if training_args.push_to_hub:
            try:
                trainer.push_to_hub(commit_message="VGD-GPT2 fine-tuned with run_vgd.py", test_metrics=all_metrics, dataset=description)
            except Exception:
                logger.exception("Pushing to the Hub failed; the trained model is kept in %s", training_args.output_dir)
                raise
    except BaseException:
        if "model" in written:
            logger.error("The run failed after training; the trained model is saved in %s", written["model"])
        raise
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # every process finishes together and closes its process group (no aborts at interpreter exit)
        trainer.accelerator.wait_for_everyone()
        torch.distributed.destroy_process_group()
    if demo and trainer.is_world_process_zero():
        stages.print_table(f"time per stage (start-up before them: {startup_cpu:.1f} s CPU)")
        written["time per stage"] = os.path.join(training_args.output_dir, "stage_times.json")
        write_json_atomic(written["time per stage"], {"startup_cpu_s": round(startup_cpu, 2), "stages": stages.as_dict(), "torch_threads": torch.get_num_threads()})
    if trainer.is_world_process_zero():
        report_outputs(written)
    return all_metrics


if __name__ == "__main__":
    try:
        main()
    except ModelSourceError as error:  # one line, no traceback: the model named cannot be had
        print(f"run_vgd.py: error: {error}", file=sys.stderr)
        sys.exit(2)
