"""Tests of processing_vgd: the video feature extractor, VGDProcessor and DataCollatorForVGD (docs/design.md)."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from configuration_vgd_gpt2 import MODALITY_CAP, MODALITY_SYS, MODALITY_USR, MODALITY_VIS, VGDGPT2Config
from avsd_dataset.collator import DataCollatorForVGD
from processing_vgd import (
    AVSD_STREAM_ORDER,
    VGDProcessor,
    VGDVideoFeatureExtractor,
    uniform_frame_indices,
)


D = 6

CAPTION = "a man opens a window and looks outside ."
HISTORY = [("is he alone ?", "yes he is alone in the room ."), ("what color is the cup ?", "the cup is red .")]
QUESTION = "what does she do next ?"
ANSWER = "she puts the book on the table ."


@pytest.fixture(scope="module")
def processor(tiny_gpt2_dir):
    return VGDProcessor.from_gpt2_pretrained(tiny_gpt2_dir, video_feature_dim=D, max_video_frames=8)


def make_processor(tiny_gpt2_dir, **kwargs):
    options = {"video_feature_dim": D, "max_video_frames": 8}
    options.update(kwargs)
    return VGDProcessor.from_gpt2_pretrained(tiny_gpt2_dir, **options)


def video(frames, regions=None, dim=D, seed=0):
    rng = np.random.default_rng(seed)
    shape = (frames, dim) if regions is None else (frames, regions, dim)
    return rng.standard_normal(shape).astype(np.float32)


def tokens(processor, text):
    """The ids of one text piece under the processor's convention (one leading space)."""
    return processor.tokenizer(" " + text, add_special_tokens=False)["input_ids"]


def derive_modality_and_turn(input_ids, processor):
    """docs/design.md's rules, written independently: modality of the most recent marker, turn = #<usr> so far."""
    modality, turn, modalities, turns = MODALITY_VIS, 0, [], []
    markers = {processor.cap_token_id: MODALITY_CAP, processor.usr_token_id: MODALITY_USR, processor.sys_token_id: MODALITY_SYS}
    for token in input_ids:
        if token in markers:
            modality = markers[token]
        if token == processor.usr_token_id:
            turn += 1
        modalities.append(modality)
        turns.append(turn)
    return modalities, turns


# ---------------------------------------------------------------------------------------------- special tokens


def test_special_tokens_added_in_design_order(processor, tiny_gpt2_dir):
    from transformers import GPT2Tokenizer

    base_size = len(GPT2Tokenizer.from_pretrained(tiny_gpt2_dir))
    tokenizer = processor.tokenizer
    ids = [tokenizer.convert_tokens_to_ids(t) for t in ["<video>", "<cap>", "<usr>", "<sys>", "<cls>", "<mask>", "<pad>"]]
    assert ids == list(range(base_size, base_size + 7))
    assert len(tokenizer) == base_size + 7
    assert tokenizer.pad_token == "<pad>" and tokenizer.mask_token == "<mask>" and tokenizer.cls_token == "<cls>"
    assert tokenizer.eos_token == tokenizer.bos_token == "<|endoftext|>"
    assert processor.video_token_id == ids[0] and processor.pad_token_id == ids[6]
    assert processor.eos_token_id == tokenizer.eos_token_id

    special = processor.special_token_ids()
    assert set(special) == {
        "video_token_id", "cap_token_id", "usr_token_id", "sys_token_id", "cls_token_id",
        "mask_token_id", "pad_token_id", "eos_token_id", "bos_token_id",
    }
    config = VGDGPT2Config(vocab_size=len(tokenizer))
    config.update(special)
    for key, value in special.items():
        assert getattr(config, key) == value
    # every special token is skipped when decoding
    assert set(ids) <= set(tokenizer.all_special_ids)


def test_tokenizer_without_special_tokens_is_rejected(tiny_gpt2_dir):
    from transformers import GPT2Tokenizer

    with pytest.raises(ValueError, match="from_gpt2_pretrained"):
        VGDProcessor(VGDVideoFeatureExtractor(D), GPT2Tokenizer.from_pretrained(tiny_gpt2_dir))


# ---------------------------------------------------------------------------------------------- sequence layout


def test_sequence_layout_matches_design(processor):
    features = video(frames=2, regions=3)
    example = processor.process_example(features, CAPTION, HISTORY, QUESTION, ANSWER)
    ids = example["input_ids"].tolist()
    p = processor
    expected = (
        [p.video_token_id] * 6
        + [p.cap_token_id] + tokens(p, CAPTION)
        + [p.usr_token_id] + tokens(p, HISTORY[0][0]) + [p.sys_token_id] + tokens(p, HISTORY[0][1])
        + [p.usr_token_id] + tokens(p, HISTORY[1][0]) + [p.sys_token_id] + tokens(p, HISTORY[1][1])
        + [p.usr_token_id] + tokens(p, QUESTION) + [p.sys_token_id]
    )
    answer_part = tokens(p, ANSWER) + [p.eos_token_id]
    assert ids == expected + answer_part

    modalities, turns = derive_modality_and_turn(ids, processor)
    assert example["modality_ids"].tolist() == modalities
    assert example["turn_ids"].tolist() == turns
    assert modalities[:6] == [MODALITY_VIS] * 6 and turns[:6] == [0] * 6
    assert modalities[6] == MODALITY_CAP and turns[6] == 0
    assert turns[-1] == len(HISTORY) + 1 and modalities[-1] == MODALITY_SYS

    labels = example["labels"].tolist()
    assert labels == [-100] * len(expected) + answer_part
    assert example["attention_mask"].tolist() == [1] * len(ids)
    for key in ("input_ids", "attention_mask", "modality_ids", "turn_ids", "labels"):
        assert example[key].dtype == np.int64 and example[key].ndim == 1
    assert example["video_features"].shape == (2, 3, D) and example["video_features"].dtype == np.float32
    np.testing.assert_array_equal(example["video_features"], features)  # frame-major, unchanged
    assert example["video_mask"].shape == (2, 3) and example["video_mask"].dtype == bool and example["video_mask"].all()


