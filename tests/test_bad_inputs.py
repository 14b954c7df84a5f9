"""Bad inputs a user can produce, across features, processor, data, scorer, checkpoints and run_vgd.py: each
gives a clear error naming the file / video id / field and what was expected, or works correctly."""

import json
import logging
import os

import numpy as np
import pytest

import avsd_dataset.splits as avsd_splits
import run_vgd
from avsd_dataset.features import BAD_VALUES, VideoFeatureStore, VideoFeatureValidationError, UnreadableVideoFeatureError
from test_avsd_dataset import TRAIN_DIALOGUES, VALID_DIALOGUES, TEST_DIALOGUES, avsd_dir, feature_root, write_features  # noqa: F401 (fixtures)


# ------------------------------------------------------------------------------------------- feature files

def bad_array(kind):
    """A [frames, 128] vggish-sized array of the given kind of bad."""
    if kind == "nan":
        array = np.zeros((3, 128), dtype=np.float32)
        array[:, 1] = np.nan
    elif kind == "inf":
        array = np.zeros((2, 128), dtype=np.float32)
        array[1, 0] = -np.inf
    elif kind == "str":
        array = np.full((3, 128), "a")
    elif kind == "bool":
        array = np.ones((3, 128), dtype=bool)
    else:
        array = np.ones((3, 128), dtype=np.complex64)
    return array


BAD_MESSAGES = {
    "nan": "3 non-finite values \\(NaN or inf\\), the first in frame 0",
    "inf": "1 non-finite values \\(NaN or inf\\), the first in frame 1",
    "str": "expected floating-point features, got dtype <U1",
    "bool": "expected floating-point features, got dtype bool",
    "complex": "expected floating-point features, got dtype complex64",
}


def corrupt(feature_root, image_id, kind, split_dir="vggish"):
    path = os.path.join(feature_root, split_dir, image_id + ".npy")
    np.save(path, bad_array(kind))
    return path


@pytest.mark.parametrize("kind", sorted(BAD_MESSAGES))
def test_feature_check_catches_non_finite_and_non_float_files_with_id_and_path(feature_root, kind):
    path = corrupt(feature_root, "TR002", kind)
    store = VideoFeatureStore(feature_root)
    ids = [image_id for image_id, _ in TRAIN_DIALOGUES]
    problems = store.check(ids)
    assert [(p.image_id, p.stream, p.path, p.kind) for p in problems] == [("TR002", "vggish", path, BAD_VALUES)]
    with pytest.raises(VideoFeatureValidationError, match=BAD_MESSAGES[kind]) as error:
        store.validate(ids)
    assert "TR002 [vggish]" in str(error.value) and path in str(error.value)
    if kind in ("str", "bool", "complex"):  # a dtype problem: reading the file says so too
        with pytest.raises(UnreadableVideoFeatureError, match=BAD_MESSAGES[kind]):
            store["TR002"]


def test_header_only_check_skips_the_values(feature_root):
    corrupt(feature_root, "TR002", "nan")
    assert VideoFeatureStore(feature_root).check(["TR002"], check_values=False) == []


@pytest.mark.parametrize("kind", ["nan", "complex"])
def test_skip_missing_features_drops_the_videos_with_bad_values(avsd_dir, feature_root, kind, tmp_path):
    bad_id = TEST_DIALOGUES[0][0]
    corrupt(feature_root, bad_id, kind, split_dir="vggish_testset")
    data_args = run_vgd.DataArguments(data_dir=avsd_dir, feature_dir=feature_root, cache_dir=str(tmp_path / "cache"))
    splits, _ = avsd_splits.load_splits(data_args)
    with pytest.raises(VideoFeatureValidationError, match=f"{bad_id} \\[vggish\\] bad_values"):
        avsd_splits.feature_stores(data_args, splits, ["test"])
    data_args.skip_missing_features = True
    stores = avsd_splits.feature_stores(data_args, splits, ["test"])
    kept = set(splits["test"]["image_id"])
    assert bad_id not in kept and kept == {image_id for image_id, _ in TEST_DIALOGUES} - {bad_id}
    assert stores["test"].split == "test"


# ------------------------------------------------------------------------------------------- scorer

from avsd_dataset import score  # noqa: E402
from avsd_dataset.score import filter_stopwords, load_references, prepare_dstc7_inputs  # noqa: E402
from test_scoring import fill_answers, make_tiny_test_set  # noqa: E402


