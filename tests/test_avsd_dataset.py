"""Tests of the AVSD builder (`avsd_dataset.avsd`) and the video feature store (`avsd_dataset.features`).

Every test writes its own small files in the exact DSTC7 AVSD format in a temporary folder; the last test also
loads the real DSTC7 test set where `../shared/avsd` exists.
"""

import json
import logging
import os
import time

import numpy as np
import pytest

from avsd_dataset import (
    AVSD,
    UNDISCLOSED,
    AVSDConfig,
    AVSDFormatError,
    MissingVideoFeatureError,
    UnreadableVideoFeatureError,
    VideoFeatureStore,
    VideoFeatureValidationError,
    history_pairs,
    load_avsd,
)
from conftest import SHARED_AVSD_DIR


STREAM_DIMS = {"i3d_rgb": 8, "i3d_flow": 8, "vggish": 4}

# (image_id, number of turns) in file order
TRAIN_DIALOGUES = [("TR001", 10), ("TR002", 3), ("TR003", 1)]
VALID_DIALOGUES = [("VA001", 10), ("VA002", 2)]
TEST_DIALOGUES = [("TE003", 4), ("TE001", 1), ("TE002", 10)]  # deliberately not sorted


# ------------------------------------------------------------------------------------------------------- fixtures


def make_dialogue(image_id, num_turns, test=False):
    turns = [
        {"question": f"{image_id} question {turn} ?", "answer": f"{image_id} answer {turn} ."}
        for turn in range(num_turns)
    ]
    if test:
        turns[-1]["answer"] = UNDISCLOSED
    return {
        "image_id": image_id,
        "caption": f"caption of {image_id} .",
        "summary": f"summary of {image_id} .",
        "dialog": turns,
    }


def write_json(path, data):
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False)
    return path


def write_dialogue_file(path, dialogues, test=False):
    """`dialogues`: (image_id, number of turns) pairs, or (ready-made dialogue dict, None)."""
    dialogs = [
        make_dialogue(image_id, turns, test) if isinstance(image_id, str) else image_id
        for image_id, turns in dialogues
    ]
    return write_json(path, {"type": "scene_aware_dialog", "version": "0.1", "dialogs": dialogs})


def reference_captions(image_id):
    return [f"reference {k} for {image_id} ." for k in range(6)]


def write_reference_file(path, dialogues, extra_names=()):
    """COCO caption format; numeric ids deliberately not in dialogue order, plus unrelated extra entries."""
    names = [f"{image_id}_{turns - 1}" for image_id, turns in dialogues] + list(extra_names)
    images, annotations = [], []
    for number, name in enumerate(reversed(names), start=1):
        images.append({"name": name, "id": number * 7})
        for caption in reference_captions(name.rsplit("_", 1)[0]):
            annotations.append({"image_id": number * 7, "id": len(annotations) + 1, "caption": caption})
    return write_json(
        path,
        {"info": {}, "licenses": [], "images": images, "type": "captions", "annotations": annotations},
    )


def write_features(feature_root, image_ids, test=False, dims=STREAM_DIMS, frames=5):
    for stream, dim in dims.items():
        folder = os.path.join(feature_root, stream + ("_testset" if test else ""))
        os.makedirs(folder, exist_ok=True)
        for index, image_id in enumerate(image_ids):
            length = frames + index if stream != "vggish" else frames + 2
            array = np.arange(length * dim, dtype=np.float32).reshape(length, dim) + index
            np.save(os.path.join(folder, image_id + ".npy"), array)


@pytest.fixture
def avsd_dir(tmp_path):
    data_dir = tmp_path / "avsd"
    data_dir.mkdir()
    write_dialogue_file(data_dir / "train_set4DSTC7-AVSD.json", TRAIN_DIALOGUES)
    write_dialogue_file(data_dir / "valid_set4DSTC7-AVSD.json", VALID_DIALOGUES)
    write_dialogue_file(data_dir / "test_set4DSTC7-AVSD.json", TEST_DIALOGUES, test=True)
    write_reference_file(data_dir / "test_set4DSTC7-AVSD_multiref.json", TEST_DIALOGUES, extra_names=["OTHER_9"])
    return str(data_dir)


