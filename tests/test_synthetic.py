"""Tests of the synthetic AVSD generator (`avsd_dataset/synthetic.py`) and of the answer accuracy."""

import filecmp
import json
import os
import re

import numpy as np
import pytest

from avsd_dataset import synthetic
from avsd_dataset.synthetic import (
    ANSWER_TEMPLATES,
    CONFIG_FILE,
    FACT_VALUES,
    GROUND_TRUTH_FILE,
    MULTIREF_FILE,
    QUESTION_FACT_TYPES,
    QUESTION_TEMPLATES,
    SPLIT_FILES,
    TEST_FILE,
    TRAIN_FILE,
    UNDISCLOSED,
    VALID_FILE,
    SyntheticAVSDConfig,
    answer_accuracy,
    answer_words,
    chance_level,
    corpus_texts,
    decode_facts_nearest_prototype,
    generate_synthetic_avsd,
    is_correct_answer,
    is_synthetic_avsd_cached,
    load_config,
    load_ground_truth,
    make_prototypes,
)

SMALL = dict(num_train_dialogs=40, num_valid_dialogs=8, num_test_dialogs=32)
IMAGE_ID_RE = re.compile(r"^[A-Z0-9]{5}$")


def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _all_files(root):
    files = []
    for directory, _, names in os.walk(root):
        files.extend(os.path.relpath(os.path.join(directory, name), root) for name in names)
    return sorted(files)


def _dialogs(output_dir, split):
    return _read_json(os.path.join(output_dir, SPLIT_FILES[split]))["dialogs"]


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp("synthetic_small"))
    info = generate_synthetic_avsd(output_dir, **SMALL)
    return output_dir, info


@pytest.fixture(scope="module")
def audio_dataset(tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp("synthetic_audio"))
    info = generate_synthetic_avsd(output_dir, audio_stream="vggish", **SMALL)
    return output_dir, info


# ----------------------------------------------------------------------------------------------------------
# Format
# ----------------------------------------------------------------------------------------------------------
def test_files_written(small_dataset):
    output_dir, info = small_dataset
    for name in (TRAIN_FILE, VALID_FILE, TEST_FILE, MULTIREF_FILE, GROUND_TRUTH_FILE, CONFIG_FILE):
        assert os.path.isfile(os.path.join(output_dir, name)), name
    assert info.regenerated
    assert info.files["test"] == os.path.join(output_dir, TEST_FILE)
    assert info.feature_root == os.path.join(output_dir, "features")
    assert info.num_dialogs == {"train": 40, "validation": 8, "test": 32}
    assert info.stream_shapes == {"i3d_rgb": (4, 4, 64)}
    assert sorted(os.listdir(info.feature_root)) == ["i3d_rgb", "i3d_rgb_testset"]


def test_dialogue_json_format(small_dataset):
    output_dir, _ = small_dataset
    seen_ids = set()
    for split, expected in (("train", 40), ("validation", 8), ("test", 32)):
        data = _read_json(os.path.join(output_dir, SPLIT_FILES[split]))
        assert set(data) == {"type", "version", "dialogs"}
        assert data["type"] == "scene_aware_dialog"
        assert len(data["dialogs"]) == expected
        for dialog in data["dialogs"]:
            assert set(dialog) == {"image_id", "caption", "summary", "dialog"}
            assert IMAGE_ID_RE.match(dialog["image_id"])
            assert dialog["image_id"] not in seen_ids
            seen_ids.add(dialog["image_id"])
            assert 1 <= len(dialog["dialog"]) <= 10
            for turn_index, turn in enumerate(dialog["dialog"]):
                assert set(turn) == {"question", "answer"}
                is_scored = split == "test" and turn_index == len(dialog["dialog"]) - 1
                assert (turn["answer"] == UNDISCLOSED) == is_scored
                assert turn["question"].endswith(" ?")
                if not is_scored:
                    assert turn["answer"].endswith(" .")
        if split != "test":
            assert min(len(d["dialog"]) for d in data["dialogs"]) >= 2


def test_text_is_lower_case_and_space_tokenised(small_dataset):
    output_dir, _ = small_dataset
    texts = corpus_texts(output_dir)
    assert texts and UNDISCLOSED not in texts
    for text in texts:
        assert text == text.lower()
        assert re.fullmatch(r"[a-z']+( [a-z'?.]+)*", text), text
        for token in text.split(" "):
            assert token in (".", "?") or re.fullmatch(r"[a-z']+", token), (token, text)