def test_empty_answers_score_the_same_in_run_vgd_and_in_the_scorer(tmp_path):
    """run_vgd.py scores its predictions in-process (official stopword filter, then the metrics) and writes them
    to test_result.json; the scorer must accept that file and hand the metrics exactly the same inputs (the
    metrics themselves score an empty hypothesis: tests/test_scoring.py)."""
    test, multiref = make_tiny_test_set()
    predictions = ["yes , a man .", "", "no", "he opens the door ."]
    references = [[annotation["caption"] for annotation in multiref["annotations"] if annotation["image_id"] == i + 1] for i in range(4)]
    result_path = tmp_path / "test_result.json"
    result_path.write_text(json.dumps(fill_answers(test, predictions)))
    hypotheses, scorer_references = prepare_dstc7_inputs(str(result_path), multiref)
    assert hypotheses == [filter_stopwords(text) for text in predictions] == ["yes man", "", "no", "he opens the door"]
    assert scorer_references == references


def test_reference_annotation_without_caption(tmp_path):
    _, multiref = make_tiny_test_set()
    del multiref["annotations"][4]["caption"]
    path = tmp_path / "multiref.json"
    path.write_text(json.dumps(multiref))
    with pytest.raises(ValueError, match=rf"Annotation 4 of the reference file '{path}' \(image_id 2\) needs a 'caption' string"):
        load_references(str(path))


def test_non_utf8_result_file_is_named(tmp_path, capsys):
    test, multiref = make_tiny_test_set()
    result_path, reference_path = tmp_path / "result.json", tmp_path / "multiref.json"
    result_path.write_bytes(json.dumps(fill_answers(test, ["caf\u00e9 .", "b", "c", "d"]), ensure_ascii=False).encode("latin-1"))
    reference_path.write_text(json.dumps(multiref))
    assert score.main([str(result_path), str(reference_path)]) == 1
    error = capsys.readouterr().err
    assert f"result file '{result_path}' is not UTF-8 text" in error and "offset" in error


def test_unwritable_output_json_keeps_the_printed_scores(tmp_path, capsys, monkeypatch):
    test, multiref = make_tiny_test_set()
    result_path, reference_path = tmp_path / "result.json", tmp_path / "multiref.json"
    result_path.write_text(json.dumps(fill_answers(test, ["a", "b", "c", "d"])))
    reference_path.write_text(json.dumps(multiref))
    scores = {name: 0.5 for name in score.METRIC_NAMES}
    monkeypatch.setattr(score, "score_result_file", lambda *args, **kwargs: scores)  # no Java needed here
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    output_json = blocker / "scores.json"  # a folder inside a file: cannot be created
    assert score.main([str(result_path), str(reference_path), "--output_json", str(output_json)]) == 1
    captured = capsys.readouterr()
    assert "Bleu_1: 0.500" in captured.out
    assert f"cannot write the scores to --output_json '{output_json}'" in captured.err and "printed above" in captured.err


# ------------------------------------------------------------------------------------------- prompts that fill the positions

from test_run_vgd import TINY  # noqa: E402


def test_do_predict_with_a_very_long_test_caption_writes_the_result_file(tmp_path, monkeypatch):
    """The demo model has 256 positions; one test caption of ~1,500 tokens must be truncated with room for the
    generated answer, and every test dialogue gets its answer in test_result.json."""
    import avsd_dataset.synthetic as synthetic

    generate = synthetic.generate_synthetic_avsd

    def with_a_long_test_caption(data_dir, **kwargs):
        info = generate(data_dir, **kwargs)
        test_path = os.path.join(data_dir, "test_set4DSTC7-AVSD.json")
        with open(test_path, encoding="utf-8") as handle:
            test = json.load(handle)
        test["dialogs"][0]["caption"] = " ".join(["a man opens a window and looks outside ."] * 150)
        with open(test_path, "w", encoding="utf-8") as handle:
            json.dump(test, handle)
        return info

    monkeypatch.setattr(synthetic, "generate_synthetic_avsd", with_a_long_test_caption)
    output_dir = tmp_path / "run"
    run_vgd.main(TINY + ["--do_predict", "--output_dir", str(output_dir)])
    result = json.loads((output_dir / "test_result.json").read_text())
    assert len(result["dialogs"][0]["caption"].split()) == 150 * 9
    assert all(dialog["dialog"][-1]["answer"] != "__UNDISCLOSED__" for dialog in result["dialogs"])