@pytest.fixture
def feature_root(tmp_path):
    root = str(tmp_path / "features")
    write_features(root, [image_id for image_id, _ in TRAIN_DIALOGUES + VALID_DIALOGUES])
    write_features(root, [image_id for image_id, _ in TEST_DIALOGUES], test=True)
    return root


def load(data_dir, cache_dir, **kwargs):
    builder = AVSD(data_dir=data_dir, cache_dir=str(cache_dir), **kwargs)
    builder.download_and_prepare()
    return builder.as_dataset(), builder


# ------------------------------------------------------------------------------------------------ splits / content


def test_splits_counts_and_features(avsd_dir, tmp_path):
    dataset, _ = load(avsd_dir, tmp_path / "cache")
    assert sorted(dataset) == ["test", "train", "validation"]
    assert len(dataset["train"]) == sum(turns for _, turns in TRAIN_DIALOGUES)
    assert len(dataset["validation"]) == sum(turns for _, turns in VALID_DIALOGUES)
    assert len(dataset["test"]) == len(TEST_DIALOGUES)
    features = dataset["train"].features
    assert list(features) == ["image_id", "caption", "summary", "history", "question", "answer", "turn", "references"]
    assert features["turn"].dtype == "int32"
    assert features["image_id"].dtype == "string"


@pytest.mark.parametrize("split, dialogues", [("train", TRAIN_DIALOGUES), ("validation", VALID_DIALOGUES)])
def test_one_example_per_turn_with_full_history(avsd_dir, tmp_path, split, dialogues):
    dataset, _ = load(avsd_dir, tmp_path / "cache")
    examples = list(dataset[split])
    expected = [(image_id, turn) for image_id, turns in dialogues for turn in range(turns)]
    assert [(example["image_id"], example["turn"]) for example in examples] == expected
    for example in examples:
        image_id, turn = example["image_id"], example["turn"]
        assert example["question"] == f"{image_id} question {turn} ?"
        assert example["answer"] == f"{image_id} answer {turn} ."
        assert example["history"] == [
            {"question": f"{image_id} question {k} ?", "answer": f"{image_id} answer {k} ."} for k in range(turn)
        ]
        assert example["caption"] == f"caption of {image_id} ."
        assert example["summary"] == f"summary of {image_id} ."
        assert example["references"] == []
    first_id = dialogues[0][0]
    assert history_pairs(examples[2]["history"]) == [
        (f"{first_id} question 0 ?", f"{first_id} answer 0 ."),
        (f"{first_id} question 1 ?", f"{first_id} answer 1 ."),
    ]


def test_whole_dialogues_are_the_last_turns_with_every_answer_in_their_history(avsd_dir, tmp_path):
    from avsd_dataset.turns import whole_dialogues

    dataset, _ = load(avsd_dir, tmp_path / "cache")
    rows = list(whole_dialogues(dataset["train"]))
    # one row per dialogue (in the split's order), its last turn, whose history holds all the turns before it
    assert [(row["image_id"], row["turn"]) for row in rows] == [(image_id, turns - 1) for image_id, turns in TRAIN_DIALOGUES]
    for row in rows:
        assert [turn["answer"] for turn in row["history"]] == [f"{row['image_id']} answer {k} ." for k in range(row["turn"])]


def test_test_split_is_last_turn_in_file_order_with_references(avsd_dir, tmp_path):
    dataset, _ = load(avsd_dir, tmp_path / "cache")
    test = list(dataset["test"])
    assert [example["image_id"] for example in test] == [image_id for image_id, _ in TEST_DIALOGUES]
    for example, (image_id, turns) in zip(test, TEST_DIALOGUES):
        assert example["turn"] == turns - 1
        assert example["answer"] == UNDISCLOSED
        assert example["question"] == f"{image_id} question {turns - 1} ?"
        assert len(example["history"]) == turns - 1
        assert example["references"] == reference_captions(image_id)
        assert len(example["references"]) == 6
        assert example["caption"] and example["summary"]


def test_history_pairs_accepts_all_layouts():
    rows = [{"question": "q0", "answer": "a0"}, {"question": "q1", "answer": "a1"}]
    assert history_pairs(rows) == [("q0", "a0"), ("q1", "a1")]
    assert history_pairs({"question": ["q0", "q1"], "answer": ["a0", "a1"]}) == [("q0", "a0"), ("q1", "a1")]
    assert history_pairs([("q0", "a0")]) == [("q0", "a0")]
    assert history_pairs([]) == []


