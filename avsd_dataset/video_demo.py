# Copyright 2020 The VGD-GPT2 Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""The whole pipeline on the synthetic task rendered as real video files, in one command (offline, CPU):

```
python -m avsd_dataset.video_demo                                     # random-init r3d_18 (nothing downloaded)
python -m avsd_dataset.video_demo --backbone r3d_18 --weights KINETICS400_V1 --crop_size 112 --resize_size 128
```

Stages, each reused by a rerun with the same settings (folders named by a hash of their settings, in
`--cache_dir`, default `<output_dir>-cache`):

1. data: the synthetic AVSD-format dialogues (`avsd_dataset.synthetic.generate_synthetic_avsd`);
2. render: every dialogue's video as an H.264 `.mp4` (`avsd_dataset.synthetic_video.render_synthetic_videos`),
   files already there kept;
3. extract: `[F, P, D]` features with the named backbone (`avsd_dataset.extract_features`, train + validation
   videos, then the test videos), videos already extracted skipped; `--weights` absent: a seeded random-init
   backbone (`--backbone_seed`, recorded in backbone.json and then in the model's config);
4. tokenizer + GPT-2: the demo-size GPT-2 built offline (`avsd_dataset.offline_gpt2`), unless `--model_name_or_path`;
5. train + decode: run_vgd.py on the extracted stream in `--num_processes` data-parallel CPU processes (`accelerate
   launch`; 1: `run_vgd.main` in this process; the model records the backbone and answers from video files), scored
   against the synthetic ground truth (`--synthetic_answer_accuracy`): BLEU / CIDEr, answer accuracy with the videos,
   with shuffled videos and chance, per question type; a finished run (its `video_demo.json`) is reused;
6. answer from a file: the trained model answers one test dialogue from its `.mp4` through the
   `video-grounded-dialogue` pipeline and from its extracted features; both answers are printed and compared.

Ends with the table and per-stage wall / CPU seconds (CPU: this process and its finished child processes).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from transformers import HfArgumentParser

from configuration_vgd_gpt2 import VIDEO_FRAME_INIT_MODES

from .synthetic_video import RENDERER_VERSION


@dataclass
class VideoDemoArguments:
    """Sizes of the task, the videos, the backbone and the model of the video demo."""

    output_dir: str = field(default=os.path.join("outputs", "video-demo"), metadata={"help": "The trained model, its metrics and predictions."})
    cache_dir: str | None = field(default=None, metadata={"help": "Data, videos, features and the offline GPT-2 (default: <output_dir>-cache)."})
    # data
    num_train_dialogs: int = field(default=1500, metadata={"help": "Training dialogues (= videos)."})
    num_valid_dialogs: int = field(default=100, metadata={"help": "Validation dialogues."})
    num_test_dialogs: int = field(default=192, metadata={"help": "Test dialogues (one scored turn each)."})
    data_seed: int = field(default=0, metadata={"help": "Seed of the synthetic task."})
    # videos
    height: int = field(default=32, metadata={"help": "Rendered frame height (even)."})
    width: int = field(default=32, metadata={"help": "Rendered frame width (even)."})
    fps: int = field(default=8, metadata={"help": "Frame rate of the rendered .mp4 files."})
    # backbone
    backbone: str = field(default="r3d_18", metadata={"help": "Backbone of avsd_dataset.extract_features (r3d_18, r2plus1d_18, mc3_18, s3d, ...)."})
    weights: str | None = field(default=None, metadata={"help": "Pretrained weights (e.g. KINETICS400_V1; downloaded by torchvision). Default: random init."})
    backbone_seed: int = field(default=0, metadata={"help": "Seed of the random-init backbone (recorded in the model's config)."})
    crop_size: int | None = field(default=32, metadata={"help": "Center crop of the backbone input (the frames are resized to --resize_size first; 32: the 32 x 32 frames as they are, 4 x 4 regions at layer3, each over one object slot; 24 read the object and the count worse, docs/video.md)."})
    resize_size: int | None = field(default=32, metadata={"help": "Shorter side before cropping (= --crop_size: the whole square frame is seen)."})
    clip_length: int = field(default=4, metadata={"help": "Frames per clip (one feature frame each; 4 frames at 6 fps: three clips per 2-second action)."})
    sample_fps: float | None = field(default=6, metadata={"help": "Resample the videos to this rate before cutting clips (the 8-fps videos at 6 fps: 12 frames per action)."})
    layer: str | None = field(default="layer3", metadata={"help": "Feature map taken (3D ResNets: layer2 / layer3 / layer4)."})
    rgb_difference: bool = field(default=True, metadata={"help": "Also extract the backbone's features of each clip's frame-to-frame differences (TSN's motion input; D doubles): the static room cancels, the person's motion remains (docs/video.md)."})
    extract_batch_size: int = field(default=16, metadata={"help": "Clips per backbone call."})
    extract_workers: int = field(default=1, metadata={"help": "Decoding processes of the extraction (0: in this process)."})
    extract_threads: int = field(default=2, metadata={"help": "Torch threads of the backbone (2: 1.36x the videos per second of one on 2 cores, the same features, docs/video.md)."})
    standardize_features: bool = field(default=True, metadata={"help": "Standardise the backbone's output per channel with the mean / std of the training videos' features (fitted once, recorded in backbone.json and the model's config, applied by the model's backbone too)."})
    # model and training
    video_pooling: str = field(
        default="spatial_and_temporal",
        metadata={"help": "Video tokens the model reads (run_vgd --video_pooling): spatial_and_temporal (one token per region, "
                  "the clips averaged, then one per clip, the regions averaged: 16 + 12; the object is read better than from the "
                  "clip tokens alone, docs/video.md), temporal (one token per clip), spatial (one per region) or spatiotemporal "
                  "(every clip x region)."},
    )
    model_name_or_path: str | None = field(default=None, metadata={"help": "A GPT-2 to start from (default: the demo-size GPT-2 built offline)."})
    n_layer: int = field(
        default=3,
        metadata={"help": "Layers of the offline GPT-2 (3: the order of the actions, `next` / `before` most, is answered better than "
                  "with 2, +0.02 to +0.05 over the same seeds, for 1.4x the training time; 4 layers gave seed 0 about the same "
                  "and take 1.3x longer again, near the 20-minute budget, docs/video.md)."},
    )
    n_embd: int = field(default=128, metadata={"help": "Width of the offline GPT-2."})
    n_head: int = field(default=4, metadata={"help": "Heads of the offline GPT-2."})
    vocab_size: int = field(default=600, metadata={"help": "BPE vocabulary of the offline tokenizer."})
    seed: int = field(default=0, metadata={"help": "Training seed."})
    num_train_epochs: float = field(
        default=20,
        metadata={"help": "Training epochs (20, with MLM on 30 %% of the context: 6,160 steps, ~12.5 min of training on two "
                  "threads; 0.903 over 3 seeds in 16.6 min end to end on a 2-core CPU. 30 epochs at --mlm_probability 0.15 "
                  "answered 0.917 in 29 min, docs/video.md)."},
    )
    max_steps: int = field(default=-1, metadata={"help": "Training steps (overrides --num_train_epochs when > 0)."})
    video_frame_init_std: float = field(
        default=0.5,
        metadata={"help": "Std of the model's initial temporal encoding (run_vgd --video_frame_init_std; GPT-2's 0.02 when 0). 0.5: the "
                  "projected clips are ~20x GPT-2's 0.02-std encoding, which left some seeds unable to tell the clips apart in time "
                  "and so never learning the order of the actions (docs/video.md)."},
    )
    video_frame_init: str = field(
        default="sinusoidal",
        metadata={"help": "How the model's temporal encoding starts (run_vgd --video_frame_init): sinusoidal (the sine / cosine "
                  "table at --video_frame_init_std; over three seeds of renderer 4, 0.892 against 0.887 with random rows, within "
                  "the spread between seeds) or normal (random rows, docs/video.md).",
                  "choices": list(VIDEO_FRAME_INIT_MODES)},
    )
    video_whitening_components: int = field(
        default=0,
        metadata={"help": "K > 0: the model reads its clip tokens PCA-whitened, the K largest components (run_vgd "
                  "--video_whitening_components; fitted on the training videos, saved in the model's weights). 0 (default): "
                  "the standardised features as they are. 64 learns the object better (0.47 against 0.30 over 3 seeds) "
                  "and the order of the actions worse, the same accuracy overall (docs/video.md)."},
    )
    use_mvt: bool = field(
        default=False,
        metadata={"help": "Video-text matching objective (run_vgd --use_mvt). Off here: the demo's model never learns to "
                  "match (held-out matching accuracy 0.500 in every seed), and its negatives, 15%% of the turns, lose their "
                  "response, MLM and MVM targets; off, seeds 0 / 1 answered 0.906 / 0.880 against 0.896 / 0.865, and a step "
                  "has no <cls> token to compute (docs/video.md)."},
    )
    mlm_probability: float = field(
        default=0.3,
        metadata={"help": "Fraction of the context's text tokens (caption, history, question) masked for MLM (run_vgd "
                  "--mlm_probability; its own default is the paper's 0.15). MLM is where the model learns to read the object "
                  "and the count: the masked caption words are put back from the video. 0.3 learns them in fewer epochs "
                  "(20 epochs: 0.903 over 3 seeds against 0.880 at 0.15, docs/video.md)."},
    )
    learning_rate: float = field(default=1.5e-3, metadata={"help": "Peak learning rate (1.5e-3: half the feature demo's, which learned the order of the actions in more seeds here, docs/video.md)."})
    num_processes: int = field(
        default=1,
        metadata={"help": "Training processes, one CPU core each (1: train in this process; more: data parallel through "
                  "`accelerate launch`, 1.55x the samples per second with 2 on 2 cores, but 2 processes x 32 epochs learned "
                  "the order of the actions in 4 of 6 seeds and gave a lower mean, docs/video.md). Divide "
                  "--per_device_train_batch_size by it to keep the batch of a step."},
    )
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training batch size of each process (the batch of a step is this x --num_processes)."})
    train_sampling_strategy: str = field(
        default="random",
        metadata={"help": "How training batches are drawn (run_vgd --train_sampling_strategy): random (every batch a mix of "
                  "question types and dialogue positions; learned the order of the actions where length-grouped batches did "
                  "not, docs/video.md) or group_by_length (batches of similar length: ~5%% less padding and time)."},
    )
    generation_num_beams: int = field(default=3, metadata={"help": "Beams when decoding."})
    generation_max_new_tokens: int = field(default=12, metadata={"help": "Tokens per decoded answer."})
    cpu_threads: int | None = field(
        default=None,
        metadata={"help": "Torch threads of each training process. Default: 2 in one process (6.7 against 4.6 steps/s with 1 on "
                  "2 cores: the 3 x 128 model's matrix products are large enough to share), 1 per process with "
                  "--num_processes > 1."},
    )
    cache_train_turns: bool = field(
        default=True,
        metadata={"help": "Process each training turn once and keep it in memory (run_vgd --cache_train_turns): the same "
                  "batches, ~15%% less time per epoch after the first, ~0.6 GB more memory."},
    )
    overwrite: bool = field(default=False, metadata={"help": "Retrain even if the output folder holds this run (videos and features are always reused)."})

    def __post_init__(self):
        if self.num_processes < 1:
            raise ValueError(f"--num_processes must be at least 1, got {self.num_processes}")
        if self.video_frame_init_std < 0:
            raise ValueError(f"--video_frame_init_std must be >= 0 (0: GPT-2's initializer_range), got {self.video_frame_init_std}")
        if self.video_whitening_components < 0:
            raise ValueError(f"--video_whitening_components must be >= 0 (0: no whitening), got {self.video_whitening_components}")
        if not 0.0 <= self.mlm_probability <= 1.0:
            raise ValueError(f"--mlm_probability must be in [0, 1], got {self.mlm_probability}")
        if self.height % 2 or self.width % 2:
            raise ValueError(f"H.264 needs an even frame size, got {self.width}x{self.height}")
        if self.cpu_threads is None:
            self.cpu_threads = 2 if self.num_processes == 1 else 1
        if self.cpu_threads < 1:
            raise ValueError(f"--cpu_threads must be at least 1, got {self.cpu_threads}")
        if self.cache_dir is None:
            self.cache_dir = os.path.normpath(self.output_dir) + "-cache"


def _hash(values: dict) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:10]