def test_multiref_format(small_dataset):
    output_dir, _ = small_dataset
    multiref = _read_json(os.path.join(output_dir, MULTIREF_FILE))
    assert list(multiref) == ["info", "licenses", "images", "type", "annotations"]
    assert multiref["type"] == "captions"
    test_dialogs = _dialogs(output_dir, "test")
    ground_truth = load_ground_truth(output_dir)
    assert [image["name"] for image in multiref["images"]] == [
        f"{d['image_id']}_{len(d['dialog']) - 1}" for d in test_dialogs
    ]
    assert [image["id"] for image in multiref["images"]] == list(range(1, len(test_dialogs) + 1))
    assert [a["id"] for a in multiref["annotations"]] == list(range(1, len(multiref["annotations"]) + 1))
    references = {}
    for annotation in multiref["annotations"]:
        references.setdefault(annotation["image_id"], []).append(annotation["caption"])
    assert sorted(references) == list(range(1, len(test_dialogs) + 1))
    for number, entry in enumerate(ground_truth["test"], start=1):
        refs = references[number]
        assert len(refs) == 6 and len(set(refs)) == 6  # several different phrasings
        assert refs == entry["references"]
        for ref in refs:
            assert is_correct_answer(ref, entry["answer_word"], entry["competing_words"])


def test_feature_files(small_dataset):
    output_dir, _ = small_dataset
    root = os.path.join(output_dir, "features")
    train_ids = [d["image_id"] for d in _dialogs(output_dir, "train") + _dialogs(output_dir, "validation")]
    test_ids = [d["image_id"] for d in _dialogs(output_dir, "test")]
    assert sorted(os.listdir(os.path.join(root, "i3d_rgb"))) == sorted(i + ".npy" for i in train_ids)
    assert sorted(os.listdir(os.path.join(root, "i3d_rgb_testset"))) == sorted(i + ".npy" for i in test_ids)
    for image_id in train_ids[:5]:
        array = np.load(os.path.join(root, "i3d_rgb", image_id + ".npy"))
        assert array.shape == (4, 4, 64) and array.dtype == np.float32
    for image_id in test_ids[:5]:
        array = np.load(os.path.join(root, "i3d_rgb_testset", image_id + ".npy"))
        assert array.shape == (4, 4, 64) and array.dtype == np.float32
        assert np.isfinite(array).all()


def test_audio_stream(audio_dataset):
    output_dir, info = audio_dataset
    assert info.stream_shapes == {"i3d_rgb": (4, 4, 64), "vggish": (8, 32)}
    root = os.path.join(output_dir, "features")
    assert sorted(os.listdir(root)) == ["i3d_rgb", "i3d_rgb_testset", "vggish", "vggish_testset"]
    test_ids = [d["image_id"] for d in _dialogs(output_dir, "test")]
    array = np.load(os.path.join(root, "vggish_testset", test_ids[0] + ".npy"))
    assert array.shape == (8, 32) and array.dtype == np.float32
    ground_truth = load_ground_truth(output_dir)
    assert "sound" in ground_truth["question_types"]
    assert {e["question_type"] for e in ground_truth["test"]} == set(info.config.question_types)
    config = info.config
    prototypes = make_prototypes(config)
    for image_id in test_ids:
        features = {s: np.load(os.path.join(root, s + "_testset", image_id + ".npy")) for s in config.streams}
        assert decode_facts_nearest_prototype(features, config, prototypes)["sound"] == ground_truth["videos"][image_id]["sound"]


def test_loads_back_config(small_dataset):
    output_dir, info = small_dataset
    assert load_config(output_dir) == info.config
    assert _read_json(os.path.join(output_dir, CONFIG_FILE))["generator_version"] == synthetic.GENERATOR_VERSION


# ----------------------------------------------------------------------------------------------------------
# Determinism and caching
# ----------------------------------------------------------------------------------------------------------
def test_same_seed_gives_identical_files(tmp_path, small_dataset):
    first, _ = small_dataset
    second = str(tmp_path / "again")
    generate_synthetic_avsd(second, **SMALL)
    assert _all_files(first) == _all_files(second)
    for name in _all_files(first):
        assert filecmp.cmp(os.path.join(first, name), os.path.join(second, name), shallow=False), name


