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
"""The Audio-Visual Scene-Aware Dialog (AVSD) dataset of DSTC7 / DSTC8, as a `datasets` builder.

`datasets` 5 no longer runs loading scripts, so the builder is instantiated directly:

```python
>>> from avsd_dataset import AVSD
>>> builder = AVSD(data_dir="data/avsd", cache_dir="cache")           # official DSTC7 file names
>>> builder.download_and_prepare()                                  # a cache hit the second time
>>> dataset = builder.as_dataset()                                  # DatasetDict: train / validation / test
>>> dataset["test"][0]["references"]                                # 6 reference answers
```

The source files are the official DSTC7 JSON files (read locally, nothing is downloaded):

- `train_set4DSTC7-AVSD.json`, `valid_set4DSTC7-AVSD.json`, `test_set4DSTC7-AVSD.json`:
  `{"dialogs": [{"image_id", "caption", "summary", "dialog": [{"question", "answer"}, ...]}, ...]}`;
- `test_set4DSTC7-AVSD_multiref.json`: the 6 reference answers of each test dialogue's last turn, in COCO caption
  format (`images` `[{name: "<image_id>_<turn index>", id}]`, `annotations` `[{image_id: <id>, caption}]`).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import os
from typing import Any, Iterator, Optional, Union

import datasets
from datasets.fingerprint import Hasher

from .features import DEFAULT_FEATURE_STREAMS, VideoFeatureStore, VideoFeatureValidationError, parse_feature_streams


logger = logging.getLogger(__name__)

_CITATION = """\
@inproceedings{alamri2019audio,
  title     = {Audio Visual Scene-Aware Dialog},
  author    = {Alamri, Huda and Cartillier, Vincent and Das, Abhishek and Wang, Jue and Cherian, Anoop and
               Essa, Irfan and Batra, Dhruv and Marks, Tim K. and Hori, Chiori and Anderson, Peter and
               Lee, Stefan and Parikh, Devi},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2019}
}
"""

_DESCRIPTION = """\
Audio-Visual Scene-Aware Dialog (AVSD, DSTC7 track 3 / DSTC8): dialogues of 10 question-answer turns about a
Charades video, with the video's caption and summary. Train and validation give one example per turn with the
full dialogue history; test gives the last turn of each dialogue (the scored one), with its reference answers.
"""

_HOMEPAGE = "https://github.com/hudaAlamri/DSTC7-Audio-Visual-Scene-Aware-Dialog-AVSD-Challenge"

#: The answer of the scored (last) turn in the official test files.
UNDISCLOSED = "__UNDISCLOSED__"

DSTC7_TRAIN_FILE = "train_set4DSTC7-AVSD.json"
DSTC7_VALIDATION_FILE = "valid_set4DSTC7-AVSD.json"
DSTC7_TEST_FILE = "test_set4DSTC7-AVSD.json"
DSTC7_TEST_REFERENCE_FILE = "test_set4DSTC7-AVSD_multiref.json"
DSTC8_TEST_FILE = "test_set4DSTC8-AVSD.json"
DSTC8_TEST_REFERENCE_FILE = "test_set4DSTC8-AVSD_multiref.json"

# config field -> split fed by that file
_DIALOGUE_FILE_FIELDS = {
    "train_file": datasets.Split.TRAIN,
    "validation_file": datasets.Split.VALIDATION,
    "test_file": datasets.Split.TEST,
}
_FILE_FIELDS = tuple(_DIALOGUE_FILE_FIELDS) + ("test_reference_file",)


class AVSDFormatError(ValueError):
    """An AVSD dialogue or reference file does not have the expected content.

    The message names the file, the dialogue (index and `image_id`) or reference entry, and the key at fault.
    """


def avsd_features() -> datasets.Features:
    """The features of every AVSD split.

    - `image_id` (`string`): the Charades video id, e.g. `"VC5RZ"`.
    - `caption`, `summary` (`string`): the video's description (`summary` is `""` where the file has none).
    - `history` (list of `{"question": string, "answer": string}`): all earlier turns of the dialogue, oldest first
      (`[]` for the first turn). [`history_pairs`] turns it into the processor's `[(question, answer), ...]`.
    - `question`, `answer` (`string`): this turn. The official test files hold `"__UNDISCLOSED__"` as the answer of
      the scored turn; it is kept as is.
    - `turn` (`int32`): the 0-based index of this turn in its dialogue (`len(history) == turn`).
    - `references` (list of `string`): the reference answers of a test example (from the multi-reference file);
      `[]` for train / validation, or when no reference file is used.
    """
    text = datasets.Value("string")
    return datasets.Features(
        {
            "image_id": text,
            "caption": text,
            "summary": text,
            "history": datasets.List({"question": text, "answer": text}),
            "question": text,
            "answer": text,
            "turn": datasets.Value("int32"),
            "references": datasets.List(text),
        }
    )


def history_pairs(history: Any) -> list[tuple[str, str]]:
    """Convert the `history` of an example to `[(question, answer), ...]` (oldest first), as the processor takes it.

    Accepts the dataset's list of `{"question", "answer"}` dicts, the column-wise form
    `{"question": [...], "answer": [...]}`, or an existing list of pairs.

    Example: `processor(history=history_pairs(example["history"]), question=example["question"], ...)`.
    """
    if isinstance(history, dict):
        questions, answers = history.get("question", []), history.get("answer", [])
        if len(questions) != len(answers):
            raise ValueError(f"history has {len(questions)} questions but {len(answers)} answers.")
        return list(zip(questions, answers))
    pairs = []
    for turn in history:
        if isinstance(turn, dict):
            pairs.append((turn["question"], turn["answer"]))
        else:
            question, answer = turn
            pairs.append((question, answer))
    return pairs


# --------------------------------------------------------------------------------------------------- reading files


def _read_json(path: str, expected_sha256: Optional[str] = None) -> Any:
    with open(path, "rb") as handle:
        content = handle.read()
    if expected_sha256 is not None and hashlib.sha256(content).hexdigest() != expected_sha256:
        raise RuntimeError(
            f"{path} changed after the AVSD builder was created (its cache key was computed from the old content): "
            "create the builder again."
        )
    try:
        return json.loads(content.decode("utf-8-sig"))
    except UnicodeDecodeError as error:
        raise AVSDFormatError(f"{path}: not valid UTF-8 text ({error}).") from None
    except json.JSONDecodeError as error:
        raise AVSDFormatError(f"{path}: not valid JSON ({error}).") from None


def _require_text(container: dict, key: str, where: str, optional: bool = False) -> str:
    if key not in container or (optional and container[key] is None):
        if optional:
            return ""
        raise AVSDFormatError(f"{where}: missing key '{key}'.")
    value = container[key]
    if not isinstance(value, str):
        raise AVSDFormatError(f"{where}: key '{key}' must be a string, got {type(value).__name__} ({value!r:.60}).")
    return value


def load_avsd_dialogues(
    path: str, is_test: bool = False, expected_sha256: Optional[str] = None
) -> list[dict[str, Any]]:
    """Read and validate an AVSD dialogue file.

    Args:
        path (`str`): a file in the DSTC7 format (`{"dialogs": [{"image_id", "caption", "summary", "dialog"}]}`).
        is_test (`bool`, *optional*, defaults to `False`):
            Whether this is a test file, in which the answer of each dialogue's LAST turn may be
            `"__UNDISCLOSED__"`. Anywhere else that placeholder is an error.
        expected_sha256 (`str`, *optional*):
            When given, the SHA-256 the file content must have (the builder passes the digest its cache key was
            computed from, so a file changed in between cannot be cached under the old key).

    Returns:
        `list[dict]`: in file order, `{"image_id", "caption", "summary", "dialog": [{"question", "answer"}, ...]}`
        (`summary` is `""` when the file has none; other keys are dropped). Text is kept exactly as in the file
        (non-ASCII included).

    Raises:
        AVSDFormatError (a `ValueError`): naming the file, the dialogue index and `image_id`, the turn and the key.
    """
    data = _read_json(path, expected_sha256)
    if not isinstance(data, dict) or "dialogs" not in data:
        found = f"keys {sorted(data)[:10]}" if isinstance(data, dict) else f"a JSON {type(data).__name__}"
        raise AVSDFormatError(f"{path}: missing key 'dialogs' at the top level (found {found}).")
    if not isinstance(data["dialogs"], list):
        raise AVSDFormatError(f"{path}: key 'dialogs' must be a list, got {type(data['dialogs']).__name__}.")

    dialogues = []
    empty_texts = {"question": [], "answer": []}  # where each empty (or blank) question / answer is
    for index, dialogue in enumerate(data["dialogs"]):
        where = f"{path}: dialogue {index}"
        if not isinstance(dialogue, dict):
            raise AVSDFormatError(f"{where}: expected a JSON object, got {type(dialogue).__name__}.")
        image_id = _require_text(dialogue, "image_id", where)
        if not image_id:
            raise AVSDFormatError(f"{where}: key 'image_id' is empty.")
        where = f"{path}: dialogue {index} (image_id '{image_id}')"
        caption = _require_text(dialogue, "caption", where)
        summary = _require_text(dialogue, "summary", where, optional=True)
        if "dialog" not in dialogue:
            raise AVSDFormatError(f"{where}: missing key 'dialog'.")
        raw_turns = dialogue["dialog"]
        if not isinstance(raw_turns, list):
            raise AVSDFormatError(f"{where}: key 'dialog' must be a list of turns, got {type(raw_turns).__name__}.")
        if not raw_turns:
            raise AVSDFormatError(f"{where}: empty dialogue (key 'dialog' has no turns).")
        turns = []
        last = len(raw_turns) - 1
        for turn_index, turn in enumerate(raw_turns):
            turn_where = f"{where}, turn {turn_index}"
            if not isinstance(turn, dict):
                raise AVSDFormatError(f"{turn_where}: expected a JSON object, got {type(turn).__name__}.")
            question = _require_text(turn, "question", turn_where)
            answer = _require_text(turn, "answer", turn_where)
            if answer == UNDISCLOSED and not (is_test and turn_index == last):
                allowed = (
                    f"only the last turn (turn {last}) of a test dialogue may have it"
                    if is_test
                    else "only the last turn of a TEST dialogue may have it "
                    "(is this a test file given as train / validation?)"
                )
                raise AVSDFormatError(f"{turn_where}: key 'answer' is '{UNDISCLOSED}': {allowed}.")
            for key, text in (("question", question), ("answer", answer)):
                if not text.strip():
                    empty_texts[key].append(f"dialogue {index} (image_id '{image_id}') turn {turn_index}")
            turns.append({"question": question, "answer": answer})
        dialogues.append({"image_id": image_id, "caption": caption, "summary": summary, "dialog": turns})
    for key, places in empty_texts.items():
        if places:
            logger.warning(
                "%s: %d empty %ss (kept as empty text), e.g. %s",
                path, len(places), key, "; ".join(places[:3]),
            )
    return dialogues


def load_avsd_references(path: str, expected_sha256: Optional[str] = None) -> dict[str, list[str]]:
    """Read and validate a multi-reference file in COCO caption format.

    `expected_sha256` is as in [`load_avsd_dialogues`].

    Returns:
        `dict[str, list[str]]`: image name (`"<image_id>_<turn index>"`) -> its reference captions, in file order.

    Raises:
        AVSDFormatError (a `ValueError`): naming the file, the entry and the key.
    """
    data = _read_json(path, expected_sha256)
    for key in ("images", "annotations"):
        if not isinstance(data, dict) or key not in data:
            raise AVSDFormatError(f"{path}: missing key '{key}' at the top level (expected COCO caption format).")
        if not isinstance(data[key], list):
            raise AVSDFormatError(f"{path}: key '{key}' must be a list, got {type(data[key]).__name__}.")

    name_of_id: dict[Any, str] = {}
    references: dict[str, list[str]] = {}
    for index, image in enumerate(data["images"]):
        where = f"{path}: images[{index}]"
        if not isinstance(image, dict):
            raise AVSDFormatError(f"{where}: expected a JSON object, got {type(image).__name__}.")
        for key in ("name", "id"):
            if key not in image:
                raise AVSDFormatError(f"{where}: missing key '{key}'.")
        name, image_number = image["name"], image["id"]
        if not isinstance(name, str):
            raise AVSDFormatError(f"{where}: key 'name' must be a string, got {type(name).__name__}.")
        if name in references:
            raise AVSDFormatError(f"{where}: duplicate image name '{name}'.")
        if image_number in name_of_id:
            raise AVSDFormatError(f"{where}: duplicate image id {image_number!r} (also '{name_of_id[image_number]}').")
        name_of_id[image_number] = name
        references[name] = []

    for index, annotation in enumerate(data["annotations"]):
        where = f"{path}: annotations[{index}]"
        if not isinstance(annotation, dict):
            raise AVSDFormatError(f"{where}: expected a JSON object, got {type(annotation).__name__}.")
        for key in ("image_id", "caption"):
            if key not in annotation:
                raise AVSDFormatError(f"{where}: missing key '{key}'.")
        if annotation["image_id"] not in name_of_id:
            raise AVSDFormatError(
                f"{where}: key 'image_id' is {annotation['image_id']!r}, which no entry of 'images' has."
            )
        caption = annotation["caption"]
        if not isinstance(caption, str):
            raise AVSDFormatError(f"{where}: key 'caption' must be a string, got {type(caption).__name__}.")
        references[name_of_id[annotation["image_id"]]].append(caption)
    return references


def reference_name(image_id: str, turn: int) -> str:
    """The name of a turn in the multi-reference file: `"<image_id>_<turn index>"` (0-based turn index)."""
    return f"{image_id}_{turn}"


def _attach_references(
    dialogues: list[dict[str, Any]], references: dict[str, list[str]], test_path: str, reference_path: str
) -> None:
    names_by_video = None
    for index, dialogue in enumerate(dialogues):
        turn = len(dialogue["dialog"]) - 1
        name = reference_name(dialogue["image_id"], turn)
        captions = references.get(name)
        if captions:
            dialogue["references"] = captions
            continue
        if names_by_video is None:
            names_by_video = collections.defaultdict(list)
            for other in references:
                names_by_video[other.rsplit("_", 1)[0]].append(other)
        found = names_by_video.get(dialogue["image_id"])
        hint = f" The file has {sorted(found)} for this video." if found else ""
        problem = "has no captions for" if captions is not None else "has no image named"
        raise AVSDFormatError(
            f"{reference_path} {problem} '{name}': no references for test dialogue {index} (image_id "
            f"'{dialogue['image_id']}') of {test_path}, whose last turn has index {turn} (names are "
            f"'<image_id>_<turn index>').{hint}"
        )


def _file_digest(path: str) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def _directory_listing_digest(directory: str) -> str:
    """Hash of the names, sizes and modification times of the `.npy` files in a folder (files are not read)."""
    hasher = hashlib.sha256()
    try:
        with os.scandir(directory) as entries:
            listing = sorted(
                (entry.name, entry.stat().st_size, entry.stat().st_mtime_ns)
                for entry in entries
                if entry.name.endswith(".npy")
            )
    except FileNotFoundError:
        listing = []
    hasher.update(repr(listing).encode("utf-8"))
    return hasher.hexdigest()


# ------------------------------------------------------------------------------------------------------ the builder


@dataclasses.dataclass
class AVSDConfig(datasets.BuilderConfig):
    """BuilderConfig for AVSD.

    File names are relative to `data_dir` (absolute paths work too; without `data_dir`, the current directory).
    A split whose dialogue file is absent is skipped, so a folder with only the test file gives only the test
    split; a file named explicitly by the caller (keyword argument) must exist, and at least one dialogue file
    must be found. Pass `None` to leave a split out on purpose.

    Args:
        train_file (`str`, *optional*, defaults to `"train_set4DSTC7-AVSD.json"`): the training dialogues.
        validation_file (`str`, *optional*, defaults to `"valid_set4DSTC7-AVSD.json"`): the validation dialogues.
        test_file (`str`, *optional*, defaults to `"test_set4DSTC7-AVSD.json"`): the test dialogues.
        test_reference_file (`str`, *optional*, defaults to `"test_set4DSTC7-AVSD_multiref.json"`):
            the multi-reference answers of the test dialogues (COCO caption format). When absent (or `None`), test
            examples have `references == []`. When given, every test dialogue must have references.
        feature_root (`str`, *optional*):
            The folder of the video features (`<feature_root>/<stream>/<image_id>.npy`, `<stream>_testset/` for
            test). When set, `download_and_prepare` checks (headers only) that every video of every split has every
            stream, and [`AVSD.video_feature_store`] gives the matching [`VideoFeatureStore`]. The features are
            not copied into the dataset.
        feature_streams (`tuple[str]` or `str`, *optional*, defaults to `("i3d_rgb", "i3d_flow", "vggish")`):
            The feature streams, as a tuple or a comma-separated string.
        skip_missing_features (`bool`, *optional*, defaults to `False`):
            With `feature_root`: drop the dialogues whose video has a missing or broken feature file (with a
            warning giving the count) instead of raising.

    The predefined configs are `"dstc7"` (default) and `"dstc8"` (DSTC7 train / validation files,
    `test_set4DSTC8-AVSD.json` + `test_set4DSTC8-AVSD_multiref.json`).
    """

    train_file: Optional[str] = DSTC7_TRAIN_FILE
    validation_file: Optional[str] = DSTC7_VALIDATION_FILE
    test_file: Optional[str] = DSTC7_TEST_FILE
    test_reference_file: Optional[str] = DSTC7_TEST_REFERENCE_FILE
    feature_root: Optional[str] = None
    feature_streams: Union[str, tuple[str, ...]] = DEFAULT_FEATURE_STREAMS
    skip_missing_features: bool = False

    def __post_init__(self):
        super().__post_init__()
        parse_feature_streams(self.feature_streams)  # fail early on a bad value

    @property
    def streams(self) -> tuple[str, ...]:
        """The feature streams as a tuple of names."""
        return parse_feature_streams(self.feature_streams)

    @property
    def base_dir(self) -> str:
        """The absolute folder the file names are relative to."""
        return os.path.abspath(os.path.expanduser(self.data_dir)) if self.data_dir else os.getcwd()

    def resolve_file(self, file_name: Optional[str]) -> Optional[str]:
        """The absolute path of a configured file name (`None` stays `None`)."""
        if not file_name:
            return None
        return os.path.join(self.base_dir, os.path.expanduser(os.fspath(file_name)))


class AVSD(datasets.GeneratorBasedBuilder):
    """Audio-Visual Scene-Aware Dialog (DSTC7 / DSTC8) from local JSON files.

    Instantiate it directly (`datasets` 5 runs no loading scripts), with [`AVSDConfig`] fields as keyword arguments:

    ```python
    >>> AVSD(data_dir="data/avsd", cache_dir="cache")                            # DSTC7 file names
    >>> AVSD(data_dir="data/avsd", config_name="dstc8")                          # DSTC8 test set
    >>> AVSD(data_dir="mine", train_file="train.json", validation_file=None,
    ...      test_file="test.json", test_reference_file="test_refs.json")        # your own files
    ```

    The cache key covers the config and a SHA-256 of every dialogue / reference file used (and, with
    `feature_root`, the name, size and modification time of every feature file), so a renamed, edited or replaced
    file is prepared again, and an unchanged one is a cache hit. The source files must therefore be present
    whenever the builder is instantiated.
    """

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = AVSDConfig
    BUILDER_CONFIGS = [
        AVSDConfig(
            name="dstc7",
            version=VERSION,
            description="DSTC7 AVSD: train / valid / test_set4DSTC7-AVSD.json and the test multi-reference file.",
        ),
        AVSDConfig(
            name="dstc8",
            version=VERSION,
            test_file=DSTC8_TEST_FILE,
            test_reference_file=DSTC8_TEST_REFERENCE_FILE,
            description="DSTC8 AVSD: the DSTC7 train / valid files and test_set4DSTC8-AVSD.json with its references.",
        ),
    ]
    DEFAULT_CONFIG_NAME = "dstc7"

    config: AVSDConfig

    # ---------------------------------------------------------------- config

    def _create_builder_config(self, config_name=None, custom_features=None, config_id=None, **config_kwargs):
        builder_config, config_id = super()._create_builder_config(
            config_name=config_name, custom_features=custom_features, config_id=config_id, **config_kwargs
        )
        # Starting from a predefined config, `datasets` ignores keyword arguments whose value is None;
        # for AVSD, `test_reference_file=None` (etc.) means "do not use this file". (`config_kwargs` is not
        # empty here, so `builder_config` is already a copy of the predefined one.)
        for key, value in config_kwargs.items():
            if value is None and hasattr(builder_config, key):
                setattr(builder_config, key, None)
        explicit_files = {key for key in _FILE_FIELDS if config_kwargs.get(key) is not None}
        self.data_file_paths = self._find_data_files(builder_config, explicit_files)
        self.data_file_sha256 = {
            field: _file_digest(path) for field, path in self.data_file_paths.items() if path is not None
        }

        # The config id built by `datasets` depends on the keyword arguments only: add the content of the files.
        fingerprint = self._source_fingerprint(builder_config, self.data_file_paths, self.data_file_sha256)
        config_id = f"{config_id}-{fingerprint}"
        if len(config_id) > datasets.config.MAX_DATASET_CONFIG_ID_READABLE_LENGTH:
            config_id = f"{builder_config.name}-{Hasher.hash(config_id)}"
        return builder_config, config_id

    @staticmethod
    def _find_data_files(config: AVSDConfig, explicit_files: set[str]) -> dict[str, Optional[str]]:
        """Resolve the configured files: `{field: absolute path or None}`; see [`AVSDConfig`] for the rules."""
        base_dir = config.base_dir
        if config.data_dir and not os.path.isdir(base_dir):
            raise FileNotFoundError(f"AVSD data_dir {base_dir!r} is not a directory.")
        paths: dict[str, Optional[str]] = {}
        for field in _FILE_FIELDS:
            path = config.resolve_file(getattr(config, field))
            if path is not None and not os.path.isfile(path):
                if field in explicit_files:
                    raise FileNotFoundError(f"AVSD {field}={getattr(config, field)!r}: no such file: {path}")
                logger.info(f"AVSD: {path} not found, {field} skipped.")
                path = None
            paths[field] = path
        if not any(paths[field] for field in _DIALOGUE_FILE_FIELDS):
            expected = ", ".join(
                f"{field}={getattr(config, field)!r}" for field in _DIALOGUE_FILE_FIELDS if getattr(config, field)
            )
            raise FileNotFoundError(
                f"No AVSD dialogue file found in {base_dir!r}: expected at least one of "
                f"{expected or '(none configured)'} "
                f"(config '{config.name}'). Pass data_dir= and/or train_file= / validation_file= / test_file=."
            )
        if paths["test_reference_file"] and not paths["test_file"]:
            logger.info("AVSD: a test reference file but no test file: the reference file is not used.")
            paths["test_reference_file"] = None
        return paths

    @staticmethod
    def _source_fingerprint(config: AVSDConfig, paths: dict[str, Optional[str]], digests: dict[str, str]) -> str:
        hasher = hashlib.sha256()
        for field in _FILE_FIELDS:
            hasher.update(f"{field}={paths[field]}:{digests.get(field)};".encode("utf-8"))
        if config.feature_root:
            root = os.path.abspath(os.path.expanduser(config.feature_root))
            hasher.update(f"feature_root={root};".encode("utf-8"))
            for stream in config.streams:
                for directory in (stream, stream + "_testset"):
                    listing = _directory_listing_digest(os.path.join(root, directory))
                    hasher.update(f"{directory}={listing};".encode("utf-8"))
        return hasher.hexdigest()[:16]

    # ------------------------------------------------------------------ info

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=_DESCRIPTION,
            features=avsd_features(),
            homepage=_HOMEPAGE,
            citation=_CITATION,
        )

    def video_feature_store(self, split: Union[str, datasets.NamedSplit]) -> VideoFeatureStore:
        """The [`VideoFeatureStore`] of a split for this config's `feature_root` / `feature_streams`."""
        if not self.config.feature_root:
            raise ValueError("This AVSD config has no feature_root: pass AVSD(..., feature_root=...).")
        return VideoFeatureStore(
            self.config.feature_root,
            streams=self.config.streams,
            split=str(split),
            skip_missing_features=self.config.skip_missing_features,
        )

    # ---------------------------------------------------------- generation

    def _split_generators(self, dl_manager) -> list[datasets.SplitGenerator]:
        # Everything is read and validated here, before any example is written, so that format errors reach the
        # caller as they are (errors inside `_generate_examples` are wrapped by `datasets`).
        references = None
        if self.data_file_paths["test_reference_file"]:
            references = load_avsd_references(
                self.data_file_paths["test_reference_file"], self.data_file_sha256["test_reference_file"]
            )

        split_generators = []
        for field, split in _DIALOGUE_FILE_FIELDS.items():
            path = self.data_file_paths[field]
            if path is None:
                continue
            is_test = split == datasets.Split.TEST
            dialogues = load_avsd_dialogues(path, is_test=is_test, expected_sha256=self.data_file_sha256[field])
            if is_test and references is not None:
                _attach_references(dialogues, references, path, self.data_file_paths["test_reference_file"])
            if self.config.feature_root:
                dialogues = self._check_video_features(dialogues, split)
            split_generators.append(
                datasets.SplitGenerator(name=split, gen_kwargs={"dialogues": dialogues, "split": str(split)})
            )
        return split_generators

    def _check_video_features(self, dialogues: list[dict[str, Any]], split: datasets.NamedSplit) -> list[dict]:
        store = self.video_feature_store(split)
        image_ids = [dialogue["image_id"] for dialogue in dialogues]
        problems = store.check(image_ids)
        if not problems:
            return dialogues
        if not self.config.skip_missing_features:
            raise VideoFeatureValidationError(problems, len(set(image_ids)), store.feature_root)
        bad_ids = {problem.image_id for problem in problems}
        kept = [dialogue for dialogue in dialogues if dialogue["image_id"] not in bad_ids]
        examples = ", ".join(str(problem) for problem in problems[:5])
        logger.warning(
            f"AVSD {split}: skip_missing_features=True, dropping {len(dialogues) - len(kept)} of {len(dialogues)} "
            f"dialogues whose video features are missing or broken ({len(problems)} problem(s), e.g. {examples})."
        )
        if not kept:
            raise VideoFeatureValidationError(problems, len(set(image_ids)), store.feature_root)
        return kept

    def _generate_examples(self, dialogues: list[dict[str, Any]], split: str) -> Iterator[tuple[int, dict]]:
        is_test = split == str(datasets.Split.TEST)
        key = 0
        for dialogue in dialogues:
            turns = dialogue["dialog"]
            # test: only the last (scored) turn; train / validation: every turn
            turn_indices = (len(turns) - 1,) if is_test else range(len(turns))
            references = dialogue.get("references", []) if is_test else []
            for turn in turn_indices:
                yield key, {
                    "image_id": dialogue["image_id"],
                    "caption": dialogue["caption"],
                    "summary": dialogue["summary"],
                    "history": turns[:turn],
                    "question": turns[turn]["question"],
                    "answer": turns[turn]["answer"],
                    "turn": turn,
                    "references": references,
                }
                key += 1


def load_avsd(
    data_dir: Optional[str] = None,
    cache_dir: Optional[str] = None,
    config_name: Optional[str] = None,
    **config_kwargs,
) -> datasets.DatasetDict:
    """Build, prepare (or reuse from the cache) and return the AVSD splits: `AVSD(...).as_dataset()` in one call.

    Args:
        data_dir (`str`, *optional*): the folder of the JSON files.
        cache_dir (`str`, *optional*): the `datasets` cache folder (default: `HF_DATASETS_CACHE`).
        config_name (`str`, *optional*): `"dstc7"` (default) or `"dstc8"`.
        **config_kwargs: [`AVSDConfig`] fields (`train_file=`, `test_reference_file=None`, `feature_root=`, ...).
    """
    builder = AVSD(data_dir=data_dir, cache_dir=cache_dir, config_name=config_name, **config_kwargs)
    builder.download_and_prepare()
    return builder.as_dataset()