class StageTimer:
    """Wall and CPU seconds per stage (CPU: this process plus its finished children, e.g. decoding workers)."""

    def __init__(self):
        self.stages: list[tuple[str, float, float, str]] = []

    @staticmethod
    def _cpu() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    def run(self, name: str, function, *args, **kwargs):
        print(f"\n===== video demo: {name} =====", flush=True)
        wall, cpu = time.perf_counter(), self._cpu()
        result = function(*args, **kwargs)
        note = result.pop("_note", "") if isinstance(result, dict) else ""
        self.stages.append((name, time.perf_counter() - wall, self._cpu() - cpu, note))
        return result

    def table(self) -> str:
        width = max(len(name) for name, *_ in self.stages)
        lines = [f"{'stage':<{width}}  {'wall s':>8}  {'CPU s':>8}  note", "-" * (width + 40)]
        for name, wall, cpu, note in self.stages:
            lines.append(f"{name:<{width}}  {wall:8.1f}  {cpu:8.1f}  {note}")
        lines.append("-" * (width + 40))
        lines.append(f"{'total':<{width}}  {sum(s[1] for s in self.stages):8.1f}  {sum(s[2] for s in self.stages):8.1f}")
        return "\n".join(lines)


def paths(args: VideoDemoArguments) -> dict[str, str]:
    """The folders of the run, each named by the settings that determine its content."""
    data_settings = {
        "train": args.num_train_dialogs, "valid": args.num_valid_dialogs, "test": args.num_test_dialogs, "seed": args.data_seed,
        "height": args.height, "width": args.width, "fps": args.fps, "renderer": RENDERER_VERSION,
    }
    backbone_settings = {
        "backbone": args.backbone, "weights": args.weights, "seed": args.backbone_seed if args.weights is None else None,
        "crop": args.crop_size, "resize": args.resize_size, "layer": args.layer, "clip": args.clip_length, "fps": args.sample_fps,
        **({"rgb_difference": True} if args.rgb_difference else {}),  # absent when off: earlier runs' folders keep their names
    }
    gpt2_settings = {"data": data_settings, "n_layer": args.n_layer, "n_embd": args.n_embd, "n_head": args.n_head, "vocab": args.vocab_size}
    data_dir = os.path.join(args.cache_dir, f"data-{_hash(data_settings)}")
    raw_feature_dir = os.path.join(data_dir, f"video_features-{_hash(backbone_settings)}")
    feature_dir = raw_feature_dir
    if args.standardize_features:  # the raw backbone output stays where it is; its standardised copy next to it
        feature_dir = os.path.join(data_dir, f"video_features-{_hash({**backbone_settings, 'standardized': 'train'})}")
    return {
        "data_dir": data_dir,
        "raw_feature_dir": raw_feature_dir,
        "feature_dir": feature_dir,
        "gpt2_dir": os.path.join(args.cache_dir, f"offline-gpt2-{_hash(gpt2_settings)}"),
        "stream": os.path.basename(os.path.normpath(args.backbone)),
    }