def test_whole_dialogue_labels_every_answer_and_each_prefix_is_that_turns_prompt(processor):
    """label_history_answers=True: the inputs are unchanged, every history answer is labelled and ends with an
    <|endoftext|> label on the next <usr>, and the sequence up to turn k's <sys> is the prompt of turn k with all of its
    history (what decoding that turn gives the model)."""
    p = processor
    features = video(frames=2, regions=3)
    plain = p.process_example(features, CAPTION, HISTORY, QUESTION, ANSWER)
    whole = p.process_example(features, CAPTION, HISTORY, QUESTION, ANSWER, label_history_answers=True)
    for key in ("input_ids", "attention_mask", "modality_ids", "turn_ids"):
        np.testing.assert_array_equal(whole[key], plain[key])
    ids, labels = whole["input_ids"].tolist(), whole["labels"].tolist()
    expected = [-100] * (6 + 1 + len(tokens(p, CAPTION)))
    for turn_question, turn_answer in HISTORY:
        expected += [p.eos_token_id if len(expected) > 6 + 1 + len(tokens(p, CAPTION)) else -100]
        expected += [-100] * (len(tokens(p, turn_question)) + 1) + tokens(p, turn_answer)
    expected += [p.eos_token_id] + [-100] * (len(tokens(p, QUESTION)) + 1) + tokens(p, ANSWER) + [p.eos_token_id]
    assert labels == expected
    assert labels.count(p.eos_token_id) == len(HISTORY) + 1
    # prefixes: turn k's prompt (history = the k - 1 turns before it), left-padded by the batched call
    for k in range(len(HISTORY) + 1):
        question = HISTORY[k][0] if k < len(HISTORY) else QUESTION
        prompt = p(video_features=[features], caption=[CAPTION], history=[HISTORY[:k]], question=[question], return_tensors="np")
        real = prompt["attention_mask"][0] == 1
        for key in ("input_ids", "modality_ids", "turn_ids"):
            prefix = prompt[key][0][real]
            np.testing.assert_array_equal(whole[key][: len(prefix)], prefix)
    with pytest.raises(ValueError, match="needs the answer"):
        p.process_example(features, CAPTION, HISTORY, QUESTION, label_history_answers=True)


def test_inference_example_has_no_labels_and_ends_with_sys(processor):
    example = processor(video(3), caption=CAPTION, history=[], question=QUESTION)
    assert "labels" not in example
    assert example["input_ids"][-1] == processor.sys_token_id
    assert example["turn_ids"][-1] == 1
    assert int((example["input_ids"] == processor.video_token_id).sum()) == 3


def test_history_accepts_avsd_turn_dicts_and_rejects_bad_turns(processor):
    as_pairs = processor.process_example(None, CAPTION, HISTORY, QUESTION)
    as_dicts = processor.process_example(None, CAPTION, [{"question": q, "answer": a} for q, a in HISTORY], QUESTION)
    np.testing.assert_array_equal(as_pairs["input_ids"], as_dicts["input_ids"])
    with pytest.raises(ValueError, match="history turn 0"):
        processor.process_example(None, CAPTION, [("only a question",)], QUESTION)
    with pytest.raises(ValueError, match="question"):
        processor(caption=CAPTION)


def test_no_video_means_no_placeholders(processor):
    example = processor.process_example(None, CAPTION, HISTORY, QUESTION, ANSWER)
    assert processor.video_token_id not in example["input_ids"].tolist()
    assert example["input_ids"][0] == processor.cap_token_id
    assert example["video_features"].shape == (0, 1, D)
    batch = processor(caption=[CAPTION, "a woman"], question=[QUESTION, "who ?"], return_tensors="pt")
    assert "video_features" not in batch and "video_mask" not in batch


def test_tokenisation_matches_tokenizer_and_non_ascii_round_trips(processor):
    texts = ["Der Mann öffnet das Fenster ?", "он открывает окно .", "男人打开窗户 。", "café — naïve ☕", "  spaced  "]
    ids = processor._tokenize(texts)
    for text, piece in zip(texts, ids):
        assert piece == processor.tokenizer(" " + text.strip(), add_special_tokens=False)["input_ids"]
    assert processor._tokenize(["", "   "]) == [[], []]

    example = processor.process_example(
        video(2), "une vidéo où l'homme ouvre la fenêtre", [("¿está solo?", "sí, está solo")], "什么颜色 ?", "红色 。"
    )
    answer_ids = example["input_ids"][example["labels"] != -100]
    assert processor.decode(answer_ids, skip_special_tokens=True) == "红色 。"
    text = processor.decode(example["input_ids"], skip_special_tokens=True)
    assert "une vidéo où l'homme ouvre la fenêtre" in text and "¿está solo?" in text and "什么颜色 ?" in text


def test_batch_decode_strips_leading_space(processor):
    ids = tokens(processor, "he closes it .") + [processor.eos_token_id, processor.pad_token_id]
    assert processor.batch_decode([ids], skip_special_tokens=True) == ["he closes it ."]
    assert processor.decode(ids, skip_special_tokens=False).startswith(" he closes it .")


def test_token_cache_gives_identical_ids(tiny_gpt2_dir, processor):
    cached = make_processor(tiny_gpt2_dir, token_cache_size=4)
    for _ in range(3):  # fills, hits and clears the cache
        for a, b in zip(
            [cached.process_example(None, CAPTION, HISTORY, QUESTION, ANSWER)],
            [processor.process_example(None, CAPTION, HISTORY, QUESTION, ANSWER)],
        ):
            np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    assert len(cached._token_cache.entries) <= 4
    clone = pickle.loads(pickle.dumps(cached))
    assert clone._token_cache.entries == {} and clone.token_cache_size == 4


# ---------------------------------------------------------------------------------------------- video inputs


def test_video_input_forms(processor):
    fe = processor.feature_extractor
    two_d = video(5)
    assert fe.process_video(two_d).shape == (5, 1, D)
    np.testing.assert_array_equal(fe.process_video(two_d)[:, 0], two_d)
    three_d = video(4, regions=3)
    assert fe.process_video(three_d).shape == (4, 3, D)
    as_tensor = fe.process_video(torch.from_numpy(three_d))
    np.testing.assert_array_equal(as_tensor, three_d)
    assert fe.process_video(three_d.astype(np.float64)).dtype == np.float32
    # no copy when nothing has to change
    assert np.shares_memory(fe.process_video(three_d), three_d)