def test_different_seed_gives_different_data(tmp_path, small_dataset):
    first, _ = small_dataset
    other = str(tmp_path / "seed1")
    generate_synthetic_avsd(other, seed=1, **SMALL)
    assert _dialogs(first, "train") != _dialogs(other, "train")
    first_ids = {d["image_id"] for d in _dialogs(first, "train")}
    assert first_ids != {d["image_id"] for d in _dialogs(other, "train")}
    assert not np.allclose(make_prototypes(SyntheticAVSDConfig(seed=0))["place"], make_prototypes(SyntheticAVSDConfig(seed=1))["place"])


def test_cache_detection(tmp_path):
    output_dir = str(tmp_path / "cache")
    assert not is_synthetic_avsd_cached(output_dir, **SMALL)
    info = generate_synthetic_avsd(output_dir, **SMALL)
    assert info.regenerated and is_synthetic_avsd_cached(output_dir, **SMALL)
    mtime = os.path.getmtime(os.path.join(output_dir, TRAIN_FILE))
    again = generate_synthetic_avsd(output_dir, **SMALL)
    assert not again.regenerated
    assert again.chance == info.chance and again.config == info.config
    assert os.path.getmtime(os.path.join(output_dir, TRAIN_FILE)) == mtime

    # Another argument: not cached; regenerating removes the features of the old dataset.
    assert not is_synthetic_avsd_cached(output_dir, noise=0.5, **SMALL)
    old_ids = {d["image_id"] for d in _dialogs(output_dir, "train")}
    changed = generate_synthetic_avsd(output_dir, seed=3, **SMALL)
    assert changed.regenerated
    new_ids = {d["image_id"] for d in _dialogs(output_dir, "train")} | {d["image_id"] for d in _dialogs(output_dir, "validation")}
    assert {name[:-4] for name in os.listdir(os.path.join(output_dir, "features", "i3d_rgb"))} == new_ids
    assert not old_ids & new_ids

    # A missing feature file or an interrupted generation (no config file) is not a cache hit.
    feature_dir = os.path.join(output_dir, "features", "i3d_rgb_testset")
    os.remove(os.path.join(feature_dir, sorted(os.listdir(feature_dir))[0]))
    assert not is_synthetic_avsd_cached(output_dir, seed=3, **SMALL)
    assert generate_synthetic_avsd(output_dir, seed=3, **SMALL).regenerated
    assert is_synthetic_avsd_cached(output_dir, seed=3, **SMALL)
    os.remove(os.path.join(output_dir, CONFIG_FILE))
    assert not is_synthetic_avsd_cached(output_dir, seed=3, **SMALL)

    # overwrite=True always regenerates.
    generate_synthetic_avsd(output_dir, seed=3, **SMALL)
    assert generate_synthetic_avsd(output_dir, seed=3, overwrite=True, **SMALL).regenerated


def test_config_validation():
    with pytest.raises(ValueError):
        SyntheticAVSDConfig(num_actions=1)
    with pytest.raises(ValueError):
        SyntheticAVSDConfig(num_frames=3, num_actions=4)
    with pytest.raises(ValueError):
        SyntheticAVSDConfig(num_references=7)
    with pytest.raises(ValueError):
        SyntheticAVSDConfig(noise=-1.0)
    with pytest.raises(ValueError):
        SyntheticAVSDConfig(audio_stream="i3d_rgb")
    assert SyntheticAVSDConfig(num_regions=2).count_values == ("one", "two")


# ----------------------------------------------------------------------------------------------------------
# The task: facts are in the video, not in the text
# ----------------------------------------------------------------------------------------------------------
def test_vocabularies_are_disjoint_and_not_in_templates():
    words = [w for values in FACT_VALUES.values() for w in values]
    assert len(words) == len(set(words))
    template_words = set()
    for templates in list(QUESTION_TEMPLATES.values()) + list(ANSWER_TEMPLATES.values()):
        for template in templates:
            template_words.update(template.replace("{", " {").split())
    assert not template_words & set(words)


def test_nearest_prototype_decoder_recovers_facts(small_dataset):
    output_dir, info = small_dataset
    config = info.config
    prototypes = make_prototypes(config)
    ground_truth = load_ground_truth(output_dir)
    for image_id, facts in ground_truth["videos"].items():
        folder = config.video_stream + ("_testset" if facts["split"] == "test" else "")
        features = {config.video_stream: np.load(os.path.join(output_dir, "features", folder, image_id + ".npy"))}
        decoded = decode_facts_nearest_prototype(features, config, prototypes)
        for key in ("place", "object", "color", "count", "actions"):
            assert decoded[key] == facts[key], (image_id, key)