def extract_arguments(args: VideoDemoArguments) -> list[str]:
    """The `avsd_dataset.extract_features` options of this run (after VIDEO_DIR FEATURE_DIR)."""
    options = ["--backbone", args.backbone, "--batch_size", str(args.extract_batch_size), "--num_workers", str(args.extract_workers)]
    options += ["--threads", str(args.extract_threads)] if args.extract_threads else []
    for name, option in (("crop_size", "crop_size"), ("resize_size", "resize_size"), ("layer", "layer"), ("clip_length", "clip_length"), ("sample_fps", "fps")):
        if getattr(args, name) is not None:
            options += [f"--{option}", str(getattr(args, name))]
    options += ["--rgb_difference"] if args.rgb_difference else []
    if args.weights is None:
        options += ["--random_init", "--seed", str(args.backbone_seed)]
    else:
        options += ["--weights", args.weights]
    return options


def training_arguments(args: VideoDemoArguments, where: dict[str, str], model_path: str) -> list[str]:
    """The run_vgd.py command line of the training stage (the feature demo's settings on the extracted stream)."""
    from .demo import DEMO_TRAINING_DEFAULTS

    settings = dict(DEMO_TRAINING_DEFAULTS)
    settings.update(
        output_dir=args.output_dir, seed=args.seed, num_train_epochs=args.num_train_epochs, max_steps=args.max_steps,
        learning_rate=args.learning_rate, per_device_train_batch_size=args.per_device_train_batch_size,
        train_sampling_strategy=args.train_sampling_strategy,
        generation_num_beams=args.generation_num_beams, generation_max_new_tokens=args.generation_max_new_tokens,
        cpu_threads=args.cpu_threads, use_mvt=args.use_mvt, cache_train_turns=args.cache_train_turns,
        mlm_probability=args.mlm_probability,
    )
    if args.video_frame_init_std > 0:
        settings["video_frame_init_std"] = args.video_frame_init_std
    if args.video_frame_init != "normal":
        settings["video_frame_init"] = args.video_frame_init
    if args.video_whitening_components > 0:
        settings["video_whitening_components"] = args.video_whitening_components
    argv = ["--model_name_or_path", model_path, "--data_dir", where["data_dir"], "--feature_dir", where["feature_dir"],
            "--feature_streams", where["stream"], "--video_pooling", args.video_pooling,
            "--synthetic_answer_accuracy", "true", "--overwrite_output_dir", "true"]
    for key, value in settings.items():
        argv += [f"--{key}", str(value)]
    return argv


