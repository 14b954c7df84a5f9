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
"""A synthetic video-grounded dialogue dataset in the exact DSTC7 AVSD format.

[`generate_synthetic_avsd`] writes, for a seed and a size:

```
<output_dir>/train_set4DSTC7-AVSD.json              # dialogues, AVSD format (all answers given)
<output_dir>/valid_set4DSTC7-AVSD.json
<output_dir>/test_set4DSTC7-AVSD.json               # last answer of each dialogue is "__UNDISCLOSED__"
<output_dir>/test_set4DSTC7-AVSD_multiref.json      # COCO captions, ids "<image_id>_<turn>", several refs
<output_dir>/features/<video_stream>/<image_id>.npy          # [F, P, D] float32, train + validation
<output_dir>/features/<video_stream>_testset/<image_id>.npy  # [F, P, D] float32, test
<output_dir>/features/<audio_stream>[_testset]/<image_id>.npy  # [F_a, D_a] float32, only if audio_stream
<output_dir>/synthetic_ground_truth.json            # facts of every video, fact word of every turn
<output_dir>/synthetic_config.json                  # the arguments (written last: the cache key)
```

## The task

Every video is a person (a man or a woman, always named in the caption) in a room, with `count` identical
objects of one colour on a table, who performs `num_actions` different actions one after the other. The
features are built from fixed random prototype vectors (one per fact value, drawn from the seed) plus Gaussian
noise, so a fact can only be read from the features:

| fact | values | where it lives in the `[F, P, D]` features |
|---|---|---|
| `place` | 8 rooms | the room's prototype is added to every region of every frame |
| `object` | 8 objects | added to the `count` regions holding an object (random, fixed over time), in every frame |
| `color` | 8 colours | added to the same regions as the object (bound to it) |
| `count` | `one` .. `four` | the number of regions holding the object (at most `num_regions`) |
| `action` | 8 verbs | the `num_actions` actions split the frames into contiguous segments; action `k` is added to every region of the frames of segment `k` |
| `sound` | 8 sounds | only with `audio_stream`: added to every frame of the `[F_a, D_a]` audio stream |

Captions name the person and a random subset of the facts (the room, the object with its colour and/or count,
one of the actions without its position, the sound). A dialogue then asks, one turn each, about facts that are
*not* known yet from the caption or from the earlier turns (so no question is answerable from the text alone),
with these question types:

| question type | example question | answer from |
|---|---|---|
| `place` | "where is she ?" | the scene vector |
| `object` | "what is on the table ?" | object regions |
| `color` | "what color is the cup ?" | object regions (the object may be named) |
| `count` | "how many cups are on the table ?" | number of object regions |
| `action_first` | "what does she do first ?" | first segment (temporal order) |
| `action_last` | "what does she do at the end ?" | last segment (temporal order) |
| `action_next` | "what does she do after that ?" | the segment after the action named in the *previous answer* (history + temporal order) |
| `action_before` | "what does she do before she laughs ?" | the segment before an action named earlier in the caption or history (temporal order) |
| `sound` | "what can you hear ?" | the audio stream (only with `audio_stream`) |

Answers are short sentences in several phrasings ("first she walks .", "she walks first .", ...), so the test
split's multi-reference file holds `num_references` different phrasings of the same fact. In the test split the
scored (last) turns are balanced: question types in turn, fact values cycling through a shuffled vocabulary.

Average pooling over time (the paper's "spatial" ablation) removes the order of the actions (the four action
question types); average pooling over space ("temporal") keeps every fact, the count only as a magnitude.

The defaults (1,500 / 100 / 192 dialogues, F=4 frames x P=4 regions x D=64, noise 1.0, 6 references) are the
embedded demo: about 9,800 training turns, written in about a second. Feature elements have variance
`1 (room) + 1 (action) [+ 2 (object, colour)] + noise**2`.

## Answer accuracy

[`answer_accuracy`] counts a predicted answer as correct iff its words contain the turn's fact word and none
of the other values of the same fact type (the *competing* words). Its chance level is the accuracy of the best
constant answer per question type on the evaluated turns:
`chance = sum_t freq(t) * max_v p(v | t)`, with `t` the question types and `v` the fact words. With the balanced
default test split (192 = 8 types x 24 turns) it is `(7 x 1/8 + 1/4) / 8 = 0.140625`. A system that reads the
video of another dialogue scores about the same, since the facts of two videos are independent.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import string
from collections import Counter
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np


GENERATOR_VERSION = 1

TRAIN_FILE = "train_set4DSTC7-AVSD.json"
VALID_FILE = "valid_set4DSTC7-AVSD.json"
TEST_FILE = "test_set4DSTC7-AVSD.json"
MULTIREF_FILE = "test_set4DSTC7-AVSD_multiref.json"
GROUND_TRUTH_FILE = "synthetic_ground_truth.json"
CONFIG_FILE = "synthetic_config.json"
FEATURES_DIR = "features"
TEST_DIR_SUFFIX = "_testset"
UNDISCLOSED = "__UNDISCLOSED__"

SPLITS = ("train", "validation", "test")
SPLIT_FILES = {"train": TRAIN_FILE, "validation": VALID_FILE, "test": TEST_FILE}

# Fact vocabularies. All words are single tokens, pairwise different across fact types, never used by a
# template, and (places, objects) start with a consonant so that "a <word>" is always grammatical.
FACT_VALUES: dict[str, tuple[str, ...]] = {
    "place": ("kitchen", "bedroom", "bathroom", "garage", "hallway", "basement", "pantry", "closet"),
    "object": ("cup", "book", "phone", "box", "towel", "laptop", "bottle", "pillow"),
    "color": ("red", "blue", "green", "yellow", "black", "white", "brown", "pink"),
    "count": ("one", "two", "three", "four"),
    "action": ("walks", "sits", "eats", "drinks", "laughs", "sneezes", "dances", "waves"),
    "sound": ("music", "barking", "knocking", "ringing", "thunder", "whistling", "traffic", "applause"),
}
GENDERS = ("man", "woman")
PRONOUNS = {"man": "he", "woman": "she"}

# Question type -> fact type of its answer.
QUESTION_FACT_TYPES: dict[str, str] = {
    "place": "place",
    "object": "object",
    "color": "color",
    "count": "count",
    "action_first": "action",
    "action_last": "action",
    "action_next": "action",
    "action_before": "action",
    "sound": "sound",
}
VIDEO_QUESTION_TYPES = ("place", "object", "color", "count", "action_first", "action_last", "action_next", "action_before")
AUDIO_QUESTION_TYPES = ("sound",)

# ------------------------------------------------------------------------------------------------------------
# Text templates. "{p}" is the pronoun (he / she), "{v}" the fact word, "{s}" / "{o}" the object word in the
# singular / plural, "{a}" an action.
# ------------------------------------------------------------------------------------------------------------
QUESTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "place": ("where is {p} ?", "which room is {p} in ?", "where does the video take place ?", "what room is this ?"),
    "object": ("what is on the table ?", "what object is on the table ?", "what is lying on the table ?"),
    "color": ("what color is the {s} ?", "what color is the {s} on the table ?"),
    "color_unnamed": ("what color is the thing on the table ?", "what color is the object on the table ?"),
    "count": ("how many {o} are on the table ?", "how many {o} are there ?"),
    "count_unnamed": ("how many things are on the table ?", "how many objects are there on the table ?"),
    "action_first": ("what does {p} do first ?", "what is the first thing {p} does ?", "what does {p} do at the start ?"),
    "action_last": ("what does {p} do at the end ?", "what is the last thing {p} does ?", "how does the video end ?"),
    "action_next": ("what does {p} do after that ?", "what does {p} do next ?", "and what happens after that ?"),
    "action_before": ("what does {p} do before {p} {a} ?", "what happens before {p} {a} ?", "what does {p} do right before {p} {a} ?"),
    "sound": ("what can you hear ?", "is there any sound ?", "what sound is in the video ?"),
}
ANSWER_TEMPLATES: dict[str, tuple[str, ...]] = {
    "place": ("{p} is in the {v} .", "it is a {v} .", "the video takes place in a {v} .", "{p} is in a {v} .",
              "it looks like a {v} .", "in the {v} .", "this is the {v} .", "i think it is the {v} ."),
    "object": ("it is a {v} .", "there is a {v} on the table .", "i see a {v} .", "a {v} .", "it looks like a {v} .",
               "the object is a {v} .", "i think it is a {v} ."),
    "color": ("it is {v} .", "{v} .", "it looks {v} .", "the color is {v} .", "i think it is {v} .", "it is mostly {v} .",
              "they are {v} ."),
    "count": ("there are {v} .", "i can see {v} .", "{v} .", "i count {v} .", "there are {v} of them .",
              "i think there are {v} .", "{v} in total ."),
    "count_one": ("there is {v} .", "i can see {v} .", "{v} .", "i count {v} .", "there is only {v} .",
                  "i think there is {v} .", "{v} in total ."),
    "action_first": ("first {p} {v} .", "{p} {v} first .", "at the start {p} {v} .", "in the beginning {p} {v} .",
                     "{p} first {v} .", "the video starts as {p} {v} ."),
    "action_last": ("at the end {p} {v} .", "finally {p} {v} .", "{p} {v} at the end .", "in the end {p} {v} .",
                    "lastly {p} {v} .", "the video ends as {p} {v} ."),
    "action_next": ("then {p} {v} .", "after that {p} {v} .", "next {p} {v} .", "{p} {v} after that .", "{p} then {v} .",
                    "right after that {p} {v} ."),
    "action_before": ("before that {p} {v} .", "{p} {v} before that .", "just before that {p} {v} .",
                      "prior to that {p} {v} .", "right before that {p} {v} .", "{p} {v} just before ."),
    "sound": ("i can hear {v} .", "there is {v} in the background .", "{v} .", "you can hear {v} .",
              "it sounds like {v} .", "i hear some {v} ."),
}

_ID_ALPHABET = np.array(list(string.ascii_uppercase + string.digits))
_WORD_RE = re.compile(r"[a-z0-9_']+")


# ------------------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class SyntheticAVSDConfig:
    r"""
    Everything that determines a synthetic AVSD dataset. The files written are a deterministic function of it.

    Args:
        num_train_dialogs / num_valid_dialogs / num_test_dialogs (`int`):
            Dialogues (= videos) per split. Every test dialogue has one scored (last) turn.
        num_frames (`int`, defaults to 4):
            F, frames (temporal segments) per video.
        num_regions (`int`, defaults to 6):
            P, spatial regions per frame. Object counts go up to `min(4, num_regions)`.
        feature_dim (`int`, defaults to 64):
            D, the size of one region feature.
        num_actions (`int`, defaults to 4):
            Actions per video (distinct, one per temporal segment); `2 <= num_actions <= min(num_frames, 8)`.
        noise (`float`, defaults to 1.0):
            Standard deviation of the Gaussian noise added to every feature element. Prototypes have unit
            variance per element (norm `sqrt(D)`).
        video_stream (`str`, defaults to `"i3d_rgb"`):
            Name of the `[F, P, D]` stream (its folder under `features/`).
        audio_stream (`str`, *optional*):
            If given (e.g. `"vggish"`), also write an `[audio_frames, audio_feature_dim]` stream carrying a
            `sound` fact, and ask `sound` questions.
        audio_frames (`int`, defaults to 8) / audio_feature_dim (`int`, defaults to 32):
            Shape of the audio stream.
        num_references (`int`, defaults to 6):
            References per test turn in the multi-reference file (at most 6, the fewest phrasings of a type).
        max_turns (`int`, defaults to 10):
            The most question / answer turns of a dialogue (AVSD has 10).
        seed (`int`, defaults to 0):
            Seed of everything: prototypes, facts, dialogues, noise, image ids.
    """

    num_train_dialogs: int = 1500
    num_valid_dialogs: int = 100
    num_test_dialogs: int = 192
    num_frames: int = 4
    num_regions: int = 4
    feature_dim: int = 64
    num_actions: int = 4
    noise: float = 1.0
    video_stream: str = "i3d_rgb"
    audio_stream: Optional[str] = None
    audio_frames: int = 8
    audio_feature_dim: int = 32
    num_references: int = 6
    max_turns: int = 10
    seed: int = 0

    def __post_init__(self):
        for name in ("num_train_dialogs", "num_valid_dialogs", "num_test_dialogs"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.num_regions < 1:
            raise ValueError(f"num_regions must be >= 1, got {self.num_regions}")
        if not 2 <= self.num_actions <= len(FACT_VALUES["action"]):
            raise ValueError(f"num_actions must be in [2, {len(FACT_VALUES['action'])}], got {self.num_actions}")
        if self.num_frames < self.num_actions:
            raise ValueError(f"num_frames ({self.num_frames}) must be >= num_actions ({self.num_actions})")
        if self.feature_dim < 1 or self.audio_feature_dim < 1 or self.audio_frames < 1:
            raise ValueError("feature_dim, audio_feature_dim and audio_frames must be positive")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")
        if not 1 <= self.num_references <= 6:
            raise ValueError(f"num_references must be in [1, 6], got {self.num_references}")
        if self.max_turns < 2:
            raise ValueError(f"max_turns must be >= 2 (history questions need a previous turn), got {self.max_turns}")
        if self.audio_stream is not None and self.audio_stream == self.video_stream:
            raise ValueError("audio_stream and video_stream must have different names")

    @property
    def count_values(self) -> tuple[str, ...]:
        """The count words this configuration can produce."""
        return FACT_VALUES["count"][: min(len(FACT_VALUES["count"]), self.num_regions)]

    @property
    def fact_values(self) -> dict[str, tuple[str, ...]]:
        """Fact type -> its possible words, for this configuration."""
        values = dict(FACT_VALUES)
        values["count"] = self.count_values
        if self.audio_stream is None:
            del values["sound"]
        return values

    @property
    def question_types(self) -> tuple[str, ...]:
        """The question types asked in this configuration."""
        return VIDEO_QUESTION_TYPES + (AUDIO_QUESTION_TYPES if self.audio_stream is not None else ())

    @property
    def streams(self) -> tuple[str, ...]:
        """Feature streams written, the spatio-temporal video stream first."""
        return (self.video_stream,) + ((self.audio_stream,) if self.audio_stream is not None else ())

    def stream_shapes(self) -> dict[str, tuple[int, ...]]:
        """Stream name -> shape of one video's array."""
        shapes = {self.video_stream: (self.num_frames, self.num_regions, self.feature_dim)}
        if self.audio_stream is not None:
            shapes[self.audio_stream] = (self.audio_frames, self.audio_feature_dim)
        return shapes

    def num_dialogs(self, split: str) -> int:
        """Number of dialogues of `split` ("train", "validation" or "test")."""
        return {"train": self.num_train_dialogs, "validation": self.num_valid_dialogs, "test": self.num_test_dialogs}[split]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, with the generator version (what the cache compares)."""
        return {"generator_version": GENERATOR_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SyntheticAVSDConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


@dataclasses.dataclass
class SyntheticAVSDInfo:
    """What [`generate_synthetic_avsd`] wrote (or found already written).

    Attributes:
        output_dir: the dataset folder (`data_dir` of the AVSD loader).
        config: the [`SyntheticAVSDConfig`].
        regenerated: `False` when the folder already held this exact dataset and nothing was written.
        files: role -> path ("train", "validation", "test", "multiref", "ground_truth", "config").
        feature_root: folder holding one sub-folder per stream (`<stream>/`, `<stream>_testset/`).
        stream_shapes: stream -> shape of one video's array.
        num_dialogs: split -> number of dialogues.
        chance: chance level of the test answers (see [`answer_accuracy`]).
    """

    output_dir: str
    config: SyntheticAVSDConfig
    regenerated: bool
    files: dict[str, str]
    feature_root: str
    stream_shapes: dict[str, tuple[int, ...]]
    num_dialogs: dict[str, int]
    chance: float

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["config"] = self.config.to_dict()
        return data


# ------------------------------------------------------------------------------------------------------------
# Prototypes and features
# ------------------------------------------------------------------------------------------------------------
def _rng(config: SyntheticAVSDConfig, *purpose: int) -> np.random.Generator:
    return np.random.default_rng([int(config.seed), GENERATOR_VERSION, *purpose])


def make_prototypes(config: SyntheticAVSDConfig) -> dict[str, np.ndarray]:
    """The fixed random prototype vectors of a configuration (a deterministic function of its seed and dims).

    Returns fact type -> float32 array `[num_values, dim]` (rows in the order of `FACT_VALUES`), with fact types
    `place`, `object`, `color`, `action` and, with an audio stream, `sound` (of dim `audio_feature_dim`).
    Counts have no prototype: they are the number of regions holding the object. Every row has norm `sqrt(dim)`.
    """
    rng = _rng(config, 0)
    prototypes = {}
    for fact_type in ("place", "object", "color", "action", "sound"):
        num_values = len(FACT_VALUES[fact_type])
        dim = config.audio_feature_dim if fact_type == "sound" else config.feature_dim
        vectors = rng.standard_normal((num_values, dim))
        vectors *= np.sqrt(dim) / np.linalg.norm(vectors, axis=1, keepdims=True)
        prototypes[fact_type] = vectors.astype(np.float32)
    if config.audio_stream is None:
        del prototypes["sound"]
    return prototypes


def _segment_of_frame(config: SyntheticAVSDConfig) -> np.ndarray:
    """Action (segment) index of every frame: `num_actions` contiguous segments covering the frames."""
    return (np.arange(config.num_frames) * config.num_actions) // config.num_frames


def _sample_facts(rng: np.random.Generator, config: SyntheticAVSDConfig) -> dict[str, Any]:
    """Fact indices of one video (words are looked up later)."""
    count_index = int(rng.integers(len(config.count_values)))
    facts = {
        "gender": int(rng.integers(len(GENDERS))),
        "place": int(rng.integers(len(FACT_VALUES["place"]))),
        "object": int(rng.integers(len(FACT_VALUES["object"]))),
        "color": int(rng.integers(len(FACT_VALUES["color"]))),
        "count": count_index,
        "actions": [int(a) for a in rng.permutation(len(FACT_VALUES["action"]))[: config.num_actions]],
    }
    if config.audio_stream is not None:
        facts["sound"] = int(rng.integers(len(FACT_VALUES["sound"])))
    return facts


def _layout(rng: np.random.Generator, config: SyntheticAVSDConfig, facts: Mapping[str, Any]) -> dict[str, list[int]]:
    """Where things are: the regions holding the objects (the same in every frame)."""
    num_objects = facts["count"] + 1
    object_regions = sorted(int(r) for r in rng.choice(config.num_regions, size=num_objects, replace=False))
    return {"object_regions": object_regions}


def _render_video_features(
    rng: np.random.Generator,
    config: SyntheticAVSDConfig,
    prototypes: Mapping[str, np.ndarray],
    facts: Mapping[str, Any],
    layout: Mapping[str, list[int]],
) -> dict[str, np.ndarray]:
    """The feature arrays of one video: prototypes placed as described in the module docstring, plus noise."""
    frames, regions, dim = config.num_frames, config.num_regions, config.feature_dim
    video = config.noise * rng.standard_normal((frames, regions, dim))
    video += prototypes["place"][facts["place"]]
    video[:, layout["object_regions"]] += prototypes["object"][facts["object"]] + prototypes["color"][facts["color"]]
    actions = np.asarray(facts["actions"])[_segment_of_frame(config)]  # action of every frame
    video += prototypes["action"][actions][:, None, :]
    arrays = {config.video_stream: video.astype(np.float32)}
    if config.audio_stream is not None:
        audio = config.noise * rng.standard_normal((config.audio_frames, config.audio_feature_dim))
        audio += prototypes["sound"][facts["sound"]]
        arrays[config.audio_stream] = audio.astype(np.float32)
    return arrays


def decode_facts_nearest_prototype(
    features: Mapping[str, np.ndarray], config: SyntheticAVSDConfig, prototypes: Optional[Mapping[str, np.ndarray]] = None
) -> dict[str, Any]:
    """Read the facts of one video back from its features with nearest-prototype matching (an oracle decoder).

    This shows that the answers are in the video: `place` is the prototype closest to the mean region; the
    object regions are the regions whose time-averaged feature matches an object prototype, their number is the
    count, and their mean gives the object and the colour; the action of a segment is the prototype closest to
    the mean of its frames minus the mean over time.

    Args:
        features: stream -> array, as written for one video (e.g. `{"i3d_rgb": np.load(path)}`).
        config: the dataset's configuration.
        prototypes: the output of [`make_prototypes`] (recomputed if not given).

    Returns:
        A dict with the fact words: `place`, `object`, `color`, `count`, `actions` (list, in temporal order),
        and `sound` when the config has an audio stream.
    """
    prototypes = make_prototypes(config) if prototypes is None else prototypes
    video = np.asarray(features[config.video_stream], dtype=np.float64)
    dim = video.shape[-1]
    place = int(np.argmax(prototypes["place"] @ video.mean(axis=(0, 1))))
    region_means = video.mean(axis=0)  # [P, D]
    object_scores = region_means @ prototypes["object"].T / dim  # ~1 for the right object in its regions, ~0 else
    is_object_region = object_scores.max(axis=1) > 0.5
    if not is_object_region.any():
        is_object_region[np.argmax(object_scores.max(axis=1))] = True
    object_mean = region_means[is_object_region].mean(axis=0)
    segments = _segment_of_frame(config)
    frame_means = video.mean(axis=1)  # [F, D]
    frame_means -= frame_means.mean(axis=0)  # remove what does not change over time (room, objects)
    segment_means = np.stack([frame_means[segments == k].mean(axis=0) for k in range(config.num_actions)])
    decoded = {
        "place": FACT_VALUES["place"][place],
        "object": FACT_VALUES["object"][int(np.argmax(prototypes["object"] @ object_mean))],
        "color": FACT_VALUES["color"][int(np.argmax(prototypes["color"] @ object_mean))],
        "count": FACT_VALUES["count"][min(int(is_object_region.sum()), len(FACT_VALUES["count"])) - 1],
        "actions": [FACT_VALUES["action"][int(a)] for a in (segment_means @ prototypes["action"].T).argmax(axis=1)],
    }
    if config.audio_stream is not None:
        audio = np.asarray(features[config.audio_stream], dtype=np.float64)
        decoded["sound"] = FACT_VALUES["sound"][int(np.argmax(prototypes["sound"] @ audio.mean(axis=0)))]
    return decoded


# ------------------------------------------------------------------------------------------------------------
# Dialogues
# ------------------------------------------------------------------------------------------------------------
# A "slot" is one fact of a video: "place", "object", "color", "count", "sound" or ("action", k).
_CAPTION_PLACE_PROBABILITY = 0.3
_CAPTION_OBJECT_PROBABILITY = 0.4
_CAPTION_OBJECT_DETAIL_PROBABILITY = 0.3
_CAPTION_SOUND_PROBABILITY = 0.3
_CAPTION_ACTION_PROBABILITY = 0.5
# Relative weights of the askable question types when planning a dialogue (see `_plan_dialog`).
_QUESTION_WEIGHTS = {"action_next": 8.0, "action_before": 0.7}
_MAX_PLAN_ATTEMPTS = 1000


def _sample_caption_slots(rng: np.random.Generator, config: SyntheticAVSDConfig) -> list:
    """Which facts the caption (and the summary) mention.

    The room with probability 0.3; the object with probability 0.4 and then each of its colour and count with
    probability 0.3; the sound (if any) with probability 0.3; and, with probability 0.5, one action without its
    position ("at some point she laughs .").
    """
    mentioned = []
    if rng.random() < _CAPTION_PLACE_PROBABILITY:
        mentioned.append("place")
    if rng.random() < _CAPTION_OBJECT_PROBABILITY:
        mentioned.append("object")
        mentioned.extend(slot for slot in ("color", "count") if rng.random() < _CAPTION_OBJECT_DETAIL_PROBABILITY)
    if config.audio_stream is not None and rng.random() < _CAPTION_SOUND_PROBABILITY:
        mentioned.append("sound")
    if rng.random() < _CAPTION_ACTION_PROBABILITY:
        mentioned.append(("action", int(rng.integers(config.num_actions))))
    return mentioned


def _available_questions(config: SyntheticAVSDConfig, revealed: set, last_action: Optional[int]) -> list[tuple]:
    """(question type, [(answer slot, named action index or None), ...]) of every question type askable now."""
    last = config.num_actions - 1
    options = []
    for slot in ("place", "object", "color", "count", "sound"):
        if slot == "sound" and config.audio_stream is None:
            continue
        if slot not in revealed:
            options.append((slot, [(slot, None)]))
    if ("action", 0) not in revealed:
        options.append(("action_first", [(("action", 0), None)]))
    if ("action", last) not in revealed:
        options.append(("action_last", [(("action", last), None)]))
    if last_action is not None and last_action < last and ("action", last_action + 1) not in revealed:
        options.append(("action_next", [(("action", last_action + 1), None)]))
    before = [(("action", k - 1), k) for k in range(1, config.num_actions) if ("action", k) in revealed and ("action", k - 1) not in revealed]
    if before:
        options.append(("action_before", before))
    return options


def _plan_dialog(rng: np.random.Generator, config: SyntheticAVSDConfig, caption_slots: Sequence) -> list[tuple]:
    """A sequence of (question type, answer slot, named action) turns, each asking a fact not revealed before.

    Each turn picks one askable question type at random, with weight 8 for `action_next` ("what does she do
    after that ?", only possible right after an answer naming an action, so that many turns need the dialogue
    history), 0.7 for `action_before` (otherwise the most often askable type) and 1 for the others; this makes
    the question types of the training split roughly balanced.
    """
    revealed = set(caption_slots)
    last_action = None
    turns = []
    while len(turns) < config.max_turns:
        options = _available_questions(config, revealed, last_action)
        if not options:
            break
        weights = np.array([_QUESTION_WEIGHTS.get(qtype, 1.0) for qtype, _ in options])
        qtype, candidates = options[int(rng.choice(len(options), p=weights / weights.sum()))]
        slot, named = candidates[int(rng.integers(len(candidates)))]
        turns.append((qtype, slot, named))
        revealed.add(slot)
        last_action = slot[1] if isinstance(slot, tuple) else None
    return turns


def _slot_word(facts: Mapping[str, Any], slot) -> str:
    if isinstance(slot, tuple):
        return FACT_VALUES["action"][facts["actions"][slot[1]]]
    return FACT_VALUES[slot][facts[slot]]


def _plural(word: str) -> str:
    return word + "es" if word.endswith("x") else word + "s"


def _render_caption(facts: Mapping[str, Any], caption_slots: Sequence, summary: bool) -> str:
    """Caption (or, with `summary=True`, a differently worded summary) naming exactly the facts in `caption_slots`."""
    gender = GENDERS[facts["gender"]]
    pronoun = PRONOUNS[gender]
    place = f"the {_slot_word(facts, 'place')}" if "place" in caption_slots else "a room"
    parts = [f"the video shows a {gender} in {place} ." if summary else f"a {gender} is in {place} ."]
    if "object" in caption_slots:
        obj = _slot_word(facts, "object")
        color = _slot_word(facts, "color") + " " if "color" in caption_slots else ""
        if "count" in caption_slots:
            count = _slot_word(facts, "count")
            things = f"{count} {color}{obj if count == 'one' else _plural(obj)}"
        else:
            things = f"the {color}{obj}"
        parts.append(f"{pronoun} stands near {things} on the table ." if summary else f"{pronoun} looks at {things} on the table .")
    else:
        parts.append("there is a table in the room ." if summary else "there is a table .")
    actions = [slot for slot in caption_slots if isinstance(slot, tuple)]
    for slot in actions:
        verb = _slot_word(facts, slot)
        parts.append(f"{pronoun} also {verb} ." if summary else f"at some point {pronoun} {verb} .")
    if "sound" in caption_slots:
        parts.append(f"there is {_slot_word(facts, 'sound')} ." if summary else f"you can hear {_slot_word(facts, 'sound')} .")
    return " ".join(parts)


def _question_text(rng: np.random.Generator, facts: Mapping[str, Any], qtype: str, named: Optional[int], revealed: set) -> str:
    pronoun = PRONOUNS[GENDERS[facts["gender"]]]
    key = qtype
    if qtype in ("color", "count") and "object" not in revealed:
        key = qtype + "_unnamed"
    template = QUESTION_TEMPLATES[key][int(rng.integers(len(QUESTION_TEMPLATES[key])))]
    obj = _slot_word(facts, "object")
    named_action = FACT_VALUES["action"][facts["actions"][named]] if named is not None else ""
    return template.format(p=pronoun, s=obj, o=_plural(obj), a=named_action)


def _answer_templates(qtype: str, word: str) -> tuple[str, ...]:
    if qtype == "count" and word == "one":
        return ANSWER_TEMPLATES["count_one"]
    return ANSWER_TEMPLATES[qtype]


def _answer_texts(rng: np.random.Generator, facts: Mapping[str, Any], qtype: str, word: str, num: int) -> list[str]:
    """`num` different phrasings of the answer `word` to a question of type `qtype`, in random order."""
    templates = _answer_templates(qtype, word)
    pronoun = PRONOUNS[GENDERS[facts["gender"]]]
    chosen = rng.choice(len(templates), size=num, replace=False)
    return [templates[int(i)].format(p=pronoun, v=word) for i in chosen]


def _render_dialog(
    rng: np.random.Generator, facts: Mapping[str, Any], caption_slots: Sequence, plan: Sequence[tuple], num_references: int
) -> tuple[list[dict], list[dict]]:
    """AVSD turns `[{"question", "answer"}]` and their annotations `[{"question_type", "answer_word", "references"}]`."""
    revealed = set(caption_slots)
    turns, annotations = [], []
    for qtype, slot, named in plan:
        question = _question_text(rng, facts, qtype, named, revealed)
        word = _slot_word(facts, slot)
        references = _answer_texts(rng, facts, qtype, word, num_references)
        turns.append({"answer": references[0], "question": question})
        annotations.append({"question_type": qtype, "answer_word": word, "references": references})
        revealed.add(slot)
    return turns, annotations


def _force_slot_value(facts: dict, slot, value_index: int) -> None:
    """Give fact `slot` the value `value_index`, keeping the actions of a video distinct."""
    if isinstance(slot, tuple):
        actions = facts["actions"]
        if value_index in actions:
            other = actions.index(value_index)
            actions[other], actions[slot[1]] = actions[slot[1]], actions[other]
        else:
            actions[slot[1]] = value_index
    else:
        facts[slot] = value_index


def _make_image_ids(rng: np.random.Generator, num: int) -> list[str]:
    """`num` distinct AVSD-like video ids: 5 upper-case letters or digits."""
    ids, seen = [], set()
    while len(ids) < num:
        for row in rng.choice(_ID_ALPHABET, size=(max(num - len(ids), 1) * 2, 5)):
            image_id = "".join(row)
            if image_id not in seen:
                seen.add(image_id)
                ids.append(image_id)
                if len(ids) == num:
                    break
    return ids


def _build_split(
    rng: np.random.Generator, config: SyntheticAVSDConfig, split: str, image_ids: Sequence[str]
) -> list[dict]:
    """Facts, layout and dialogue of every video of a split.

    Train / validation dialogues are random plans. A test dialogue is cut after a turn of a prescribed type whose
    fact gets a prescribed value: types go round-robin over `config.question_types`, values cycle through a
    shuffled vocabulary per type, so the scored answers are balanced.
    """
    items = []
    question_types = config.question_types
    value_cycles: dict[str, list[int]] = {}
    for index, image_id in enumerate(image_ids):
        facts = _sample_facts(rng, config)
        caption_slots = _sample_caption_slots(rng, config)
        if split == "test":
            target_type = question_types[index % len(question_types)]
            for _ in range(_MAX_PLAN_ATTEMPTS):
                plan = _plan_dialog(rng, config, caption_slots)
                positions = [i for i, turn in enumerate(plan) if turn[0] == target_type]
                if positions:
                    break
                caption_slots = _sample_caption_slots(rng, config)
            else:
                raise RuntimeError(f"Could not plan a test dialogue ending with a '{target_type}' question")
            plan = plan[: int(rng.choice(positions)) + 1]
            fact_type = QUESTION_FACT_TYPES[target_type]
            num_values = len(config.fact_values[fact_type])
            cycle = value_cycles.setdefault(target_type, [])
            if not cycle:
                cycle.extend(int(v) for v in rng.permutation(num_values))
            _force_slot_value(facts, plan[-1][1], cycle.pop())
        else:
            plan = _plan_dialog(rng, config, caption_slots)
        layout = _layout(rng, config, facts)
        turns, annotations = _render_dialog(rng, facts, caption_slots, plan, config.num_references)
        items.append(
            {
                "image_id": image_id,
                "facts": facts,
                "layout": layout,
                "caption": _render_caption(facts, caption_slots, summary=False),
                "summary": _render_caption(facts, caption_slots, summary=True),
                "turns": turns,
                "annotations": annotations,
            }
        )
    return items


def _fact_words(facts: Mapping[str, Any]) -> dict[str, Any]:
    words = {
        "gender": GENDERS[facts["gender"]],
        "place": FACT_VALUES["place"][facts["place"]],
        "object": FACT_VALUES["object"][facts["object"]],
        "color": FACT_VALUES["color"][facts["color"]],
        "count": FACT_VALUES["count"][facts["count"]],
        "actions": [FACT_VALUES["action"][a] for a in facts["actions"]],
    }
    if "sound" in facts:
        words["sound"] = FACT_VALUES["sound"][facts["sound"]]
    return words


# ------------------------------------------------------------------------------------------------------------
# Writing, caching, loading
# ------------------------------------------------------------------------------------------------------------
def _write_json(path: str, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)
        f.write("\n")


def _stream_dir(feature_root: str, stream: str, split: str) -> str:
    return os.path.join(feature_root, stream + (TEST_DIR_SUFFIX if split == "test" else ""))


def _read_config(output_dir: str) -> Optional[dict]:
    path = os.path.join(output_dir, CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_synthetic_avsd_cached(output_dir: str, config: Optional[SyntheticAVSDConfig] = None, **kwargs) -> bool:
    """Whether `output_dir` already holds the dataset [`generate_synthetic_avsd`] would write for these arguments.

    Cheap: compares `synthetic_config.json` (written last, so an interrupted generation never counts) with the
    arguments, checks that the JSON files exist and that every feature folder holds the expected number of
    `.npy` files.
    """
    config = _resolve_config(config, kwargs)
    if _read_config(output_dir) != config.to_dict():
        return False
    for name in (TRAIN_FILE, VALID_FILE, TEST_FILE, MULTIREF_FILE, GROUND_TRUTH_FILE):
        if not os.path.isfile(os.path.join(output_dir, name)):
            return False
    feature_root = os.path.join(output_dir, FEATURES_DIR)
    for stream in config.streams:
        num_train_valid = config.num_train_dialogs + config.num_valid_dialogs
        for split, expected in (("train", num_train_valid), ("test", config.num_test_dialogs)):
            directory = _stream_dir(feature_root, stream, split)
            try:
                found = sum(1 for name in os.listdir(directory) if name.endswith(".npy"))
            except OSError:
                return False
            if found != expected:
                return False
    return True


def _resolve_config(config: Optional[SyntheticAVSDConfig], kwargs: Mapping[str, Any]) -> SyntheticAVSDConfig:
    if config is None:
        return SyntheticAVSDConfig(**kwargs)
    if kwargs:
        return dataclasses.replace(config, **kwargs)
    return config


def _remove_previous_output(output_dir: str) -> None:
    """Delete what an earlier generation (recorded in its `synthetic_config.json`) wrote in `output_dir`."""
    previous = _read_config(output_dir)
    config_path = os.path.join(output_dir, CONFIG_FILE)
    if os.path.exists(config_path):
        os.remove(config_path)
    if previous is None:
        return
    streams = [previous.get("video_stream"), previous.get("audio_stream")]
    feature_root = os.path.join(output_dir, FEATURES_DIR)
    for stream in streams:
        if not stream:
            continue
        for split in ("train", "test"):
            directory = _stream_dir(feature_root, stream, split)
            if os.path.isdir(directory):
                shutil.rmtree(directory)


def _info(output_dir: str, config: SyntheticAVSDConfig, regenerated: bool, chance: float) -> SyntheticAVSDInfo:
    files = {split: os.path.join(output_dir, SPLIT_FILES[split]) for split in SPLITS}
    files["multiref"] = os.path.join(output_dir, MULTIREF_FILE)
    files["ground_truth"] = os.path.join(output_dir, GROUND_TRUTH_FILE)
    files["config"] = os.path.join(output_dir, CONFIG_FILE)
    return SyntheticAVSDInfo(
        output_dir=output_dir,
        config=config,
        regenerated=regenerated,
        files=files,
        feature_root=os.path.join(output_dir, FEATURES_DIR),
        stream_shapes=config.stream_shapes(),
        num_dialogs={split: config.num_dialogs(split) for split in SPLITS},
        chance=chance,
    )


def generate_synthetic_avsd(
    output_dir: str,
    config: Optional[SyntheticAVSDConfig] = None,
    overwrite: bool = False,
    **kwargs,
) -> SyntheticAVSDInfo:
    """Write a synthetic video-grounded dialogue dataset in the exact DSTC7 AVSD format (see the module docstring).

    Args:
        output_dir: folder to write into (created if needed).
        config: a [`SyntheticAVSDConfig`]; keyword arguments override its fields (or build one from the
            defaults), e.g. `generate_synthetic_avsd(path, num_train_dialogs=200, noise=0.5, seed=1)`.
        overwrite: regenerate even when `output_dir` already holds this exact dataset.

    Returns:
        A [`SyntheticAVSDInfo`] describing the files. When `output_dir` already holds the dataset for the same
        arguments (see [`is_synthetic_avsd_cached`]) nothing is written and `info.regenerated` is `False`.
        The output is a deterministic function of the arguments: the same arguments give byte-identical files.
    """
    config = _resolve_config(config, kwargs)
    if not overwrite and is_synthetic_avsd_cached(output_dir, config):
        chance = chance_level(load_ground_truth(output_dir)["test"])
        return _info(output_dir, config, regenerated=False, chance=chance)

    os.makedirs(output_dir, exist_ok=True)
    _remove_previous_output(output_dir)
    feature_root = os.path.join(output_dir, FEATURES_DIR)
    for stream in config.streams:
        for split in ("train", "test"):
            os.makedirs(_stream_dir(feature_root, stream, split), exist_ok=True)

    prototypes = make_prototypes(config)
    all_ids = _make_image_ids(_rng(config, 1), config.num_train_dialogs + config.num_valid_dialogs + config.num_test_dialogs)
    ground_truth: dict[str, Any] = {
        "generator_version": GENERATOR_VERSION,
        "fact_values": {k: list(v) for k, v in config.fact_values.items()},
        "question_types": {
            qtype: {"fact_type": QUESTION_FACT_TYPES[qtype], "competing_words": list(config.fact_values[QUESTION_FACT_TYPES[qtype]])}
            for qtype in config.question_types
        },
        "streams": {stream: list(shape) for stream, shape in config.stream_shapes().items()},
        "splits": {},
        "test": [],
        "videos": {},
    }
    offset = 0
    for split_index, split in enumerate(SPLITS):
        num = config.num_dialogs(split)
        image_ids = all_ids[offset : offset + num]
        offset += num
        items = _build_split(_rng(config, 2, split_index), config, split, image_ids)
        feature_rng = _rng(config, 3, split_index)
        dialogs, split_turns = [], []
        for item in items:
            arrays = _render_video_features(feature_rng, config, prototypes, item["facts"], item["layout"])
            for stream, array in arrays.items():
                np.save(os.path.join(_stream_dir(feature_root, stream, split), item["image_id"] + ".npy"), array)
            turns = [dict(turn) for turn in item["turns"]]
            if split == "test":
                turns[-1]["answer"] = UNDISCLOSED
            dialogs.append({"image_id": item["image_id"], "caption": item["caption"], "summary": item["summary"], "dialog": turns})
            for turn_index, (turn, annotation) in enumerate(zip(item["turns"], item["annotations"])):
                split_turns.append(
                    {
                        "image_id": item["image_id"],
                        "turn_index": turn_index,
                        "question_type": annotation["question_type"],
                        "answer_word": annotation["answer_word"],
                    }
                )
            ground_truth["videos"][item["image_id"]] = {"split": split, **_fact_words(item["facts"]), **item["layout"]}
            if split == "test":
                annotation = item["annotations"][-1]
                qtype = annotation["question_type"]
                ground_truth["test"].append(
                    {
                        "image_id": item["image_id"],
                        "turn_index": len(item["turns"]) - 1,
                        "question": item["turns"][-1]["question"],
                        "question_type": qtype,
                        "answer_word": annotation["answer_word"],
                        "competing_words": [w for w in config.fact_values[QUESTION_FACT_TYPES[qtype]] if w != annotation["answer_word"]],
                        "references": annotation["references"],
                    }
                )
        ground_truth["splits"][split] = split_turns
        _write_json(
            os.path.join(output_dir, SPLIT_FILES[split]), {"type": "scene_aware_dialog", "version": "0.1", "dialogs": dialogs}
        )

    multiref = {"info": {}, "licenses": [], "images": [], "type": "captions", "annotations": []}
    for number, entry in enumerate(ground_truth["test"], start=1):
        multiref["images"].append({"name": f"{entry['image_id']}_{entry['turn_index']}", "id": number})
        for reference in entry["references"]:
            multiref["annotations"].append({"image_id": number, "id": len(multiref["annotations"]) + 1, "caption": reference})
    _write_json(os.path.join(output_dir, MULTIREF_FILE), multiref)
    chance = chance_level(ground_truth["test"])
    ground_truth["chance"] = chance
    _write_json(os.path.join(output_dir, GROUND_TRUTH_FILE), ground_truth)
    _write_json(os.path.join(output_dir, CONFIG_FILE), config.to_dict())  # last: marks the dataset complete
    return _info(output_dir, config, regenerated=True, chance=chance)


def load_config(output_dir: str) -> SyntheticAVSDConfig:
    """The [`SyntheticAVSDConfig`] a folder was generated with."""
    data = _read_config(output_dir)
    if data is None:
        raise FileNotFoundError(f"No readable {CONFIG_FILE} in {output_dir}: not a (complete) synthetic AVSD folder")
    return SyntheticAVSDConfig.from_dict(data)


def load_ground_truth(output_dir: str) -> dict[str, Any]:
    """The ground-truth sidecar of a generated folder.

    Keys: `fact_values` (fact type -> words), `question_types` (type -> `fact_type` and `competing_words`: every
    word of that fact type; any of them but the right one makes an answer wrong),
    `test` (one entry per test dialogue, in file order: `image_id`, `turn_index`, `question`, `question_type`,
    `answer_word`, `competing_words` (the other words of the fact type), `references`), `splits` (split -> the
    `image_id`, `turn_index`, `question_type`, `answer_word` of every turn), `videos` (image_id -> its facts
    and layout), `streams`, `chance`.
    """
    with open(os.path.join(output_dir, GROUND_TRUTH_FILE), encoding="utf-8") as f:
        return json.load(f)


def corpus_texts(output_dir: str, splits: Iterable[str] = SPLITS) -> list[str]:
    """Every caption, summary, question and disclosed answer of the given splits, plus the test references.

    Meant for training the offline tokenizer of the demo (the fact words all occur in the training split).
    """
    texts = []
    for split in splits:
        with open(os.path.join(output_dir, SPLIT_FILES[split]), encoding="utf-8") as f:
            data = json.load(f)
        for dialog in data["dialogs"]:
            texts.extend([dialog["caption"], dialog["summary"]])
            for turn in dialog["dialog"]:
                texts.append(turn["question"])
                if turn["answer"] != UNDISCLOSED:
                    texts.append(turn["answer"])
        if split == "test" and os.path.exists(os.path.join(output_dir, MULTIREF_FILE)):
            with open(os.path.join(output_dir, MULTIREF_FILE), encoding="utf-8") as f:
                texts.extend(annotation["caption"] for annotation in json.load(f)["annotations"])
    return texts


# ------------------------------------------------------------------------------------------------------------
# Answer accuracy
# ------------------------------------------------------------------------------------------------------------
def answer_words(text: str) -> list[str]:
    """Lower-cased word tokens of an answer: whitespace tokens with punctuation removed ("red." -> "red")."""
    return _WORD_RE.findall(text.lower())


def is_correct_answer(prediction: str, answer_word: str, competing_words: Iterable[str]) -> bool:
    """True iff `prediction` contains the word `answer_word` and none of `competing_words` (word-level match)."""
    words = set(answer_words(prediction))
    return answer_word in words and not any(word in words for word in competing_words if word != answer_word)


def _test_entries(ground_truth: Union[Mapping[str, Any], Sequence[Mapping[str, Any]]]) -> list[Mapping[str, Any]]:
    if isinstance(ground_truth, Mapping):
        return list(ground_truth["test"])
    return list(ground_truth)


def chance_level(ground_truth: Union[Mapping[str, Any], Sequence[Mapping[str, Any]]]) -> float:
    """Accuracy of the best constant answer per question type on these turns.

    `chance = sum_t freq(t) * max_v p(v | t)` where `freq(t)` is the fraction of turns of question type `t`
    and `p(v | t)` the fraction of those whose fact word is `v`; i.e. what a system that knows the question type
    but not the video scores if it always gives the most frequent answer of that type.
    """
    entries = _test_entries(ground_truth)
    if not entries:
        return 0.0
    by_type: dict[str, Counter] = {}
    for entry in entries:
        by_type.setdefault(entry["question_type"], Counter())[entry["answer_word"]] += 1
    return sum(max(counter.values()) for counter in by_type.values()) / len(entries)


def answer_accuracy(
    predictions: Union[Sequence[str], Mapping[str, str]],
    ground_truth: Union[Mapping[str, Any], Sequence[Mapping[str, Any]]],
) -> dict[str, Any]:
    """Answer accuracy of predicted answers to the scored test turns, with its chance level.

    Args:
        predictions: one answer per test dialogue, either a list in test-file order or a mapping from
            `image_id` (or `"<image_id>_<turn_index>"`) to the answer.
        ground_truth: what [`load_ground_truth`] returns, or its `"test"` list (entries with `image_id`,
            `turn_index`, `question_type`, `answer_word` and `competing_words`).

    Returns:
        `{"accuracy": float, "chance": float, "num_examples": int, "per_question_type": {type: accuracy},
        "chance_per_question_type": {type: max_v p(v | type)}}`. A prediction is correct iff its words (see
        [`answer_words`]) contain the fact word and none of the other words of the same fact type;
        `chance` is [`chance_level`].
    """
    entries = _test_entries(ground_truth)
    if isinstance(predictions, Mapping):
        ordered = []
        for entry in entries:
            key = f"{entry['image_id']}_{entry['turn_index']}"
            if key in predictions:
                ordered.append(predictions[key])
            elif entry["image_id"] in predictions:
                ordered.append(predictions[entry["image_id"]])
            else:
                raise KeyError(f"No prediction for test dialogue {entry['image_id']} (turn {entry['turn_index']})")
    else:
        ordered = list(predictions)
        if len(ordered) != len(entries):
            raise ValueError(f"Got {len(ordered)} predictions for {len(entries)} test turns")
    correct_by_type: dict[str, list[bool]] = {}
    for prediction, entry in zip(ordered, entries):
        correct = is_correct_answer(prediction, entry["answer_word"], entry["competing_words"])
        correct_by_type.setdefault(entry["question_type"], []).append(correct)
    num = len(entries)
    by_type_counts: dict[str, Counter] = {}
    for entry in entries:
        by_type_counts.setdefault(entry["question_type"], Counter())[entry["answer_word"]] += 1
    return {
        "accuracy": sum(sum(v) for v in correct_by_type.values()) / num if num else 0.0,
        "chance": chance_level(entries),
        "num_examples": num,
        "per_question_type": {qtype: sum(v) / len(v) for qtype, v in sorted(correct_by_type.items())},
        "chance_per_question_type": {
            qtype: max(counter.values()) / sum(counter.values()) for qtype, counter in sorted(by_type_counts.items())
        },
    }
