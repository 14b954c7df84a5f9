"""How well can the scored test questions be answered from the video tokens alone? Classifiers fitted on the training
videos' tokens answer every test question the way its type asks, giving an estimate of what the features allow per
question type (to set beside the trained model's table).

    python benchmarks/probe_answer_ceiling.py DATA_DIR FEATURE_DIR [--stream r3d_18] [--epochs 50]

DATA_DIR: a `python -m avsd_dataset.video_demo` run's data folder (`synthetic_ground_truth.json`); FEATURE_DIR: its
(standardised) features, `<stream>/` and `<stream>_testset/`, `[F, P, D]` per video. The tokens are what `--video_pooling
temporal` gives the model: each clip's regions averaged, `[F, D]`. Two kinds of classifier, each fitted on the
training dialogues' videos and scored on the test dialogues' scored turns:

- linear: softmax regression (`probe_video_features.fit_softmax_regression`, full-batch L-BFGS);
- projection: the model's own video projection `Linear(D, 128) + ReLU` and a linear layer, AdamW (lr 1e-3, weight
  decay 0.01, batch 32) for `--epochs` epochs.

place / colour / object / count from the video's mean token; the action of a segment (its `F / num_actions` clips)
from the mean of its clips' log-probabilities under a per-clip action classifier. `action_first` / `action_last`:
the first / last segment's action; `action_next` / `action_before` (the dialogue names the action of the turn
before): the segment most likely to show that named action, then the action of the segment after / before it. A
question is answered right when the predicted word is the truth (the model's answer must in addition be phrased
right). Prints the accuracy per question type and overall for both classifiers. Results: docs/video.md.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from avsd_dataset.synthetic import FACT_VALUES, VIDEO_QUESTION_TYPES, load_ground_truth  # noqa: E402
from probe_video_features import fit_softmax_regression  # noqa: E402

STATIC = ("place", "color", "object", "count")


def fit_linear(x: np.ndarray, y: np.ndarray, num_classes: int):
    """`probe_video_features`' softmax regression; returns `x -> log-probabilities`."""
    classify = fit_softmax_regression(x, y, num_classes)
    return lambda z: torch.log_softmax(classify(z), -1).numpy()


def fit_projection(x: np.ndarray, y: np.ndarray, num_classes: int, epochs: int, width: int = 128, seed: int = 0):
    """The model's `Linear(D, width) + ReLU` video projection and a linear layer; returns `x -> log-probabilities`."""
    torch.manual_seed(seed)
    inputs, targets = torch.from_numpy(x).float(), torch.from_numpy(y)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], width), torch.nn.ReLU(), torch.nn.Linear(width, num_classes))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
    for _ in range(epochs):
        for batch in torch.randperm(len(inputs)).split(32):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(inputs[batch]), targets[batch]).backward()
            optimizer.step()
    return lambda z: torch.log_softmax(net(torch.from_numpy(z).float()), -1).detach().numpy()


def clip_action_labels(actions: list[str], num_clips: int) -> np.ndarray:
    """`[num_clips]`: the index (in `FACT_VALUES["action"]`) of the action each clip shows, the clips split into
    `len(actions)` consecutive segments as `segment_log_probs` splits them."""
    segments = np.array_split(np.arange(num_clips), len(actions))
    return np.concatenate([np.full(len(segment), FACT_VALUES["action"].index(action)) for action, segment in zip(actions, segments)])


def segment_log_probs(classify, tokens: np.ndarray, num_actions: int) -> np.ndarray:
    """`[num_actions, num_action_values]`: the mean log-probability of each action over a segment's clips."""
    per_clip = classify(tokens)
    return np.stack([segment.mean(0) for segment in np.array_split(per_clip, num_actions)])


def answer(question_type: str, facts: dict, tokens: np.ndarray, classifiers: dict) -> str:
    actions = FACT_VALUES["action"]
    if question_type in STATIC:
        return FACT_VALUES[question_type][int(classifiers[question_type](tokens.mean(0, keepdims=True))[0].argmax())]
    segments = segment_log_probs(classifiers["action"], tokens, len(facts["actions"]))
    if question_type == "action_first":
        return actions[int(segments[0].argmax())]
    if question_type == "action_last":
        return actions[int(segments[-1].argmax())]
    # the dialogue's previous turn names an action; its neighbour in time is asked
    truth_position = facts["actions"].index(facts["_answer"])
    named = facts["actions"][truth_position - 1] if question_type == "action_next" else facts["actions"][truth_position + 1]
    found = int(segments[:, actions.index(named)].argmax())
    neighbour = found + 1 if question_type == "action_next" else found - 1
    if not 0 <= neighbour < len(segments):
        return named  # no segment there: a wrong answer
    return actions[int(segments[neighbour].argmax())]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir")
    parser.add_argument("feature_dir")
    parser.add_argument("--stream", default="r3d_18")
    parser.add_argument("--epochs", type=int, default=50, help="Epochs of the projection classifiers.")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    truth = load_ground_truth(args.data_dir)
    videos = truth["videos"]

    def tokens(image_id: str) -> np.ndarray:
        folder = args.stream + ("_testset" if videos[image_id]["split"] == "test" else "")
        return np.load(os.path.join(args.feature_dir, folder, f"{image_id}.npy")).mean(axis=1)  # [F, D]

    train_ids = sorted(i for i, v in videos.items() if v["split"] == "train")
    train_tokens = {i: tokens(i) for i in train_ids}
    rows = {fact: (np.stack([train_tokens[i].mean(0) for i in train_ids]),
                   np.array([FACT_VALUES[fact].index(videos[i][fact]) for i in train_ids])) for fact in STATIC}
    rows["action"] = (np.concatenate([train_tokens[i] for i in train_ids]),
                      np.concatenate([clip_action_labels(videos[i]["actions"], len(train_tokens[i])) for i in train_ids]))

    results = {}
    for kind in ("linear", "projection"):
        classifiers = {}
        for fact, (x, y) in rows.items():
            values = len(FACT_VALUES[fact])
            classifiers[fact] = fit_linear(x, y, values) if kind == "linear" else fit_projection(x, y, values, args.epochs)
        correct: dict[str, list[bool]] = {}
        for entry in truth["test"]:
            facts = dict(videos[entry["image_id"]], _answer=entry["answer_word"])
            predicted = answer(entry["question_type"], facts, tokens(entry["image_id"]), classifiers)
            correct.setdefault(entry["question_type"], []).append(predicted == entry["answer_word"])
        results[kind] = {t: float(np.mean(correct[t])) for t in VIDEO_QUESTION_TYPES if t in correct}
        results[kind]["all"] = float(np.mean([c for v in correct.values() for c in v]))
        print(kind, {k: round(v, 3) for k, v in results[kind].items()}, flush=True)
    types = [t for t in VIDEO_QUESTION_TYPES if t in results["linear"]]
    print(f"\nanswers from the video tokens alone ({len(train_ids)} training videos, {len(truth['test'])} scored test turns)")
    print("| classifier | all | " + " | ".join(types) + " |")
    print("|---|---|" + "---|" * len(types))
    for kind, row in results.items():
        name = kind if kind == "linear" else f"projection, {args.epochs} epochs"
        print(f"| {name} | {row['all']:.3f} | " + " | ".join(f"{row[t]:.2f}" for t in types) + " |")
    return results


if __name__ == "__main__":
    main()