# ---------------------------------------------------------------------------------------------------- stages


def stage_data(args, where):
    from .synthetic import generate_synthetic_avsd

    info = generate_synthetic_avsd(
        where["data_dir"], num_train_dialogs=args.num_train_dialogs, num_valid_dialogs=args.num_valid_dialogs,
        num_test_dialogs=args.num_test_dialogs, seed=args.data_seed,
    )
    return {"_note": f"{'generated' if info.regenerated else 'reused'} {where['data_dir']}"}


def stage_render(args, where):
    from .synthetic_video import render_synthetic_videos

    info = render_synthetic_videos(where["data_dir"], height=args.height, width=args.width, fps=args.fps, progress=True)
    print(f"synthetic_video: {info['rendered']} rendered, {info['existing']} already there", flush=True)
    return {**info, "_note": f"{info['rendered']} rendered, {info['existing']} reused ({args.width}x{args.height}, 64 frames)"}


def stage_extract(args, where, video_dir, split):
    from .extract_features import main as extract_features

    counts = extract_features([video_dir, where["raw_feature_dir"], *extract_arguments(args), "--split", split])
    if counts["failed"]:
        raise RuntimeError(f"{counts['failed']} video(s) of {video_dir} could not be decoded (see extract_failures.jsonl)")
    return {**counts, "_note": f"{counts['done']} extracted, {counts['skipped']} reused, {counts['clips']} clips"}