def test_processor_truncation_keeps_room_for_the_new_tokens_and_generate_then_works(tiny_gpt2_dir):
    from modeling_vgd_gpt2 import VGDGPT2ForDialogue
    from processing_vgd import VGDProcessor

    processor = VGDProcessor.from_gpt2_pretrained(tiny_gpt2_dir, video_feature_dim=8)  # 128 positions
    model = VGDGPT2ForDialogue.from_gpt2_pretrained(tiny_gpt2_dir, processor=processor).eval()
    video = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    long_caption = " ".join(["a man opens a window and looks outside ."] * 40)
    inputs = dict(video_features=video, caption=long_caption, history=[], question="what does he do next ?", return_tensors="pt")

    full = processor(**inputs)
    assert int(full["attention_mask"].sum()) - 3 == processor.max_text_length == 128
    with pytest.raises(ValueError, match=r"fills all 128 positions .* no room to generate.*max_new_tokens=N"):
        model.generate(**full, max_new_tokens=5)

    roomy = processor(**inputs, max_new_tokens=5)
    assert int(roomy["attention_mask"].sum()) - 3 == 128 - 5
    out = model.generate(**roomy, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert out.shape[1] == roomy["input_ids"].shape[1] + 5
    with pytest.raises(ValueError, match="only 5 of the requested max_new_tokens=6 fit"):
        model.generate(**roomy, max_new_tokens=6)
    # a training example (with answer) is not affected by max_new_tokens
    with_answer = processor(**inputs, answer="he closes it .", max_new_tokens=5)
    assert int(with_answer["attention_mask"].sum()) - 3 == 128 - 1  # one position kept for the collator's <cls>
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 0, got -1"):
        processor(**inputs, max_new_tokens=-1)



def test_processor_folder_without_tokenizer_files_fails_clearly(tiny_gpt2_dir, tmp_path):
    from transformers import AutoProcessor

    from processing_vgd import VGDProcessor

    folder = tmp_path / "processor"
    VGDProcessor.from_gpt2_pretrained(tiny_gpt2_dir, video_feature_dim=8).save_pretrained(folder)
    (folder / "tokenizer.json").unlink()  # tokenizer_config.json (the special tokens) is left
    for load in (VGDProcessor.from_pretrained, lambda path: AutoProcessor.from_pretrained(path, trust_remote_code=True)):
        with pytest.raises(ValueError, match=rf"tokenizer loaded from '{folder}' has a vocabulary of 0 tokens .* vocabulary files"):
            load(str(folder))


def test_truncated_model_safetensors_names_the_file(tmp_path):
    from transformers import AutoModelForCausalLM

    from modeling_vgd_gpt2 import VGDGPT2ForDialogue
    from test_modeling import tiny_config

    VGDGPT2ForDialogue(tiny_config()).save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    data = path.read_bytes()
    for cut in (5, len(data) // 2):
        path.write_bytes(data[:cut])
        for load in (VGDGPT2ForDialogue.from_pretrained, lambda p: AutoModelForCausalLM.from_pretrained(p, trust_remote_code=True)):
            with pytest.raises(OSError, match=rf"cannot read {path}: not a complete safetensors file .* copy the checkpoint again"):
                load(str(tmp_path))


def test_empty_questions_and_answers_in_the_data_are_counted_and_warned(tmp_path, caplog):
    from avsd_dataset.avsd import load_avsd_dialogues

    dialogue = lambda image_id, turns: {"image_id": image_id, "caption": "a caption .", "summary": "", "dialog": turns}  # noqa: E731
    data = {"dialogs": [
        dialogue("V1", [{"question": "is he alone ?", "answer": ""}, {"question": "  ", "answer": "yes ."}]),
        dialogue("V2", [{"question": "", "answer": " "}]),
    ]}
    path = tmp_path / "train.json"
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="avsd_dataset.avsd"):
        dialogues = load_avsd_dialogues(str(path))
    assert [turn["answer"] for turn in dialogues[0]["dialog"]] == ["", "yes ."]  # kept as they are
    messages = [record.getMessage() for record in caplog.records]
    assert f"{path}: 2 empty questions (kept as empty text), e.g. dialogue 0 (image_id 'V1') turn 1; dialogue 1 (image_id 'V2') turn 0" in messages
    assert f"{path}: 2 empty answers (kept as empty text), e.g. dialogue 0 (image_id 'V1') turn 0; dialogue 1 (image_id 'V2') turn 0" in messages