def test_summary_is_optional_and_non_ascii_is_kept(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    dialogue = make_dialogue("NA001", 2)
    del dialogue["summary"]
    dialogue["caption"] = "un homme ouvre la fenêtre — 男人 ."
    dialogue["dialog"][0]["answer"] = "naïve café ✓"
    write_dialogue_file(data_dir / "train_set4DSTC7-AVSD.json", [(dialogue, None)])
    dataset, _ = load(str(data_dir), tmp_path / "cache")
    first, second = dataset["train"][0], dataset["train"][1]
    assert first["summary"] == ""
    assert first["caption"] == "un homme ouvre la fenêtre — 男人 ."
    assert second["history"] == [{"question": "NA001 question 0 ?", "answer": "naïve café ✓"}]
    assert list(dataset) == ["train"]


def test_load_avsd_helper(avsd_dir, tmp_path):
    dataset = load_avsd(avsd_dir, cache_dir=str(tmp_path / "cache"), validation_file=None)
    assert sorted(dataset) == ["test", "train"]


# ---------------------------------------------------------------------------------------------------------- cache


def test_second_prepare_is_a_cache_hit(avsd_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first, first_builder = load(avsd_dir, cache)

    def fail(*args, **kwargs):
        raise AssertionError("the dataset was generated again instead of read from the cache")

    monkeypatch.setattr(AVSD, "_split_generators", fail)
    second, second_builder = load(avsd_dir, cache)
    assert second_builder.cache_dir == first_builder.cache_dir
    assert second["train"][:] == first["train"][:]
    assert second["test"][:] == first["test"][:]


def test_changed_file_content_invalidates_the_cache(avsd_dir, tmp_path):
    cache = tmp_path / "cache"
    _, first_builder = load(avsd_dir, cache)
    path = os.path.join(avsd_dir, "train_set4DSTC7-AVSD.json")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    stat = os.stat(path)
    # same size, same modification time: only the content changes
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text.replace("TR002 answer 0 .", "TR002 answer X ."))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    dataset, second_builder = load(avsd_dir, cache)
    assert second_builder.cache_dir != first_builder.cache_dir
    assert "TR002 answer X ." in dataset["train"]["answer"]


def test_file_changed_between_builder_and_prepare_is_an_error(avsd_dir, tmp_path):
    builder = AVSD(data_dir=avsd_dir, cache_dir=str(tmp_path / "cache"))
    write_dialogue_file(os.path.join(avsd_dir, "valid_set4DSTC7-AVSD.json"), [("VA009", 2)])
    with pytest.raises(RuntimeError, match="changed after the AVSD builder was created"):
        builder.download_and_prepare()


def test_changed_file_name_or_option_gives_another_cache(avsd_dir, tmp_path):
    cache = tmp_path / "cache"
    _, default_builder = load(avsd_dir, cache)
    write_dialogue_file(os.path.join(avsd_dir, "my_train.json"), [("MY001", 2)])
    dataset, custom_builder = load(avsd_dir, cache, train_file="my_train.json")
    assert custom_builder.cache_dir != default_builder.cache_dir
    assert dataset["train"]["image_id"] == ["MY001", "MY001"]
    no_refs, no_refs_builder = load(avsd_dir, cache, test_reference_file=None)
    assert no_refs_builder.cache_dir not in (default_builder.cache_dir, custom_builder.cache_dir)
    assert no_refs["test"]["references"] == [[], [], []]


# ------------------------------------------------------------------------------------------ file names and configs


def test_only_the_test_file_gives_only_the_test_split(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_dialogue_file(data_dir / "test_set4DSTC7-AVSD.json", TEST_DIALOGUES, test=True)
    dataset, _ = load(str(data_dir), tmp_path / "cache")
    assert list(dataset) == ["test"]
    assert dataset["test"]["references"] == [[], [], []]  # no reference file: empty references


def test_no_file_found_names_the_folder_and_the_expected_files(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as error:
        AVSD(data_dir=str(empty), cache_dir=str(tmp_path / "cache"))
    message = str(error.value)
    assert str(empty) in message
    for name in ("train_set4DSTC7-AVSD.json", "valid_set4DSTC7-AVSD.json", "test_set4DSTC7-AVSD.json"):
        assert name in message


def test_missing_data_dir_and_explicit_missing_file_are_errors(avsd_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        AVSD(data_dir=str(tmp_path / "nowhere"), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError) as error:
        AVSD(data_dir=avsd_dir, cache_dir=str(tmp_path / "cache"), test_reference_file="typo_multiref.json")
    assert "test_reference_file" in str(error.value)
    assert os.path.join(avsd_dir, "typo_multiref.json") in str(error.value)


def test_dstc8_named_config(tmp_path):
    data_dir = tmp_path / "dstc8"
    data_dir.mkdir()
    write_dialogue_file(data_dir / "train_set4DSTC7-AVSD.json", TRAIN_DIALOGUES)
    write_dialogue_file(data_dir / "test_set4DSTC8-AVSD.json", TEST_DIALOGUES, test=True)
    write_reference_file(data_dir / "test_set4DSTC8-AVSD_multiref.json", TEST_DIALOGUES)
    builder = AVSD(data_dir=str(data_dir), cache_dir=str(tmp_path / "cache"), config_name="dstc8")
    assert builder.config.name == "dstc8"
    builder.download_and_prepare()
    dataset = builder.as_dataset()
    assert sorted(dataset) == ["test", "train"]
    assert dataset["test"]["references"][0] == reference_captions(TEST_DIALOGUES[0][0])
    # the DSTC7 default does not see the DSTC8 test file
    assert list(load_avsd(str(data_dir), cache_dir=str(tmp_path / "cache"))) == ["train"]


def test_custom_file_names(tmp_path):
    data_dir = tmp_path / "mine"
    data_dir.mkdir()
    write_dialogue_file(data_dir / "my_train.json", TRAIN_DIALOGUES)
    write_dialogue_file(data_dir / "my_test.json", TEST_DIALOGUES, test=True)
    write_reference_file(data_dir / "my_refs.json", TEST_DIALOGUES)
    builder = AVSD(
        data_dir=str(data_dir),
        cache_dir=str(tmp_path / "cache"),
        train_file="my_train.json",
        validation_file=None,
        test_file="my_test.json",
        test_reference_file="my_refs.json",
    )
    assert isinstance(builder.config, AVSDConfig)
    builder.download_and_prepare()
    dataset = builder.as_dataset()
    assert sorted(dataset) == ["test", "train"]
    assert len(dataset["train"]) == 14
    assert all(len(references) == 6 for references in dataset["test"]["references"])
    # absolute paths work without data_dir
    absolute = AVSD(
        cache_dir=str(tmp_path / "cache"),
        train_file=str(data_dir / "my_train.json"),
        validation_file=None,
        test_file=None,
    )
    absolute.download_and_prepare()
    assert list(absolute.as_dataset()) == ["train"]


# ------------------------------------------------------------------------------------------------- format errors


def write_single_train(tmp_path, dialogue=None, data=None, name="train_set4DSTC7-AVSD.json"):
    """Write a file whose dialogue 1 is `dialogue` (after a valid dialogue 0), or the raw `data`."""
    data_dir = tmp_path / "bad"
    data_dir.mkdir(exist_ok=True)
    if data is None:
        data = {"dialogs": [make_dialogue("OK001", 2), dialogue]}
    path = write_json(data_dir / name, data)
    return str(data_dir), str(path)


def prepare(data_dir, tmp_path, **kwargs):
    builder = AVSD(data_dir=data_dir, cache_dir=str(tmp_path / "cache"), **kwargs)
    builder.download_and_prepare()
    return builder


def without(dictionary, key):
    return {k: v for k, v in dictionary.items() if k != key}


@pytest.mark.parametrize("missing_key", ["image_id", "caption", "dialog"])
def test_dialogue_missing_key(tmp_path, missing_key):
    data_dir, path = write_single_train(tmp_path, without(make_dialogue("BAD01", 3), missing_key))
    with pytest.raises(AVSDFormatError) as error:
        prepare(data_dir, tmp_path)
    message = str(error.value)
    assert path in message and "dialogue 1" in message and f"'{missing_key}'" in message
    if missing_key != "image_id":
        assert "BAD01" in message


@pytest.mark.parametrize("missing_key", ["question", "answer"])
def test_turn_missing_key(tmp_path, missing_key):
    dialogue = make_dialogue("BAD02", 3)
    dialogue["dialog"][1] = without(dialogue["dialog"][1], missing_key)
    data_dir, path = write_single_train(tmp_path, dialogue)
    with pytest.raises(AVSDFormatError) as error:
        prepare(data_dir, tmp_path)
    message = str(error.value)
    assert path in message and "BAD02" in message and "turn 1" in message and f"'{missing_key}'" in message


def test_missing_dialogs_key(tmp_path):
    data_dir, path = write_single_train(tmp_path, data={"type": "scene_aware_dialog", "dialogues": []})
    with pytest.raises(AVSDFormatError) as error:
        prepare(data_dir, tmp_path)
    assert path in str(error.value) and "'dialogs'" in str(error.value)


def test_empty_dialogue(tmp_path):
    dialogue = make_dialogue("EMPTY", 1)
    dialogue["dialog"] = []
    data_dir, path = write_single_train(tmp_path, dialogue)
    with pytest.raises(AVSDFormatError, match="empty dialogue") as error:
        prepare(data_dir, tmp_path)
    assert path in str(error.value) and "EMPTY" in str(error.value)


def test_non_string_value(tmp_path):
    dialogue = make_dialogue("NUM01", 2)
    dialogue["dialog"][0]["answer"] = 3
    data_dir, path = write_single_train(tmp_path, dialogue)
    with pytest.raises(AVSDFormatError, match="'answer' must be a string") as error:
        prepare(data_dir, tmp_path)
    assert "NUM01" in str(error.value)


def test_invalid_json(tmp_path):
    data_dir = tmp_path / "bad"
    data_dir.mkdir()
    (data_dir / "train_set4DSTC7-AVSD.json").write_text('{"dialogs": [', encoding="utf-8")
    with pytest.raises(AVSDFormatError, match="not valid JSON") as error:
        prepare(str(data_dir), tmp_path)
    assert "train_set4DSTC7-AVSD.json" in str(error.value)


def test_undisclosed_answer_in_train_is_an_error(tmp_path):
    dialogue = make_dialogue("UND01", 3, test=True)
    data_dir, path = write_single_train(tmp_path, dialogue)
    with pytest.raises(AVSDFormatError, match=UNDISCLOSED) as error:
        prepare(data_dir, tmp_path)
    assert path in str(error.value) and "UND01" in str(error.value) and "turn 2" in str(error.value)


def test_undisclosed_answer_before_the_last_test_turn_is_an_error(tmp_path):
    dialogue = make_dialogue("UND02", 3, test=True)
    dialogue["dialog"][0]["answer"] = UNDISCLOSED
    data_dir, path = write_single_train(tmp_path, data={"dialogs": [dialogue]}, name="test_set4DSTC7-AVSD.json")
    with pytest.raises(AVSDFormatError, match="only the last turn") as error:
        prepare(data_dir, tmp_path)
    assert path in str(error.value) and "UND02" in str(error.value) and "turn 0" in str(error.value)


def test_test_dialogue_without_references(avsd_dir, tmp_path):
    reference_path = os.path.join(avsd_dir, "test_set4DSTC7-AVSD_multiref.json")
    # references for a different turn of TE002 (its last turn is 9): a mismatch
    write_reference_file(reference_path, TEST_DIALOGUES[:2], extra_names=["TE002_4"])
    with pytest.raises(AVSDFormatError) as error:
        prepare(avsd_dir, tmp_path)
    message = str(error.value)
    assert "TE002" in message and "'TE002_9'" in message and reference_path in message
    assert "TE002_4" in message  # the hint lists what the file has for this video


def test_reference_file_missing_key(avsd_dir, tmp_path):
    reference_path = os.path.join(avsd_dir, "test_set4DSTC7-AVSD_multiref.json")
    write_json(reference_path, {"images": []})
    with pytest.raises(AVSDFormatError, match="'annotations'") as error:
        prepare(avsd_dir, tmp_path)
    assert reference_path in str(error.value)


# ------------------------------------------------------------------------------------------- VideoFeatureStore


def test_feature_store_reads_memory_mapped(feature_root):
    store = VideoFeatureStore(feature_root)
    assert store.streams == ("i3d_rgb", "i3d_flow", "vggish")
    features = store["TR002"]
    assert sorted(features) == sorted(STREAM_DIMS)
    for stream, array in features.items():
        assert isinstance(array, np.memmap)
        assert array.shape[-1] == STREAM_DIMS[stream]
    expected = np.arange(6 * 8, dtype=np.float32).reshape(6, 8) + 1
    np.testing.assert_array_equal(features["i3d_rgb"], expected)
    assert "TR001" in store and "TE001" not in store and 42 not in store
    assert len(store) == len(TRAIN_DIALOGUES + VALID_DIALOGUES)
    assert store.image_ids() == sorted(image_id for image_id, _ in TRAIN_DIALOGUES + VALID_DIALOGUES)
    assert store.feature_dims() == STREAM_DIMS


def test_feature_store_test_split_reads_testset_dirs(feature_root):
    store = VideoFeatureStore(feature_root, streams="i3d_rgb, vggish", split="test")
    assert store.streams == ("i3d_rgb", "vggish")
    features = store["TE001"]
    assert sorted(features) == ["i3d_rgb", "vggish"]
    assert store.feature_path("TE001", "vggish") == os.path.join(feature_root, "vggish_testset", "TE001.npy")
    assert "TE001" in store and "TR001" not in store


def test_feature_store_missing_file_error_names_id_and_path(feature_root):
    store = VideoFeatureStore(feature_root, split="test")
    with pytest.raises(FileNotFoundError) as error:
        store["TR001"]  # a train video, looked up in the test folders
    assert isinstance(error.value, MissingVideoFeatureError)
    path = os.path.join(feature_root, "i3d_rgb_testset", "TR001.npy")
    assert "TR001" in str(error.value) and path in str(error.value)
    assert error.value.path == path and error.value.image_id == "TR001"
    with pytest.raises(FileNotFoundError):
        store.get("TR001")  # get() raises too unless skip_missing_features=True


def test_feature_store_unreadable_file(feature_root):
    path = os.path.join(feature_root, "vggish", "TR001.npy")
    with open(path, "wb") as handle:
        handle.write(b"this is not a numpy file")
    store = VideoFeatureStore(feature_root)
    with pytest.raises(ValueError) as error:
        store["TR001"]
    assert isinstance(error.value, UnreadableVideoFeatureError)
    assert "TR001" in str(error.value) and path in str(error.value)
    np.save(path, np.zeros((3, 2, 2, 4), dtype=np.float32))  # 4-D: not a feature array
    with pytest.raises(UnreadableVideoFeatureError, match="frames"):
        store["TR001"]


def test_feature_store_skip_missing_features_counts_and_warns_once(feature_root, caplog):
    store = VideoFeatureStore(feature_root, streams=["i3d_rgb"], skip_missing_features=True)
    with caplog.at_level(logging.WARNING, logger="avsd_dataset.features"):
        assert store.get("NOPE1") is None
        assert store.get("NOPE1") is None
        assert store.get("NOPE2") is None
        assert store.get("TR001") is not None
    assert store.missing == {"NOPE1": 2, "NOPE2": 1}
    assert store.num_missing == 2
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "NOPE1" in warnings[0] and os.path.join(feature_root, "i3d_rgb", "NOPE1.npy") in warnings[0]
    with pytest.raises(MissingVideoFeatureError):
        store["NOPE1"]  # indexing never returns None


def test_feature_store_validate_reports_all_problems(feature_root):
    ids = [image_id for image_id, _ in TRAIN_DIALOGUES + VALID_DIALOGUES]
    store = VideoFeatureStore(feature_root)
    assert store.validate(ids) == STREAM_DIMS
    assert store.validate(ids, expected_dims={"vggish": 4}) == STREAM_DIMS

    os.remove(os.path.join(feature_root, "i3d_flow", "TR002.npy"))  # missing
    np.save(os.path.join(feature_root, "vggish", "TR003.npy"), np.zeros((5, 7), np.float32))  # wrong dim
    truncated = os.path.join(feature_root, "i3d_rgb", "VA001.npy")
    with open(truncated, "r+b") as handle:  # truncated download
        handle.truncate(os.path.getsize(truncated) - 16)
    np.save(os.path.join(feature_root, "i3d_rgb", "VA002.npy"), np.zeros(8, np.float32))  # 1-D
    with pytest.raises(VideoFeatureValidationError) as error:
        store.validate(ids + ["GHOST"], max_listed=3)
    problems = error.value.problems
    assert {(problem.image_id, problem.stream, problem.kind) for problem in problems} == {
        ("TR002", "i3d_flow", "missing"),
        ("TR003", "vggish", "dim_mismatch"),
        ("VA001", "i3d_rgb", "unreadable"),
        ("VA002", "i3d_rgb", "bad_shape"),
        ("GHOST", "i3d_rgb", "missing"),
        ("GHOST", "i3d_flow", "missing"),
        ("GHOST", "vggish", "missing"),
    }
    message = str(error.value)
    assert message.startswith("7 feature problem(s)")
    assert "in 5 of 6 video(s)" in message
    assert "and 4 more" in message
    assert os.path.join(feature_root, "i3d_flow", "TR002.npy") in message
    truncated_problem = next(problem for problem in problems if problem.image_id == "VA001")
    assert "truncated" in truncated_problem.message
    # an explicit expected dim turns every other video into a mismatch
    problems = store.check(["TR001", "TR002"], expected_dims={"i3d_rgb": 16})
    assert [(p.image_id, p.kind) for p in problems if p.stream == "i3d_rgb"] == [
        ("TR001", "dim_mismatch"),
        ("TR002", "dim_mismatch"),
    ]


def test_feature_store_rejects_bad_arguments(feature_root, tmp_path):
    with pytest.raises(ValueError, match="unique"):
        VideoFeatureStore(feature_root, streams="i3d_rgb,i3d_rgb")
    with pytest.raises(ValueError, match="At least one"):
        VideoFeatureStore(feature_root, streams=" , ")
    with pytest.raises(FileNotFoundError):
        VideoFeatureStore(str(tmp_path / "no_features"))
    with pytest.raises(ValueError, match="path separator"):
        VideoFeatureStore(feature_root)["../TR001"]


# ----------------------------------------------------------------------------------- builder + feature checking


def test_builder_checks_video_features(avsd_dir, feature_root, tmp_path):
    dataset, builder = load(avsd_dir, tmp_path / "cache", feature_root=feature_root, feature_streams="i3d_rgb,vggish")
    store = builder.video_feature_store("test")
    assert store.streams == ("i3d_rgb", "vggish") and store.split == "test"
    assert store[dataset["test"][0]["image_id"]]["vggish"].shape[-1] == 4

    os.remove(os.path.join(feature_root, "vggish_testset", "TE002.npy"))
    with pytest.raises(VideoFeatureValidationError) as error:  # the changed folder is not a stale cache hit
        load(avsd_dir, tmp_path / "cache", feature_root=feature_root, feature_streams="i3d_rgb,vggish")
    assert "TE002" in str(error.value)

    dataset, _ = load(
        avsd_dir,
        tmp_path / "cache",
        feature_root=feature_root,
        feature_streams="i3d_rgb,vggish",
        skip_missing_features=True,
    )
    assert dataset["test"]["image_id"] == ["TE003", "TE001"]
    assert len(dataset["train"]) == 14


# ----------------------------------------------------------------------------------------------------- real data


@pytest.mark.skipif(
    not os.path.isfile(os.path.join(SHARED_AVSD_DIR, "test_set4DSTC7-AVSD.json")),
    reason="the real DSTC7 AVSD test files are not available",
)
def test_real_dstc7_test_set(tmp_path):
    start = time.perf_counter()
    builder = AVSD(data_dir=SHARED_AVSD_DIR, cache_dir=str(tmp_path / "cache"))
    builder.download_and_prepare()
    dataset = builder.as_dataset()
    elapsed = time.perf_counter() - start
    print(f"\nreal DSTC7 test set: {len(dataset['test'])} examples prepared in {elapsed:.2f} s")

    assert list(dataset) == ["test"]
    test = dataset["test"]
    assert len(test) == 1710
    assert test[0]["image_id"] == "VC5RZ"
    with open(os.path.join(SHARED_AVSD_DIR, "test_set4DSTC7-AVSD.json"), encoding="utf-8") as handle:
        dialogs = json.load(handle)["dialogs"]
    assert test["image_id"] == [dialog["image_id"] for dialog in dialogs]
    assert test["turn"] == [len(dialog["dialog"]) - 1 for dialog in dialogs]
    assert all(len(references) == 6 for references in test["references"])
    assert set(test["answer"]) == {UNDISCLOSED}
    assert [len(history) for history in test["history"]] == test["turn"]
    assert test[0]["references"][0] == "there is man sitting on couch"