def stage_standardize(args, where):
    """Fit the per-channel mean / std on the training dialogues' videos (raw features), then write the
    standardised train + valid and test streams, whose backbone.json (and so the model's config) records them."""
    from .extract_features import fit_feature_statistics, standardize_stream, stream_dir
    from video_backbone_vgd import with_feature_standardization

    raw_train = stream_dir(where["raw_feature_dir"], where["stream"], "train")
    out_train = stream_dir(where["feature_dir"], where["stream"], "train")
    recorded = os.path.join(out_train, "backbone.json")
    if os.path.isfile(recorded):  # fitted before: the same statistics (the raw features do not change)
        with open(recorded, encoding="utf-8") as f:
            spec = json.load(f)
        note = "statistics reused"
    else:
        with open(os.path.join(where["data_dir"], "train_set4DSTC7-AVSD.json"), encoding="utf-8") as f:
            train_ids = [dialog["image_id"] for dialog in json.load(f)["dialogs"]]
        stats = fit_feature_statistics(raw_train, train_ids)
        with open(os.path.join(raw_train, "backbone.json"), encoding="utf-8") as f:
            spec = with_feature_standardization(json.load(f), stats["feature_mean"], stats["feature_std"],
                                                fitted_on=f"{stats['videos']} training videos, {stats['count']} clip regions")
        note = f"fitted on {stats['videos']} training videos"
    counts = {split: standardize_stream(stream_dir(where["raw_feature_dir"], where["stream"], split),
                                        stream_dir(where["feature_dir"], where["stream"], split), spec) for split in ("train", "test")}
    done = sum(c["done"] for c in counts.values())
    return {"counts": counts, "_note": f"{note}; {done} standardised -> {where['feature_dir']}"}