def test_dict_streams_are_aligned_to_the_shortest_and_concatenated_in_order():
    fe = VGDVideoFeatureExtractor(video_feature_dim=5, max_video_frames=100, stream_order=["rgb", "flow", "audio"])
    frame_ids = lambda n, d, offset: np.repeat(np.arange(n, dtype=np.float32)[:, None], d, axis=1) + offset  # noqa: E731
    streams = {"audio": frame_ids(7, 1, 1000), "flow": frame_ids(10, 2, 100), "rgb": frame_ids(12, 2, 0)}
    out = fe.process_video(streams)
    assert out.shape == (7, 1, 5)
    np.testing.assert_array_equal(out[:, 0, 0], uniform_frame_indices(12, 7))  # rgb first
    np.testing.assert_array_equal(out[:, 0, 2], uniform_frame_indices(10, 7) + 100)  # then flow
    np.testing.assert_array_equal(out[:, 0, 4], np.arange(7) + 1000)  # then audio, untouched
    assert out[0, 0, 0] == 0 and out[-1, 0, 0] == 11  # resampled streams still span the whole video

    sorted_fe = VGDVideoFeatureExtractor(video_feature_dim=5, max_video_frames=100)  # stream_order None: sorted names
    out = sorted_fe.process_video(streams)
    np.testing.assert_array_equal(out[:, 0, 0], np.arange(7) + 1000)  # "audio" < "flow" < "rgb"
    np.testing.assert_array_equal(out[:, 0, 1], uniform_frame_indices(10, 7) + 100)


def test_region_less_stream_broadcasts_over_regions():
    fe = VGDVideoFeatureExtractor(video_feature_dim=4, stream_order=["resnext", "vggish"])
    out = fe.process_video({"resnext": np.ones((3, 5, 3), np.float32), "vggish": np.arange(3, dtype=np.float32)[:, None]})
    assert out.shape == (3, 5, 4)
    np.testing.assert_array_equal(out[:, :, 3], np.repeat(np.arange(3.0)[:, None], 5, axis=1))
    with pytest.raises(ValueError, match="regions"):
        fe.process_video({"resnext": np.ones((3, 5, 3), np.float32), "vggish": np.ones((3, 2, 1), np.float32)})


def test_pooling_shapes_and_values(tiny_gpt2_dir):
    features = video(6, regions=4)
    spatial = make_processor(tiny_gpt2_dir, video_pooling="spatial")
    out = spatial.feature_extractor.process_video(features)
    assert out.shape == (1, 4, D)
    np.testing.assert_allclose(out[0], features.mean(axis=0), rtol=1e-6)
    example = spatial.process_example(features, CAPTION, [], QUESTION)
    assert int((example["input_ids"] == spatial.video_token_id).sum()) == 4

    temporal = make_processor(tiny_gpt2_dir, video_pooling="temporal")
    out = temporal.feature_extractor.process_video(features)
    assert out.shape == (6, 1, D)
    np.testing.assert_allclose(out[:, 0], features.mean(axis=1), rtol=1e-6)
    example = temporal.process_example(features, CAPTION, [], QUESTION)
    assert int((example["input_ids"] == temporal.video_token_id).sum()) == 6

    with pytest.raises(ValueError, match="video_pooling"):
        VGDVideoFeatureExtractor(video_pooling="both")


