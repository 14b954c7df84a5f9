"""Does the video relevance map point at the part of the video that holds the answer? Measured on the synthetic task.

```bash
python benchmarks/measure_relevance.py                            # the demo model (outputs/demo) and its dataset
python benchmarks/measure_relevance.py --model PATH --data_dir FOLDER --split validation --method rollout
python benchmarks/measure_relevance.py --model outputs/video-demo --data_dir outputs/video-demo-cache/data-<hash> \
    --split test --videos    # a video demo's model, answering from the rendered .mp4 files
```

In the synthetic videos (`avsd_dataset/synthetic.py`) action `k` of a video lives in the frames of temporal segment
`k` only, and the object (with its colour and count) in its `object_regions` only. For every turn asking about an
action (`action_first`, `action_last`, `action_next`, `action_before`), the model answers with
`return_video_relevance=True` and the turn counts as a hit when the frame with the most relevance (the map summed
over regions) is a frame of the asked action's segment, whatever the model answered. The uniform baseline (a map
that is the same everywhere, i.e. a frame picked at random) hits with probability `frames of the segment / F`. For
the object questions (`object`, `color`, `count`) the same is done over regions (the map summed over frames)
against the object regions, baseline `object regions / P`. With `--videos` the model answers from the rendered
`.mp4` files of a video demo's data folder (`python -m avsd_dataset.video_demo`): its F clips are mapped to the
actions the same way (clip `f` of F shows action `f * num_actions // F`), and only the frames are measured (the
backbone's regions are not the dataset's object regions; a model with `--video_pooling temporal` has one token
per clip, and one with `spatial_and_temporal` a map whose frame profile ranks the clips as its clip tokens do).
Prints one JSON object.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field

import numpy as np
from transformers import HfArgumentParser

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from vgd_apps.chat import DEMO_MODEL_DIR, default_data_dir, load_chat_pipeline  # noqa: E402

ACTION_QUESTION_TYPES = ("action_first", "action_last", "action_next", "action_before")
OBJECT_QUESTION_TYPES = ("object", "color", "count")


@dataclass
class MeasureArguments:
    model: str = field(default=DEMO_MODEL_DIR, metadata={"help": "A trained model folder or Hub id."})
    data_dir: str | None = field(default=None, metadata={"help": "The synthetic dataset folder. Default: <model>/data, else demo-cache/data beside the model folder."})
    split: str = field(default="validation", metadata={"help": "'validation' (every turn) or 'test' (the scored turns)."})
    method: str = field(default="attention", metadata={"help": "'attention', 'rollout' or 'both'."})
    batch_size: int = field(default=16, metadata={"help": "Examples per generate() call."})
    max_new_tokens: int = field(default=20, metadata={"help": "The longest answer, in tokens."})
    max_examples: int | None = field(default=None, metadata={"help": "Evaluate at most this many turns."})
    videos: bool = field(default=False, metadata={"help": "Answer from the rendered .mp4 files (videos/, videos_testset/) instead of the dataset's feature files; frames only."})


def load_turns(data_dir: str, split: str, videos: bool = False) -> list[dict]:
    """The turns to evaluate: `{"image_id", "caption", "history", "question", "question_type", "answer_word", "video"}`
    (`video`: the feature `.npy` file, or with `videos` the rendered `.mp4` file)."""
    from avsd_dataset.synthetic import FEATURES_DIR, SPLIT_FILES, TEST_DIR_SUFFIX, load_config, load_ground_truth
    from avsd_dataset.synthetic_video import TEST_VIDEO_DIR, VIDEO_DIR

    ground_truth = load_ground_truth(data_dir)
    stream = load_config(data_dir).video_stream
    with open(os.path.join(data_dir, SPLIT_FILES[split]), encoding="utf-8") as f:
        dialogs = {dialog["image_id"]: dialog for dialog in json.load(f)["dialogs"]}
    annotations = ground_truth["test"] if split == "test" else ground_truth["splits"][split]
    if videos:
        video_dir, extension = os.path.join(data_dir, TEST_VIDEO_DIR if split == "test" else VIDEO_DIR), ".mp4"
    else:
        video_dir, extension = os.path.join(data_dir, FEATURES_DIR, stream + (TEST_DIR_SUFFIX if split == "test" else "")), ".npy"
    if not os.path.isdir(video_dir):
        raise FileNotFoundError(f"{video_dir} does not exist: {'render the videos (python -m avsd_dataset.video_demo)' if videos else 'is --data_dir a synthetic dataset folder?'}")
    turns = []
    for entry in annotations:
        dialog = dialogs[entry["image_id"]]
        index = entry["turn_index"]
        turns.append(
            {
                "image_id": entry["image_id"],
                "caption": dialog["caption"],
                "history": [(turn["question"], turn["answer"]) for turn in dialog["dialog"][:index]],
                "question": dialog["dialog"][index]["question"],
                "question_type": entry["question_type"],
                "answer_word": entry["answer_word"],
                "video": os.path.join(video_dir, entry["image_id"] + extension),
            }
        )
    return turns


def ground_truth_cells(turn: dict, video: dict, num_frames: int, num_actions: int) -> tuple[str, list[int]] | None:
    """("frames", frame indices holding the asked action) or ("regions", the object regions); None otherwise."""
    if turn["question_type"] in ACTION_QUESTION_TYPES:
        k = video["actions"].index(turn["answer_word"])
        segment_of_frame = (np.arange(num_frames) * num_actions) // num_frames  # as in avsd_dataset.synthetic
        return "frames", [int(f) for f in np.flatnonzero(segment_of_frame == k)]
    if turn["question_type"] in OBJECT_QUESTION_TYPES:
        return "regions", list(video["object_regions"])
    return None


def measure(chat_pipeline, turns: list[dict], data_dir: str, method: str, batch_size: int, max_new_tokens: int,
            frames_only: bool = False) -> dict:
    from avsd_dataset.synthetic import is_correct_answer, load_config, load_ground_truth

    num_actions = load_config(data_dir).num_actions
    ground_truth = load_ground_truth(data_dir)
    fact_values = ground_truth["fact_values"]
    inputs = [{key: turn[key] for key in ("video", "caption", "history", "question")} for turn in turns]
    outputs = chat_pipeline(
        inputs, batch_size=batch_size, return_video_relevance=True, relevance_method=method,
        max_new_tokens=max_new_tokens, num_beams=1,
    )
    results = {"frames": {"hits": 0, "baseline": 0.0, "n": 0, "hits_when_correct": 0, "n_correct": 0},
               "regions": {"hits": 0, "baseline": 0.0, "n": 0, "hits_when_correct": 0, "n_correct": 0}}
    for turn, output in zip(turns, outputs):
        video = ground_truth["videos"][turn["image_id"]]
        relevance = output["video_relevance"]  # [F, P] of this model's video tokens
        cells = ground_truth_cells(turn, video, relevance.shape[0], num_actions)
        if cells is None or (frames_only and cells[0] == "regions"):
            continue
        axis, holding = cells
        profile = relevance.sum(axis=1) if axis == "frames" else relevance.sum(axis=0)
        hit = int(np.argmax(profile)) in holding
        fact_type = "action" if axis == "frames" else turn["question_type"]
        competing = fact_values[fact_type]
        correct = is_correct_answer(output["answer"], turn["answer_word"], competing)
        stats = results[axis]
        stats["n"] += 1
        stats["hits"] += hit
        stats["baseline"] += len(holding) / len(profile)
        stats["n_correct"] += correct
        stats["hits_when_correct"] += hit and correct
    summary = {"method": method, "turns": len(turns)}
    for axis, stats in results.items():
        if stats["n"] == 0:
            continue
        summary[f"top_{axis[:-1]}_hit_rate"] = stats["hits"] / stats["n"]
        summary[f"uniform_baseline_{axis}"] = stats["baseline"] / stats["n"]
        summary[f"n_{axis[:-1]}_questions"] = stats["n"]
        summary[f"answer_accuracy_{axis[:-1]}_questions"] = stats["n_correct"] / stats["n"]
        if stats["n_correct"]:
            summary[f"top_{axis[:-1]}_hit_rate_when_correct"] = stats["hits_when_correct"] / stats["n_correct"]
    return summary


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(MeasureArguments).parse_args_into_dataclasses(args=argv)
    data_dir = args.data_dir or default_data_dir(args.model)
    if data_dir is None:
        print(f"error: no dataset folder: pass --data_dir (the demo's is {os.path.join(args.model, 'data')})", file=sys.stderr)
        return 1
    if args.split not in ("validation", "test"):
        print(f"error: --split must be 'validation' or 'test', got {args.split!r}", file=sys.stderr)
        return 1
    for name in ("transformers", "transformers_modules", "pipeline_vgd"):  # no per-turn truncation notes
        logging.getLogger(name).setLevel(logging.ERROR)
    methods = ("attention", "rollout") if args.method == "both" else (args.method,)
    chat_pipeline = load_chat_pipeline(args.model)
    turns = load_turns(data_dir, args.split, videos=args.videos)[: args.max_examples]
    for method in methods:
        summary = measure(chat_pipeline, turns, data_dir, method, args.batch_size, args.max_new_tokens, frames_only=args.videos)
        print(json.dumps({"split": args.split, **summary}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