def stage_gpt2(args, where):
    if args.model_name_or_path is not None:
        return {"path": args.model_name_or_path, "_note": f"given: {args.model_name_or_path}"}
    from .offline_gpt2 import build_offline_gpt2
    from .synthetic import corpus_texts

    path = where["gpt2_dir"]
    if os.path.isfile(os.path.join(path, "model.safetensors")):
        return {"path": path, "_note": "reused"}
    staging = f"{path}.tmp-{os.getpid()}"
    build_offline_gpt2(
        corpus_texts(where["data_dir"], splits=("train",)), staging, vocab_size=args.vocab_size, n_positions=256,
        n_embd=args.n_embd, n_layer=args.n_layer, n_head=args.n_head, dropout=0.0, activation_function="gelu_pytorch_tanh",
    )
    if os.path.isdir(path):
        import shutil

        shutil.rmtree(path)
    os.replace(staging, path)
    return {"path": path, "_note": "built"}


RUN_FILE = "video_demo.json"


def stage_train(args, where, model_path):
    argv = training_arguments(args, where, model_path)
    record = os.path.join(args.output_dir, RUN_FILE)
    if not args.overwrite and os.path.isfile(record):
        with open(record, encoding="utf-8") as f:
            previous = json.load(f)
        if previous.get("argv") == argv and previous.get("num_processes", 1) == args.num_processes:
            return {"metrics": previous["metrics"], "trained": False, "_note": f"reused {args.output_dir}"}
    if args.num_processes > 1:
        metrics = train_in_processes(argv, args.num_processes, args.output_dir)
    else:
        import run_vgd

        print("python run_vgd.py " + " ".join(argv), flush=True)
        metrics = run_vgd.main(argv)
    from vgd_training.checkpointing import write_json_atomic

    write_json_atomic(record, {"argv": argv, "num_processes": args.num_processes, "metrics": metrics, "settings": asdict(args)})
    return {"metrics": metrics, "trained": True, "_note": f"trained and decoded -> {args.output_dir} ({args.num_processes} process{'es' if args.num_processes > 1 else ''})"}