def test_spatial_and_temporal_pooling_gives_the_region_tokens_then_the_clip_tokens(tiny_gpt2_dir):
    """`"spatial_and_temporal"`: `[P + F, 1, D]`, each region averaged over the frames, then each frame over the
    regions; the P region rows come first whatever F is, F is capped at max_video_frames - P, and features with
    another P are refused naming the example and the expected P."""
    features = video(6, regions=4)
    both = make_processor(tiny_gpt2_dir, video_pooling="spatial_and_temporal", num_video_regions=4, max_video_frames=16)
    out = both.feature_extractor.process_video(features)
    assert out.shape == (4 + 6, 1, D)
    np.testing.assert_allclose(out[:4, 0], features.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[4:, 0], features.mean(axis=1), rtol=1e-5, atol=1e-6)
    assert both.feature_extractor.pooled_video_shape(6, 4) == (10, 1)
    example = both.process_example(features, CAPTION, [], QUESTION)
    assert int((example["input_ids"] == both.video_token_id).sum()) == 10
    capped = make_processor(tiny_gpt2_dir, video_pooling="spatial_and_temporal", num_video_regions=4, max_video_frames=8)
    out = capped.feature_extractor.process_video(features)
    assert out.shape == (8, 1, D)  # 4 region tokens + 4 of the 6 frames, spread over the video
    np.testing.assert_allclose(out[4:, 0], features[[0, 2, 3, 5]].mean(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[:4, 0], features[[0, 2, 3, 5]].mean(axis=0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"example 1: video features have 5 regions per frame.*num_video_regions=4"):
        both([video(6, regions=4), video(6, regions=5)], caption=[CAPTION] * 2, question=[QUESTION] * 2)
    with pytest.raises(ValueError, match="needs num_video_regions"):
        VGDVideoFeatureExtractor(video_feature_dim=D, video_pooling="spatial_and_temporal")
    with pytest.raises(ValueError, match="must exceed num_video_regions"):
        VGDVideoFeatureExtractor(video_feature_dim=D, video_pooling="spatial_and_temporal", num_video_regions=8, max_video_frames=8)
    with pytest.raises(ValueError, match="num_video_regions is for video_pooling='spatial_and_temporal' only"):
        VGDVideoFeatureExtractor(video_feature_dim=D, video_pooling="temporal", num_video_regions=4)


def test_frame_cap_samples_uniformly_over_the_whole_video():
    fe = VGDVideoFeatureExtractor(video_feature_dim=2, max_video_frames=10)
    features = np.repeat(np.arange(100, dtype=np.float32)[:, None], 2, axis=1)  # value = frame index
    out = fe.process_video(features)
    chosen = out[:, 0, 0].astype(int)
    assert out.shape == (10, 1, 2)
    assert chosen[0] == 0 and chosen[-1] == 99  # spans the video, not a cut of its start
    assert (np.diff(chosen) > 0).all() and np.ptp(np.diff(chosen)) <= 1  # evenly spaced
    np.testing.assert_array_equal(chosen, uniform_frame_indices(100, 10))
    np.testing.assert_array_equal(uniform_frame_indices(5, 10), np.arange(5))
    # the cap also applies after stream alignment
    streams = {"a": features[:, :1], "b": features[:50, :1]}
    assert fe.process_video(streams).shape == (10, 1, 2)


def test_video_errors_name_the_problem(processor):
    fe = processor.feature_extractor
    with pytest.raises(ValueError, match=r"example 3: video features have dim 5 .*video_feature_dim is 6"):
        fe.process_video(video(4, dim=5), index=3)
    avsd_shaped = {"i3d_rgb": np.zeros((2, 2048)), "i3d_flow": np.zeros((2, 2048)), "vggish": np.zeros((2, 128))}
    with pytest.raises(ValueError, match=r"example 1: video features have dim 4224 \(i3d_flow: 2048, i3d_rgb: 2048, vggish: 128\)"):
        fe.process_video(avsd_shaped, index=1)
    bad = video(4)
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="example 0: video features contain NaN"):
        fe.process_video(bad, index=0)
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match="inf"):
        fe.process_video(bad)
    with pytest.raises(ValueError, match="empty"):
        fe.process_video(np.zeros((0, D), np.float32))
    with pytest.raises(ValueError, match=r"\[frames, dim\] or \[frames, regions, dim\]"):
        fe.process_video(np.zeros((2, 2, 2, D), np.float32))
    with pytest.raises(ValueError, match="numeric"):
        fe.process_video(np.array([["a"] * D]))

    avsd = VGDVideoFeatureExtractor(video_feature_dim=4224, stream_order=list(AVSD_STREAM_ORDER))
    with pytest.raises(ValueError, match=r"example 2: missing stream\(s\) \['vggish'\].*\['i3d_rgb', 'i3d_flow', 'vggish'\]"):
        avsd.process_video({"i3d_rgb": np.zeros((2, 2048)), "i3d_flow": np.zeros((2, 2048))}, index=2)
    with pytest.raises(ValueError, match=r"unexpected stream\(s\) \['resnext'\]"):
        avsd.process_video({**{s: np.zeros((2, 1)) for s in AVSD_STREAM_ORDER}, "resnext": np.zeros((2, 1))})
    nan_stream = {"i3d_rgb": np.zeros((2, 2048)), "i3d_flow": np.full((2, 2048), np.nan), "vggish": np.zeros((2, 128))}
    with pytest.raises(ValueError, match="stream 'i3d_flow': video features contain NaN"):
        avsd.process_video(nan_stream)
    # through the processor, the batch index is named
    with pytest.raises(ValueError, match="example 1"):
        processor(video_features=[video(2), video(2, dim=7)], caption=[CAPTION] * 2, question=[QUESTION] * 2)


# ---------------------------------------------------------------------------------------------- truncation


def text_length(example, processor):
    return int((example["input_ids"] != processor.video_token_id).sum())


def test_truncation_drops_oldest_history_then_caption_never_the_question(tiny_gpt2_dir):
    history = [(f"is the cup red {i} ?", "yes the cup is red .") for i in range(4)]
    full = make_processor(tiny_gpt2_dir, max_text_length=1024).process_example(video(2), CAPTION, history, QUESTION)
    full_length = text_length(full, make_processor(tiny_gpt2_dir))
    turn_length = 2 + len(tokens(full_processor := make_processor(tiny_gpt2_dir), history[0][0])) + len(
        tokens(full_processor, history[0][1])
    )

    # room for two history turns less: the two oldest are dropped, the caption is whole
    p = make_processor(tiny_gpt2_dir, max_text_length=full_length - turn_length - 1)
    example = p.process_example(video(2), CAPTION, history, QUESTION)
    assert text_length(example, p) <= p.max_text_length
    expected = p.process_example(video(2), CAPTION, history[2:], QUESTION)
    np.testing.assert_array_equal(example["input_ids"], expected["input_ids"])
    np.testing.assert_array_equal(example["turn_ids"], expected["turn_ids"])  # turns renumbered from 1
    assert p.truncation_stats.history_turns_dropped == 2
    assert p.truncation_stats.caption_tokens_dropped == 0

    # no room for any history and only 3 caption tokens: history gone, caption cut at its end, question whole
    question_block = 1 + 1 + len(tokens(p, QUESTION)) + 1
    p = make_processor(tiny_gpt2_dir, max_text_length=question_block + 3)
    example = p.process_example(video(2), CAPTION, history, QUESTION)
    ids = example["input_ids"].tolist()
    start = ids.index(p.cap_token_id)
    assert ids[start + 1 : start + 4] == tokens(p, CAPTION)[:3]
    assert ids[start + 4 :] == [p.usr_token_id] + tokens(p, QUESTION) + [p.sys_token_id]
    assert text_length(example, p) == p.max_text_length
    stats = p.truncation_stats.as_dict()
    assert stats["history_turns_dropped"] == 4
    assert stats["caption_tokens_dropped"] == len(tokens(p, CAPTION)) - 3
    assert stats["examples"] == 1 and stats["examples_truncated"] == 1
    p.truncation_stats.reset()
    assert all(value == 0 for value in p.truncation_stats.as_dict().values())

    # a question that does not fit is an error naming the lengths
    p = make_processor(tiny_gpt2_dir, max_text_length=question_block - 1)
    with pytest.raises(ValueError, match=rf"question has {len(tokens(p, QUESTION))} tokens.*max_text_length={question_block - 1}"):
        p.process_example(video(2), CAPTION, history, QUESTION)