def test_the_text_never_holds_the_asked_fact(small_dataset):
    output_dir, _ = small_dataset
    ground_truth = load_ground_truth(output_dir)
    for split in ("train", "validation", "test"):
        annotations = {(t["image_id"], t["turn_index"]): t for t in ground_truth["splits"][split]}
        for dialog in _dialogs(output_dir, split):
            known = set(answer_words(dialog["caption"])) | set(answer_words(dialog["summary"]))
            for turn_index, turn in enumerate(dialog["dialog"]):
                annotation = annotations[(dialog["image_id"], turn_index)]
                assert annotation["answer_word"] not in known | set(answer_words(turn["question"]))
                if turn["answer"] != UNDISCLOSED:
                    assert annotation["answer_word"] in answer_words(turn["answer"])
                known |= set(answer_words(turn["question"])) | set(answer_words(turn["answer"]))


def test_answers_follow_the_video_and_the_history(small_dataset):
    output_dir, _ = small_dataset
    ground_truth = load_ground_truth(output_dir)
    action_words = set(FACT_VALUES["action"])
    num_checked = {"action_next": 0, "action_before": 0}
    for split in ("train", "validation", "test"):
        annotations = {(t["image_id"], t["turn_index"]): t for t in ground_truth["splits"][split]}
        for dialog in _dialogs(output_dir, split):
            facts = ground_truth["videos"][dialog["image_id"]]
            actions = facts["actions"]
            for turn_index, turn in enumerate(dialog["dialog"]):
                annotation = annotations[(dialog["image_id"], turn_index)]
                qtype, word = annotation["question_type"], annotation["answer_word"]
                if qtype == "action_first":
                    assert word == actions[0]
                elif qtype == "action_last":
                    assert word == actions[-1]
                elif qtype == "action_next":
                    # "what does she do after that ?": the previous answer names the action just before.
                    assert turn_index > 0
                    previous = annotations[(dialog["image_id"], turn_index - 1)]
                    assert previous["question_type"].startswith("action_")
                    assert not action_words & set(answer_words(turn["question"]))
                    assert actions.index(word) == actions.index(previous["answer_word"]) + 1
                    num_checked[qtype] += 1
                elif qtype == "action_before":
                    named = action_words & set(answer_words(turn["question"]))
                    assert len(named) == 1
                    assert actions.index(word) == actions.index(named.pop()) - 1
                    num_checked[qtype] += 1
                else:
                    assert word == facts[QUESTION_FACT_TYPES[qtype]]
    assert num_checked["action_next"] > 0 and num_checked["action_before"] > 0


def test_test_split_is_balanced(tmp_path):
    output_dir = str(tmp_path / "balanced")
    info = generate_synthetic_avsd(output_dir, num_train_dialogs=4, num_valid_dialogs=0, num_test_dialogs=192)
    entries = load_ground_truth(output_dir)["test"]
    types = info.config.question_types
    assert [e["question_type"] for e in entries] == [types[i % len(types)] for i in range(192)]
    for qtype in types:
        words = [e["answer_word"] for e in entries if e["question_type"] == qtype]
        values = info.config.fact_values[QUESTION_FACT_TYPES[qtype]]
        assert sorted(set(words)) == sorted(values)
        assert max(words.count(v) for v in values) == len(words) // len(values)
    # 7 types with 8 values (1/8 each) and "count" with 4 values (1/4): (7 / 8 + 1 / 4) / 8.
    assert info.chance == pytest.approx((7 / 8 + 1 / 4) / 8)
    assert load_ground_truth(output_dir)["chance"] == info.chance


# ----------------------------------------------------------------------------------------------------------
# Answer accuracy
# ----------------------------------------------------------------------------------------------------------
def test_is_correct_answer():
    colors = FACT_VALUES["color"]
    assert is_correct_answer("it is red .", "red", colors)
    assert is_correct_answer("Red.", "red", colors)
    assert is_correct_answer("red , i think", "red", colors)
    assert not is_correct_answer("it is red or blue .", "red", colors)  # a competing word
    assert not is_correct_answer("it is reddish .", "red", colors)  # word-level, not substring
    assert not is_correct_answer("it is blue .", "red", colors)
    assert not is_correct_answer("", "red", colors)
    assert is_correct_answer("the red cup is on the table", "red", colors)  # other fact types do not compete
    assert answer_words("First, she walks.") == ["first", "she", "walks"]