def launch_command(argv: list[str], num_processes: int, port: int) -> list[str]:
    """`accelerate launch` of run_vgd.py in `num_processes` data-parallel CPU processes (gloo): `--multi_gpu` is what
    starts several processes on a CPU-only machine (`--cpu --num_processes N` starts one)."""
    run_vgd_path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "run_vgd.py")
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
        run_vgd_path, *argv,
    ]


def free_port() -> int:
    """A TCP port nobody listens on now (so that two demos on one machine do not meet at accelerate's default port)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train_in_processes(argv: list[str], num_processes: int, output_dir: str) -> dict[str, Any]:
    """Train and decode with run_vgd.py in `num_processes` processes; returns the test metrics it wrote."""
    import signal
    import subprocess
    import threading

    command = launch_command(argv, num_processes, free_port())
    print(" ".join(command[1:]), flush=True)
    metrics_file = os.path.join(output_dir, "metrics.json")
    started = time.time()
    # the demo trains on the CPU (--use_cpu): no GPU is initialised, one math thread per process (run_vgd sets it too)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    process = subprocess.Popen(command, env=env)
    # SIGTERM (a scheduler's stop) goes on to the launcher, which stops the training processes: they finish their step
    # and save (run_vgd.py's handler) instead of training on as orphans of this process
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: process.send_signal(signum))
    try:
        returncode = process.wait()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    written = os.path.isfile(metrics_file) and os.path.getmtime(metrics_file) >= started
    if returncode != 0 and not written:
        raise RuntimeError(
            f"the training processes failed (exit code {returncode}; their errors are printed above); the command was:\n"
            + " ".join(command) + f"\nwhat they saved is in {output_dir}"
        )
    if returncode != 0:
        # every process trained, the model and the test metrics were written, and then one exited with an error (a
        # process torn down at interpreter exit): the results stand, and the exit is reported
        print(f"warning: the training processes exited with code {returncode} after writing the model and {metrics_file}; "
              "the results are kept", file=sys.stderr, flush=True)
    with open(metrics_file, encoding="utf-8") as f:
        return json.load(f)


def first_test_dialogue(data_dir: str) -> dict[str, Any]:
    """The first test dialogue: image id, caption, history and the scored question."""
    from .synthetic import TEST_FILE

    with open(os.path.join(data_dir, TEST_FILE), encoding="utf-8") as f:
        dialog = json.load(f)["dialogs"][0]
    turns = dialog["dialog"]
    return {
        "image_id": dialog["image_id"], "caption": dialog["caption"],
        "history": [(turn["question"], turn["answer"]) for turn in turns[:-1]], "question": turns[-1]["question"],
    }


def answer_from_file(model_dir: str, data_dir: str, feature_dir: str, stream: str, num_beams: int, max_new_tokens: int) -> dict[str, Any]:
    """The trained model's answer to the first test dialogue from its .mp4 file and from its extracted features
    (the same `video-grounded-dialogue` pipeline, the same decoding)."""
    import numpy as np
    from transformers import pipeline

    from .synthetic_video import TEST_VIDEO_DIR

    dialogue = first_test_dialogue(data_dir)
    chat = pipeline("video-grounded-dialogue", model=model_dir, trust_remote_code=True, device="cpu")
    video = os.path.join(data_dir, TEST_VIDEO_DIR, dialogue["image_id"] + ".mp4")
    features = np.load(os.path.join(feature_dir, stream + "_testset", dialogue["image_id"] + ".npy"))
    kwargs = dict(caption=dialogue["caption"], history=dialogue["history"], question=dialogue["question"],
                  num_beams=num_beams, max_new_tokens=max_new_tokens)
    from_video = chat(video=video, **kwargs)["answer"]
    from_features = chat(video=features, **kwargs)["answer"]
    return {**dialogue, "video": video, "answer_from_video": from_video, "answer_from_features": from_features}


def stage_answer(args, where):
    result = answer_from_file(args.output_dir, where["data_dir"], where["feature_dir"], where["stream"],
                              args.generation_num_beams, args.generation_max_new_tokens)
    print(f"video    : {result['video']}\nquestion : {result['question']}\n"
          f"answer from the .mp4       : {result['answer_from_video']}\nanswer from its features   : {result['answer_from_features']}", flush=True)
    same = result["answer_from_video"] == result["answer_from_features"]
    return {**result, "same": same, "_note": "same answer from the .mp4 and its features" if same else "ANSWERS DIFFER"}


# ---------------------------------------------------------------------------------------------------- report


def print_table(metrics: dict[str, float]) -> None:
    from .demo import print_demo_table

    print_demo_table(metrics, "video demo: test metrics")
    types = sorted(key.split("/", 1)[1] for key in metrics if key.startswith("answer_accuracy/"))
    if types:
        width = max(len(t) for t in types + ["question type"])
        print(f"{'question type':<{width}}  {'video':>7}  {'shuffled':>8}  {'chance':>7}")
        for qtype in types:
            print(f"{qtype:<{width}}  {metrics['answer_accuracy/' + qtype]:7.3f}  "
                  f"{metrics['answer_accuracy_shuffled_video/' + qtype]:8.3f}  {metrics['answer_accuracy_chance/' + qtype]:7.3f}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run (or reuse) every stage; returns `{"metrics", "answer", "stages", "paths"}` and writes it to
    `<output_dir>/video_demo_result.json`."""
    parser = HfArgumentParser(VideoDemoArguments, prog="python -m avsd_dataset.video_demo", description=__doc__.split("\n\n")[0])
    (args,) = parser.parse_args_into_dataclasses(args=sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    where = paths(args)
    timer = StageTimer()
    timer.run("1 data", stage_data, args, where)
    videos = timer.run("2 render .mp4", stage_render, args, where)
    extracted = {
        "train": timer.run("3 extract train+valid", stage_extract, args, where, videos["video_dir"], "train"),
        "test": timer.run("4 extract test", stage_extract, args, where, videos["test_video_dir"], "test"),
    }
    if args.standardize_features:
        timer.run("4b standardise features", stage_standardize, args, where)
    model_path = timer.run("5 tokenizer + GPT-2", stage_gpt2, args, where)["path"]
    trained = timer.run("6 train + decode", stage_train, args, where, model_path)
    metrics = trained["metrics"]
    answer = timer.run("7 answer from a .mp4", stage_answer, args, where)

    print_table(metrics)
    backbone = f"{args.backbone} ({args.weights or f'random init, seed {args.backbone_seed}'}, crop {args.crop_size}, layer {args.layer})"
    print(f"\nbackbone {backbone}; features in {where['feature_dir']}; model in {args.output_dir}\n")
    print(timer.table())
    print(f"\nChat about a test video:  python -m vgd_apps.chat --model {args.output_dir} --data_dir {where['data_dir']} --video {answer['video']}")
    print(f"The page:                 python -m vgd_apps.web --model {args.output_dir} --data_dir {where['data_dir']}", flush=True)
    result = {
        "metrics": metrics, "answer": answer, "paths": where, "backbone": backbone, "trained": trained["trained"],
        "rendered": {"rendered": videos["rendered"], "existing": videos["existing"]}, "extracted": extracted,
        "stages": [{"stage": name, "wall_s": wall, "cpu_s": cpu, "note": note} for name, wall, cpu, note in timer.stages],
    }
    from vgd_training.checkpointing import write_json_atomic

    write_json_atomic(os.path.join(args.output_dir, "video_demo_result.json"), result)
    return result


if __name__ == "__main__":
    main()