def test_training_answer_keeps_a_slot_for_cls_and_is_cut_at_its_end(tiny_gpt2_dir):
    p = make_processor(tiny_gpt2_dir)
    question_block = 1 + 1 + len(tokens(p, QUESTION)) + 1
    answer = tokens(p, ANSWER)
    # exactly enough for <cap>, question block, answer, eos and the collator's <cls>
    p = make_processor(tiny_gpt2_dir, max_text_length=question_block + len(answer) + 2)
    example = p.process_example(None, CAPTION, HISTORY, QUESTION, ANSWER)
    assert text_length(example, p) == p.max_text_length - 1
    assert example["labels"][-1] == p.eos_token_id
    assert p.truncation_stats.answers_truncated == 0

    p = make_processor(tiny_gpt2_dir, max_text_length=question_block + 3)
    example = p.process_example(None, CAPTION, HISTORY, QUESTION, ANSWER)
    kept = example["labels"][example["labels"] != -100].tolist()
    assert kept == answer[:2]  # cut at the end, no <|endoftext|> for an unfinished answer
    assert p.truncation_stats.answers_truncated == 1
    assert p.truncation_stats.answer_tokens_dropped == len(answer) - 2

    p = make_processor(tiny_gpt2_dir, max_text_length=question_block + 1)
    with pytest.raises(ValueError, match="no room for the answer"):
        p.process_example(None, CAPTION, HISTORY, QUESTION, ANSWER)


def test_turn_limits(tiny_gpt2_dir):
    history = [(f"question {i} ?", f"answer {i} .") for i in range(6)]
    p = make_processor(tiny_gpt2_dir, max_history_turns=2)
    example = p.process_example(None, CAPTION, history, QUESTION)
    np.testing.assert_array_equal(example["input_ids"], p.process_example(None, CAPTION, history[-2:], QUESTION)["input_ids"])
    assert p.truncation_stats.history_turns_dropped == 4

    p = make_processor(tiny_gpt2_dir, max_turns=4)  # turn ids 0..3: two history turns + the question
    example = p.process_example(None, CAPTION, history, QUESTION)
    assert example["turn_ids"].max() == 3
    assert int((example["input_ids"] == p.usr_token_id).sum()) == 3
    np.testing.assert_array_equal(example["input_ids"], p.process_example(None, CAPTION, history[-2:], QUESTION)["input_ids"])


# ---------------------------------------------------------------------------------------------- batching


def test_batched_left_padding_matches_single_examples(processor):
    videos = [video(3, regions=2, seed=1), video(5, seed=2), None]
    captions = [CAPTION, "a woman sits on a couch reading a book .", None]
    histories = [HISTORY, [], HISTORY[:1]]
    questions = [QUESTION, "how many people are there ?", "is he alone ?"]
    answers = [ANSWER, "there are two people .", "no ."]
    batch = processor(
        video_features=videos, caption=captions, history=histories, question=questions, answer=answers, return_tensors="pt"
    )
    length = batch["input_ids"].shape[1]
    assert batch["video_features"].shape == (3, 5, 2, D) and batch["video_features"].dtype == torch.float32
    assert batch["video_mask"].shape == (3, 5, 2) and batch["video_mask"].dtype == torch.bool
    for key in ("input_ids", "attention_mask", "modality_ids", "turn_ids", "labels"):
        assert batch[key].shape == (3, length) and batch[key].dtype == torch.int64

    for i in range(3):
        single = processor(
            video_features=videos[i], caption=captions[i], history=histories[i], question=questions[i], answer=answers[i]
        )
        n = len(single["input_ids"])
        pad = length - n
        assert batch["input_ids"][i, :pad].tolist() == [processor.pad_token_id] * pad  # left padding
        assert batch["attention_mask"][i, :pad].sum() == 0 and batch["attention_mask"][i, pad:].all()
        assert batch["labels"][i, :pad].tolist() == [-100] * pad
        assert batch["modality_ids"][i, :pad].sum() == 0 and batch["turn_ids"][i, :pad].sum() == 0
        for key in ("input_ids", "modality_ids", "turn_ids", "labels"):
            assert batch[key][i, pad:].tolist() == single[key].tolist()
        f, p = single["video_features"].shape[:2]
        np.testing.assert_array_equal(batch["video_features"][i, :f, :p].numpy(), single["video_features"])
        rest = batch["video_features"][i].clone()
        rest[:f, :p] = 0
        assert (rest == 0).all()  # zeros where padded
        assert batch["video_mask"][i].sum() == f * p and batch["video_mask"][i, :f, :p].all()
        assert int((batch["input_ids"][i] == processor.video_token_id).sum()) == int(batch["video_mask"][i].sum())

    right = processor(
        video_features=videos, caption=captions, history=histories, question=questions, return_tensors="np", padding_side="right"
    )
    assert isinstance(right["input_ids"], np.ndarray) and right["input_ids"][2, -1] == processor.pad_token_id


def test_unbatched_outputs_for_the_collator(processor):
    out = processor(
        video_features=[video(2), video(3)], caption=[CAPTION] * 2, history=[HISTORY, []], question=[QUESTION] * 2, answer=[ANSWER] * 2
    )
    assert isinstance(out["input_ids"], list) and len(out["input_ids"]) == 2
    assert out["video_features"][1].shape == (3, 1, D)
    single = processor(video(2), caption=CAPTION, history=HISTORY, question=QUESTION, answer=ANSWER)
    assert single["input_ids"].ndim == 1 and single["video_mask"].shape == (2, 1)
    with pytest.raises(ValueError, match="lists for every argument"):
        processor(video_features=[video(2)], caption=CAPTION, question=QUESTION)
    with pytest.raises(ValueError, match="caption has 1 entries but question has 2"):
        processor(caption=[CAPTION], question=[QUESTION, QUESTION])