def test_answer_accuracy_and_chance():
    entries = [
        {"image_id": "AAAAA", "turn_index": 0, "question_type": "color", "answer_word": "red", "competing_words": ["blue"]},
        {"image_id": "BBBBB", "turn_index": 2, "question_type": "color", "answer_word": "red", "competing_words": ["blue"]},
        {"image_id": "CCCCC", "turn_index": 1, "question_type": "color", "answer_word": "blue", "competing_words": ["red"]},
        {"image_id": "DDDDD", "turn_index": 3, "question_type": "count", "answer_word": "two", "competing_words": ["one"]},
    ]
    # Best constant guess: "red" for color (2 of 3), "two" for count (1 of 1) -> 3 / 4.
    assert chance_level(entries) == pytest.approx(0.75)
    result = answer_accuracy(["it is red .", "red or blue .", "it is blue .", "one ."], entries)
    assert result["accuracy"] == pytest.approx(0.5)
    assert result["chance"] == pytest.approx(0.75)
    assert result["num_examples"] == 4
    assert result["per_question_type"] == {"color": pytest.approx(2 / 3), "count": 0.0}
    assert result["chance_per_question_type"] == {"color": pytest.approx(2 / 3), "count": 1.0}
    as_dict = answer_accuracy({"AAAAA": "red", "BBBBB_2": "red", "CCCCC": "blue", "DDDDD_3": "two"}, {"test": entries})
    assert as_dict["accuracy"] == 1.0
    with pytest.raises(ValueError):
        answer_accuracy(["red"], entries)
    with pytest.raises(KeyError):
        answer_accuracy({"AAAAA": "red"}, entries)


def test_answer_accuracy_on_generated_data(small_dataset):
    output_dir, info = small_dataset
    ground_truth = load_ground_truth(output_dir)
    references = [e["references"][0] for e in ground_truth["test"]]
    assert answer_accuracy(references, ground_truth)["accuracy"] == 1.0
    # A constant answer per question type (its most frequent fact word) scores exactly the chance level.
    best = {}
    for qtype in {e["question_type"] for e in ground_truth["test"]}:
        words = [e["answer_word"] for e in ground_truth["test"] if e["question_type"] == qtype]
        best[qtype] = max(sorted(set(words)), key=words.count)
    constant = [f"it is {best[e['question_type']]} ." for e in ground_truth["test"]]
    result = answer_accuracy(constant, ground_truth)
    assert result["accuracy"] == pytest.approx(result["chance"])
    assert result["chance"] == pytest.approx(info.chance)
    # Naming every value of the type is never correct.
    hedges = [" ".join(e["competing_words"] + [e["answer_word"]]) for e in ground_truth["test"]]
    assert answer_accuracy(hedges, ground_truth)["accuracy"] == 0.0


def test_corpus_texts_cover_the_vocabulary(small_dataset):
    output_dir, info = small_dataset
    words = {w for text in corpus_texts(output_dir, splits=("train",)) for w in text.split()}
    for fact_type, values in info.config.fact_values.items():
        assert set(values) <= words, fact_type


def test_pooling_ablations_remove_what_they_should():
    """Average pooling over time ("spatial") loses the order of the actions; over space ("temporal") keeps it."""
    config = SyntheticAVSDConfig()
    prototypes = make_prototypes(config)
    facts = {"gender": 0, "place": 1, "object": 2, "color": 3, "count": 1, "actions": [0, 1, 2, 3]}
    reordered = dict(facts, actions=[3, 1, 0, 2])
    layout = {"object_regions": [0, 2]}
    video = synthetic._render_video_features(np.random.default_rng(0), config, prototypes, facts, layout)["i3d_rgb"]
    other = synthetic._render_video_features(np.random.default_rng(0), config, prototypes, reordered, layout)["i3d_rgb"]
    np.testing.assert_allclose(video.mean(axis=0), other.mean(axis=0), atol=1e-5)  # spatial pooling: same input
    assert not np.allclose(video.mean(axis=1), other.mean(axis=1))  # temporal pooling: order still there
    features = {"i3d_rgb": video}
    assert decode_facts_nearest_prototype(features, config, prototypes)["actions"] == ["walks", "sits", "eats", "drinks"]