def test_pad_appends_empty_clips_to_the_shorter_video_file(processor):
    """Examples made from video files (the pipeline batches them): `[clips, T, 3, H, W]` each, padded with zero
    clips that `video_clip_mask` marks absent; mixing them with feature examples is refused by name."""
    rng = np.random.default_rng(0)
    examples = []
    for num_clips in (2, 3):
        example = {key: np.asarray(value) for key, value in processor(caption=CAPTION, question=QUESTION).items()}
        example["pixel_values_videos"] = rng.standard_normal((num_clips, 4, 3, 8, 8)).astype(np.float32)
        example["video_clip_mask"] = np.ones(num_clips, bool)
        examples.append(example)
    batch = processor.pad(examples, return_tensors="pt")
    assert batch["pixel_values_videos"].shape == (2, 3, 4, 3, 8, 8)
    assert batch["video_clip_mask"].tolist() == [[True, True, False], [True, True, True]]
    np.testing.assert_array_equal(batch["pixel_values_videos"][0, :2].numpy(), examples[0]["pixel_values_videos"])
    assert (batch["pixel_values_videos"][0, 2] == 0).all() and "video_features" not in batch
    mixed = [examples[0], {key: value for key, value in examples[1].items() if key not in ("pixel_values_videos", "video_clip_mask")}]
    with pytest.raises(ValueError, match="example 0 has pixel_values_videos .* example 1 has none"):
        processor.pad(mixed)
    other_size = dict(examples[1], pixel_values_videos=np.zeros((3, 4, 3, 16, 16), np.float32))
    with pytest.raises(ValueError, match=r"example 1: clips of shape \(4, 3, 16, 16\)"):
        processor.pad([examples[0], other_size])


def test_feature_extractor_call_pads_a_batch(processor):
    out = processor.feature_extractor([video(2, regions=3), video(4)], return_tensors="pt")
    assert out["video_features"].shape == (2, 4, 3, D)
    assert out["video_mask"].tolist()[1] == [[True, False, False]] * 4


# ---------------------------------------------------------------------------------------------- save / load


def test_save_and_load_round_trip(tmp_path, tiny_gpt2_dir):
    p = make_processor(
        tiny_gpt2_dir, max_history_turns=3, max_turns=8, max_text_length=100, video_pooling="temporal", stream_order=["b", "a"]
    )
    folder = str(tmp_path / "processor")
    p.save_pretrained(folder)
    files = set(os.listdir(folder))
    assert {"processor_config.json", "processing_vgd.py", "configuration_vgd_gpt2.py", "tokenizer_config.json"} <= files

    loaded = VGDProcessor.from_pretrained(folder)
    assert loaded.special_token_ids() == p.special_token_ids()
    assert (loaded.max_history_turns, loaded.max_turns, loaded.max_text_length) == (3, 8, 100)
    fe = loaded.feature_extractor
    assert isinstance(fe, VGDVideoFeatureExtractor)
    assert (fe.video_feature_dim, fe.max_video_frames, fe.video_pooling, fe.stream_order) == (D, 8, "temporal", ["b", "a"])
    streams = {"a": video(3, dim=2), "b": video(3, dim=4)}
    expected = p.process_example(streams, CAPTION, HISTORY, QUESTION, ANSWER)
    got = loaded.process_example(streams, CAPTION, HISTORY, QUESTION, ANSWER)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])

    # what a Hub user gets: AutoProcessor with trust_remote_code, in a process without this repository on sys.path
    script = (
        "import json, numpy as np\n"
        "from transformers import AutoProcessor\n"
        f"p = AutoProcessor.from_pretrained({folder!r}, trust_remote_code=True)\n"
        "out = p.process_example({'a': np.ones((3, 2), np.float32), 'b': np.ones((3, 4), np.float32)}, 'a man', [], 'is he ?')\n"
        "names = [type(p).__name__, type(p.feature_extractor).__name__]\n"
        "print(json.dumps([*names, p.special_token_ids(), out['input_ids'].tolist()]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    name, fe_name, special, ids = json.loads(result.stdout.strip().splitlines()[-1])
    assert (name, fe_name) == ("VGDProcessor", "VGDVideoFeatureExtractor")
    assert special == p.special_token_ids()
    ones = {"a": np.ones((3, 2), np.float32), "b": np.ones((3, 4), np.float32)}
    assert ids == p.process_example(ones, "a man", [], "is he ?")["input_ids"].tolist()


def test_feature_extractor_save_and_load(tmp_path):
    fe = VGDVideoFeatureExtractor(video_feature_dim=4224, max_video_frames=32, stream_order=list(AVSD_STREAM_ORDER))
    fe.save_pretrained(str(tmp_path))
    loaded = VGDVideoFeatureExtractor.from_pretrained(str(tmp_path))
    assert loaded.to_dict()["stream_order"] == list(AVSD_STREAM_ORDER) and loaded.max_video_frames == 32


# ---------------------------------------------------------------------------------------------- collator


def training_examples(processor, count=4, regions=None):
    examples = []
    for i in range(count):
        history = [(f"what color is the cup {j} ?", "the cup is red .") for j in range(i)]
        examples.append(
            processor.process_example(video(2 + i, regions=regions, seed=i), CAPTION, history, QUESTION, ANSWER)
        )
    return examples


def test_collator_pads_right_and_appends_cls(processor):
    examples = training_examples(processor)
    collator = DataCollatorForVGD(processor, mlm_probability=0, mvm_probability=0, mvt_probability=0.0001, seed=0)
    batch = collator(examples)
    text_keys = {"input_ids", "attention_mask", "modality_ids", "turn_ids", "labels"}
    assert set(batch) == text_keys | {"video_features", "video_mask", "mvt_labels"}
    assert batch["mvt_labels"].dtype == torch.float32 and batch["mvt_labels"].tolist() == [1.0] * 4
    length = batch["input_ids"].shape[1]
    for i, example in enumerate(examples):
        n = len(example["input_ids"])
        assert batch["input_ids"][i, :n].tolist() == example["input_ids"].tolist()
        assert batch["input_ids"][i, n] == processor.cls_token_id
        assert batch["modality_ids"][i, n] == MODALITY_SYS and batch["turn_ids"][i, n] == example["turn_ids"][-1]
        assert batch["attention_mask"][i, : n + 1].all() and batch["labels"][i, n] == -100
        assert batch["input_ids"][i, n + 1 :].tolist() == [processor.pad_token_id] * (length - n - 1)  # right padding
        assert batch["attention_mask"][i, n + 1 :].sum() == 0 and (batch["labels"][i, n + 1 :] == -100).all()
        assert batch["labels"][i, :n].tolist() == example["labels"].tolist()
        f = example["video_features"].shape[0]
        np.testing.assert_array_equal(batch["video_features"][i, :f].numpy(), example["video_features"])

    padded = DataCollatorForVGD(processor, mlm_probability=0, mvm_probability=0, mvt_probability=0, pad_to_multiple_of=8)(examples)
    assert padded["input_ids"].shape[1] % 8 == 0
    assert processor.cls_token_id not in padded["input_ids"].tolist()[0]


def test_collator_mlm_masks_only_context_tokens_and_is_deterministic(processor):
    examples = training_examples(processor)
    collator = DataCollatorForVGD(processor, mlm_probability=0.5, mvm_probability=0, mvt_probability=0, seed=3)
    batch = collator(examples)
    plain = DataCollatorForVGD(processor, mlm_probability=0, mvm_probability=0, mvt_probability=0)(examples)
    masked = batch["mlm_labels"] != -100
    assert masked.any()
    assert (batch["input_ids"][masked] == processor.mask_token_id).all()
    assert torch.equal(batch["mlm_labels"][masked], plain["input_ids"][masked])
    assert torch.equal(batch["input_ids"][~masked], plain["input_ids"][~masked])
    # only caption / history / question words: no markers, video, answer, eos, pad
    special = torch.tensor(
        [processor.video_token_id, processor.cap_token_id, processor.usr_token_id, processor.sys_token_id,
         processor.eos_token_id, processor.pad_token_id, processor.cls_token_id]
    )
    assert not torch.isin(plain["input_ids"][masked], special).any()
    assert (plain["labels"][masked] == -100).all()
    assert (plain["modality_ids"][masked] != MODALITY_VIS).all()
    context = (plain["labels"] == -100) & (plain["attention_mask"] == 1) & ~torch.isin(plain["input_ids"], special)
    assert 0.3 < masked.sum().item() / context.sum().item() < 0.7

    again = DataCollatorForVGD(processor, mlm_probability=0.5, mvm_probability=0, mvt_probability=0, seed=3)(examples)
    assert torch.equal(again["mlm_labels"], batch["mlm_labels"]) and torch.equal(again["input_ids"], batch["input_ids"])
    other = DataCollatorForVGD(processor, mlm_probability=0.5, mvm_probability=0, mvt_probability=0, seed=4)(examples)
    assert not torch.equal(other["mlm_labels"], batch["mlm_labels"])
    # the inputs are not modified in place
    assert processor.mask_token_id not in examples[0]["input_ids"].tolist()


def test_collator_masks_at_least_one_item_per_example(processor):
    examples = training_examples(processor)
    batch = DataCollatorForVGD(processor, mlm_probability=1e-9, mvm_probability=1e-9, mvt_probability=0)(examples)
    assert ((batch["mlm_labels"] != -100).sum(dim=1) == 1).all()
    assert (batch["mvm_mask"].sum(dim=(1, 2)) == 1).all()


def test_collator_mvm_mask_only_on_real_regions(processor):
    examples = training_examples(processor, count=2, regions=3) + [
        processor.process_example(video(5, seed=9), CAPTION, [], QUESTION, ANSWER)
    ]
    batch = DataCollatorForVGD(processor, mlm_probability=0, mvm_probability=1.0, mvt_probability=0)(examples)
    assert batch["video_features"].shape == (3, 5, 3, D)
    assert torch.equal(batch["mvm_mask"], batch["video_mask"])
    assert batch["mvm_mask"].dtype == torch.bool
    half = DataCollatorForVGD(processor, mlm_probability=0, mvm_probability=0.5, mvt_probability=0, seed=1)(examples)
    assert not (half["mvm_mask"] & ~half["video_mask"]).any()
    assert torch.equal(half["video_features"], batch["video_features"])  # features are never changed by the collator


def test_collator_mvt_negatives_swap_video_and_drop_other_labels(processor):
    examples = training_examples(processor, count=3)
    collator = DataCollatorForVGD(processor, mlm_probability=0.5, mvm_probability=0.5, mvt_probability=1.0, seed=0)
    batch = collator(examples)
    labels = batch["mvt_labels"]
    assert labels.dtype == torch.float32 and labels.shape == (3,)
    assert labels.sum() == 1  # everything negative except the one positive that every batch keeps
    videos = [torch.from_numpy(e["video_features"]) for e in examples]
    for i in range(3):
        ids = batch["input_ids"][i][batch["attention_mask"][i] == 1]
        num_video = int((ids == processor.video_token_id).sum())
        assert num_video == int(batch["video_mask"][i].sum())
        f = num_video  # P = 1
        own = batch["video_features"][i, :f]
        text = ids[num_video:-1]  # without the video and <cls>
        original = torch.from_numpy(examples[i]["input_ids"][len(videos[i]) :])
        if labels[i] == 1:
            assert own.shape == videos[i].shape and torch.equal(own, videos[i])
            continue
        # another example's video, masked like a positive's: the masked regions are zeroed, the others kept
        zeroed = own.abs().sum(-1) == 0
        assert zeroed.any()
        partner = [
            j for j in range(3)
            if j != i and own.shape == videos[j].shape and torch.equal(own[~zeroed], videos[j][~zeroed])
        ]
        assert len(partner) == 1
        # own text, masked like a positive's: <mask> only where a context token was
        masked = text == processor.mask_token_id
        assert masked.any() and torch.equal(text[~masked], original[~masked])
        assert (batch["labels"][i] == -100).all() and (batch["mlm_labels"][i] == -100).all()
        assert not batch["mvm_mask"][i].any()
        assert (batch["modality_ids"][i][:num_video] == MODALITY_VIS).all() and (batch["turn_ids"][i][:num_video] == 0).all()
        assert ids[-1] == processor.cls_token_id

    # one example, or examples sharing one video: no negative possible
    assert collator(examples[:1])["mvt_labels"].tolist() == [1.0]
    same = [processor.process_example(video(3), CAPTION, [], q, ANSWER) for q in (QUESTION, "is he alone ?")]
    assert collator(same)["mvt_labels"].tolist() == [1.0, 1.0]


def test_collator_objectives_switch_off(processor):
    examples = training_examples(processor, count=2)
    base = {"input_ids", "attention_mask", "modality_ids", "turn_ids", "labels", "video_features", "video_mask"}
    for mlm, mvm, mvt, extra in (
        (0.15, 0.15, 0.15, {"mlm_labels", "mvm_mask", "mvt_labels"}),
        (0, 0.15, 0.15, {"mvm_mask", "mvt_labels"}),
        (0.15, 0, 0.15, {"mlm_labels", "mvt_labels"}),
        (0.15, 0.15, 0, {"mlm_labels", "mvm_mask"}),
        (0, 0, 0, set()),
    ):
        batch = DataCollatorForVGD(processor, mlm_probability=mlm, mvm_probability=mvm, mvt_probability=mvt)(examples)
        assert set(batch) == base | extra
        assert (processor.cls_token_id in batch["input_ids"].tolist()[0]) == (mvt > 0)
    with pytest.raises(ValueError, match="mlm_probability"):
        DataCollatorForVGD(processor, mlm_probability=1.5)


def test_collator_validates_feature_dims_and_pads_regions(processor):
    examples = training_examples(processor, count=2)
    other = dict(examples[1])
    other["video_features"] = np.zeros((3, 1, D + 2), np.float32)
    with pytest.raises(ValueError, match=rf"example 0 has {D}, example 1 has {D + 2}"):
        DataCollatorForVGD(processor)([examples[0], other])
    with pytest.raises(ValueError, match="lacks"):
        DataCollatorForVGD(processor)([{"input_ids": [1, 2]}])
    mixed = [examples[0], processor.process_example(video(2, regions=4), CAPTION, [], QUESTION, ANSWER)]
    batch = DataCollatorForVGD(processor, mvt_probability=0)(mixed)
    assert batch["video_features"].shape == (2, 2, 4, D) and batch["video_mask"][0].sum() == 2


def test_collator_is_picklable_and_seeds_per_worker(processor, monkeypatch):
    examples = training_examples(processor)
    collator = DataCollatorForVGD(processor, mlm_probability=0.5, mvm_probability=0.5, mvt_probability=0.5, seed=7)
    clone = pickle.loads(pickle.dumps(collator))
    first = collator(examples)
    assert all(torch.equal(first[k], v) for k, v in clone(examples).items())
    second = collator(examples)  # the sequence goes on
    assert any(not torch.equal(first[k], second[k]) for k in ("mlm_labels", "mvm_mask", "mvt_labels"))

    class WorkerInfo:
        def __init__(self, worker_id, seed):
            self.id, self.seed = worker_id, seed

    outputs = {}
    for worker_id in (0, 1):
        info = WorkerInfo(worker_id, 1234 + worker_id)
        monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda info=info: info)
        worker_copy = pickle.loads(pickle.dumps(collator))  # what a DataLoader worker receives
        outputs[worker_id] = worker_copy(examples)
        assert outputs[worker_id]["video_features"].is_shared()  # written straight into shared memory
        repeat = pickle.loads(pickle.dumps(collator))(examples)
        assert all(torch.equal(outputs[worker_id][k], v) for k, v in repeat.items())  # deterministic per worker
    assert not torch.equal(outputs[0]["mlm_labels"], outputs[1]["mlm_labels"])


def test_collator_accepts_tensor_examples_from_datasets(processor):
    examples = training_examples(processor, count=2)
    as_tensors = [{k: torch.as_tensor(v) for k, v in e.items()} for e in examples]
    as_lists = [{k: (v.tolist() if k != "video_features" else v) for k, v in e.items()} for e in examples]
    collator = DataCollatorForVGD(processor, seed=5)
    reference = collator(examples)
    for variant in (as_tensors, as_lists):
        collator.reseed(5)
        out = collator(variant)
        assert all(torch.equal(reference[k], v) for k, v in out.items())


def test_collator_in_dataloader_workers(processor):
    examples = training_examples(processor)
    collator = DataCollatorForVGD(processor, seed=0)
    loader = torch.utils.data.DataLoader(examples, batch_size=2, collate_fn=collator, num_workers=2)
    batches = list(loader)
    assert len(batches) == 2
    for start, batch in zip((0, 2), batches):
        # padded to the longest video of the batch (a negative may carry the other example's shorter video)
        assert batch["video_features"].shape[0] == 2
        assert batch["video_features"].shape[1] == int(batch["video_mask"].any(-1).sum(-1).max())
        for i in range(2):
            example = examples[start + i]
            if batch["mvt_labels"][i] == 1:
                f = example["video_features"].shape[0]
                np.testing.assert_array_equal(batch["video_features"][i, :f].numpy(), example["video_features"])
        assert (batch["input_ids"] == processor.cls_token_id).sum() == 2
    # workers are seeded from (seed, worker_info.seed): a rerun under the same torch seed repeats the masks
    torch.manual_seed(0)
    first = [b["mlm_labels"] for b in torch.utils.data.DataLoader(examples, batch_size=2, collate_fn=collator, num_workers=2)]
    torch.manual_seed(0)
    again = [b["mlm_labels"] for b in torch.utils.data.DataLoader(examples, batch_size=2, collate_fn=collator, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_loading_the_class_from_a_model_folder_asks_for_no_remote_code(tiny_gpt2_dir, processor, tmp_path, monkeypatch):
    """`VGDProcessor.from_pretrained(folder)` with the class imported: the folder's config.json maps the auto
    classes to custom code, which must not make transformers ask for trust_remote_code (an interactive prompt)."""
    import transformers.models.auto.configuration_auto as configuration_auto
    import transformers.models.auto.feature_extraction_auto as feature_extraction_auto
    import transformers.models.auto.tokenization_auto as tokenization_auto

    from modeling_vgd_gpt2 import VGDGPT2ForDialogue

    model = VGDGPT2ForDialogue.from_gpt2_pretrained(tiny_gpt2_dir, processor=processor)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert "auto_map" in json.loads((tmp_path / "config.json").read_text())

    def asked(*args, **kwargs):
        raise AssertionError("transformers was asked to resolve trust_remote_code")

    for module in (configuration_auto, feature_extraction_auto, tokenization_auto):
        monkeypatch.setattr(module, "resolve_trust_remote_code", asked)
    loaded = VGDProcessor.from_pretrained(tmp_path)
    assert loaded.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    assert loaded.feature_extractor.to_dict() == processor.feature_extractor.to_dict()
    assert loaded.cls_token_id == processor.cls_token_id and loaded.tokenizer.pad_token == processor.tokenizer.pad_token
