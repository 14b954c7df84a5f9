"""Talking to a model: the `video-grounded-dialogue` pipeline, the chat template, the video relevance map, the
terminal chat and the plotting helper, on a tiny random model saved with its processor."""

import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from chat_fixtures import FEATURE_DIM, MAX_NEW_TOKENS, build_tiny_chat_model

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_chat_model(str(tmp_path_factory.mktemp("chat_model")))


@pytest.fixture(scope="module")
def chat(model_dir):
    from transformers import pipeline

    return pipeline("video-grounded-dialogue", model=model_dir, trust_remote_code=True, device="cpu")


@pytest.fixture(scope="module")
def videos():
    rng = np.random.default_rng(0)
    return [rng.standard_normal((frames, 4, FEATURE_DIM)).astype(np.float32) for frames in (4, 3, 2)]


EXAMPLES = [
    {"caption": "a man in a kitchen .", "history": [], "question": "what does he do first ?"},
    {"caption": "a woman sits .", "history": [("where is she ?", "she is in the garage .")], "question": "what is on the table ?"},
    {"caption": None, "history": [("what does he do first ?", "first he walks ."), ("what is on the table ?", "a cup .")],
     "question": "what does he do next ?"},
]


def generate_directly(chat, video, example, **generate_kwargs):
    """The answer the way API.md's inference snippet gets it: processor + generate + batch_decode."""
    inputs = chat.processor(video_features=video, caption=example["caption"], history=example["history"],
                            question=example["question"], return_tensors="pt")
    out = chat.model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, **generate_kwargs)
    return chat.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]


def messages_of(video, example):
    messages = [] if example["caption"] is None else [{"role": "system", "content": [{"type": "text", "text": example["caption"]}]}]
    for turn, (question, answer) in enumerate(example["history"]):
        content = [{"type": "text", "text": question}]
        if turn == 0:
            content.insert(0, {"type": "video", "video": video})
        messages.append({"role": "user", "content": content})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    last = [{"type": "text", "text": example["question"]}]
    if not example["history"]:
        last.insert(0, {"type": "video", "video": video})
    messages.append({"role": "user", "content": last})
    return messages


# ------------------------------------------------------------------------------------------------ saving


def test_saved_folder_carries_the_pipeline_code_and_task(model_dir):
    for name in ("pipeline_vgd.py", "chat_template_vgd.py", "modeling_vgd_gpt2.py", "processing_vgd.py"):
        assert os.path.isfile(os.path.join(model_dir, name)), name
    config = json.load(open(os.path.join(model_dir, "config.json")))
    assert config["custom_pipelines"]["video-grounded-dialogue"]["impl"] == "pipeline_vgd.VideoGroundedDialoguePipeline"


def test_pipeline_works_in_a_fresh_process_without_the_repository(chat, model_dir, videos, tmp_path):
    np.save(tmp_path / "video.npy", videos[0])
    expected = [generate_directly(chat, videos[0], example) for example in EXAMPLES]
    script = textwrap.dedent(
        f"""
        import json, sys
        assert {REPO_ROOT!r} not in sys.path
        from transformers import pipeline
        chat = pipeline("video-grounded-dialogue", model={model_dir!r}, trust_remote_code=True, device="cpu")
        assert type(chat).__module__.startswith("transformers_modules."), type(chat).__module__
        answers = [chat(video={str(tmp_path / "video.npy")!r}, caption=e["caption"], history=e["history"], question=e["question"],
                        max_new_tokens={MAX_NEW_TOKENS})["answer"] for e in json.loads(sys.argv[1])]
        relevance = chat(video={str(tmp_path / "video.npy")!r}, question="what ?", return_video_relevance=True,
                         max_new_tokens={MAX_NEW_TOKENS})["video_relevance"]
        print(json.dumps({{"answers": answers, "relevance_shape": list(relevance.shape), "relevance_sum": float(relevance.sum())}}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    result = subprocess.run([sys.executable, "-c", script, json.dumps(EXAMPLES)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output["answers"] == expected
    assert output["relevance_shape"] == [4, 4]
    assert output["relevance_sum"] == pytest.approx(1.0, abs=1e-5)


# ------------------------------------------------------------------------------------------------ pipeline


def test_pipeline_answer_equals_processor_and_generate(chat, videos):
    for video, example in zip(videos, EXAMPLES):
        output = chat(video=video, **example, max_new_tokens=MAX_NEW_TOKENS)
        assert output == {"answer": generate_directly(chat, video, example)}


def test_generation_arguments_pass_through(chat, videos):
    example = EXAMPLES[0]
    beams = chat(video=videos[0], **example, max_new_tokens=MAX_NEW_TOKENS, num_beams=3)["answer"]
    assert beams == generate_directly(chat, videos[0], example, num_beams=3)
    one_token = chat(video=videos[0], **example, max_new_tokens=1)["answer"]
    inputs = chat.processor(video_features=videos[0], caption=example["caption"], question=example["question"], return_tensors="pt")
    first = chat.model.generate(**inputs, max_new_tokens=1)[0, -1:]
    assert one_token == chat.processor.decode(first, skip_special_tokens=True)


def test_batched_list_equals_one_by_one(chat, videos):
    inputs = [{"video": video, **example} for video, example in zip(videos, EXAMPLES)]
    single = [chat(dict(item), return_video_relevance=True, max_new_tokens=MAX_NEW_TOKENS) for item in inputs]
    batched = chat(inputs, batch_size=3, return_video_relevance=True, max_new_tokens=MAX_NEW_TOKENS)
    assert isinstance(batched, list) and len(batched) == 3
    for one, many, video in zip(single, batched, videos):
        assert one["answer"] == many["answer"]
        assert many["video_relevance"].shape == video.shape[:2]
        np.testing.assert_allclose(one["video_relevance"], many["video_relevance"], atol=1e-5)


def test_chat_messages_give_the_keyword_answer(chat, videos):
    for video, example in zip(videos, EXAMPLES):
        assert chat(messages_of(video, example), max_new_tokens=MAX_NEW_TOKENS) == chat(video=video, **example, max_new_tokens=MAX_NEW_TOKENS)


def test_video_as_npy_file_and_dict_of_streams(chat, videos, tmp_path):
    np.save(tmp_path / "v.npy", videos[1])
    expected = chat(video=videos[1], **EXAMPLES[0], max_new_tokens=MAX_NEW_TOKENS)
    assert chat(video=str(tmp_path / "v.npy"), **EXAMPLES[0], max_new_tokens=MAX_NEW_TOKENS) == expected
    assert chat(video={"i3d_rgb": videos[1]}, **EXAMPLES[0], max_new_tokens=MAX_NEW_TOKENS) == expected


def test_history_longer_than_the_model_takes_is_truncated_and_said(chat, videos, caplog):
    # max_turns=6 keeps 4 history turns: 6 turns lose the 2 oldest, exactly as the processor does in training.
    history = [(f"what is on the table {i} ?", f"a cup {i} .") for i in range(6)]
    with caplog.at_level(logging.WARNING):
        long = chat(video=videos[0], caption="x", history=history, question="what ?", max_new_tokens=MAX_NEW_TOKENS)
    assert "the 2 oldest were dropped" in caplog.text
    assert long == chat(video=videos[0], caption="x", history=history[2:], question="what ?", max_new_tokens=MAX_NEW_TOKENS)


@pytest.mark.parametrize(
    "video, question, message",
    [
        (np.zeros((4, 4, FEATURE_DIM + 1), np.float32), "what ?", f"dim {FEATURE_DIM + 1}"),
        (np.zeros((4, 4, FEATURE_DIM), np.float32), "   ", "the question is empty"),
        (np.zeros((5,), np.float32), "what ?", "neither features"),
        ("missing.npy", "what ?", "no such file: missing.npy"),
    ],
)
def test_bad_input_gets_a_clear_error(chat, video, question, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        chat(video=video, question=question)


def test_unreadable_file_and_video_file_on_a_features_model(chat, tmp_path):
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="cannot read video features from .*broken.npy"):
        chat(video=str(tmp_path / "broken.npy"), question="what ?")
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="pre-extracted video features.*extract_features"):
        chat(video=str(tmp_path / "clip.mp4"), question="what ?")
    with pytest.raises(ValueError, match="frames array .*extract_features"):
        chat(video=np.zeros((8, 32, 32, 3), np.uint8), question="what ?")
    (tmp_path / "notes.txt").write_text("not a video")
    with pytest.raises(ValueError, match=r"notes\.txt is neither a \.npy feature file nor a video file \(expected \.npy or one of \.mp4"):
        chat(video=str(tmp_path / "notes.txt"), question="what ?")  # was called "a video file"


def test_model_without_processor_is_a_clear_error(chat, tmp_path):
    from transformers import pipeline

    chat.model.save_pretrained(tmp_path / "model_only")
    with pytest.raises(ValueError, match="no processor found"):
        pipeline("video-grounded-dialogue", model=str(tmp_path / "model_only"), trust_remote_code=True, device="cpu")


# ------------------------------------------------------------------------------------------------ chat template


def test_apply_chat_template_gives_exactly_the_processor_tensors(chat, videos):
    processor = chat.processor
    for video, example in zip(videos, EXAMPLES):
        from_messages = processor.apply_chat_template(messages_of(video, example), tokenize=True, return_dict=True, return_tensors="pt")
        from_keywords = processor(video_features=video, caption=example["caption"], history=example["history"],
                                  question=example["question"], return_tensors="pt")
        assert set(from_messages.keys()) == set(from_keywords.keys())
        for key in from_keywords:
            assert torch.equal(from_messages[key], from_keywords[key]), key
    # A batch of conversations is the batched keyword call (left padding included).
    batch = processor.apply_chat_template([messages_of(v, e) for v, e in zip(videos, EXAMPLES)], tokenize=True,
                                          return_dict=True, return_tensors="pt")
    keywords = processor(video_features=list(videos), caption=[e["caption"] for e in EXAMPLES],
                         history=[e["history"] for e in EXAMPLES], question=[e["question"] for e in EXAMPLES], return_tensors="pt")
    for key in keywords:
        assert torch.equal(batch[key], keywords[key]), key
    ids = processor.apply_chat_template(messages_of(videos[0], EXAMPLES[1]), tokenize=True, return_tensors="pt")
    assert torch.equal(ids, processor(video_features=videos[0], caption=EXAMPLES[1]["caption"], history=EXAMPLES[1]["history"],
                                      question=EXAMPLES[1]["question"], return_tensors="pt")["input_ids"])


def test_chat_template_renders_the_layout_as_text(chat, videos):
    text = chat.processor.apply_chat_template(messages_of(videos[0], EXAMPLES[1]))
    assert text == "<video><cap> a woman sits .<usr> where is she ?<sys> she is in the garage .<usr> what is on the table ?<sys>"


@pytest.mark.parametrize(
    "messages, message",
    [
        ([{"role": "assistant", "content": "yes"}], "expected a user message"),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "must end with a user message"),
        ([{"role": "user", "content": [{"type": "image", "image": "x.png"}]}], "unsupported content type 'image'"),
        ([{"role": "system", "content": [{"type": "video", "video": "x.npy"}]}, {"role": "user", "content": "q"}],
         "only user messages may carry the video"),
    ],
)
def test_bad_conversations_get_clear_errors(chat, messages, message):
    with pytest.raises(ValueError, match=message):
        chat.processor.apply_chat_template(messages, tokenize=True, return_tensors="pt")


# ------------------------------------------------------------------------------------------------ relevance map


def test_relevance_is_the_mean_attention_of_the_answer_positions_over_the_video(chat, videos):
    """An independent computation from the attention weights of one eager forward pass."""
    model, processor = chat.model, chat.processor
    example = EXAMPLES[1]
    inputs = processor(video_features=videos[1], caption=example["caption"], history=example["history"],
                       question=example["question"], return_tensors="pt")
    sequences = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS)
    prompt_length = inputs["input_ids"].shape[1]
    answer = sequences[0, prompt_length:].tolist()
    if processor.eos_token_id in answer:
        answer = answer[: answer.index(processor.eos_token_id) + 1]
    sequence = sequences[:, : prompt_length + len(answer)]
    eager = type(model).from_pretrained(chat.model.name_or_path, attn_implementation="eager").eval()
    with torch.no_grad():
        attentions = eager(input_ids=sequence, video_features=inputs["video_features"], output_attentions=True).attentions
    weights = np.mean([layer[0].mean(dim=0).numpy() for layer in attentions], axis=0)  # [L, L]
    queries = range(prompt_length - 1, prompt_length - 1 + len(answer))
    frames, regions = videos[1].shape[:2]
    expected = np.mean([weights[q, : frames * regions] for q in queries], axis=0).reshape(frames, regions)
    expected /= expected.sum()
    implementation = model.config._attn_implementation
    got = chat(video=videos[1], **example, return_video_relevance=True, max_new_tokens=MAX_NEW_TOKENS)["video_relevance"]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    assert model.config._attn_implementation == implementation  # restored after the eager pass


def test_rollout_equals_attention_for_one_layer(tmp_path, videos):
    """With one layer, rollout's identity term only adds to the query itself, so the video part is the attention."""
    from transformers import pipeline

    one_layer = pipeline("video-grounded-dialogue", model=build_tiny_chat_model(str(tmp_path), n_layer=1),
                         trust_remote_code=True, device="cpu")
    kwargs = dict(video=videos[0], **EXAMPLES[0], return_video_relevance=True, max_new_tokens=MAX_NEW_TOKENS)
    attention = one_layer(**kwargs)["video_relevance"]
    rollout = one_layer(**kwargs, relevance_method="rollout")["video_relevance"]
    np.testing.assert_allclose(attention, rollout, rtol=1e-5, atol=1e-7)


def test_relevance_of_an_example_without_video_is_none(chat):
    assert chat(video=None, question="what is on the table ?", return_video_relevance=True, max_new_tokens=2)["video_relevance"] is None


def test_relevance_of_region_and_clip_tokens_is_mapped_back_to_clips_x_regions():
    """`video_pooling="spatial_and_temporal"`: the weights of the P region tokens and the F clip tokens become an
    `[F, P]` map, `clip[f] / P + region[p] / F`: it sums to 1, its frame profile is the clip tokens' plus a constant,
    its region profile the region tokens' plus a constant, and a padded clip row is zero."""
    from pipeline_vgd import _regions_then_clips_to_grid

    rng = np.random.default_rng(0)
    regions, clips = 3, [4, 2]
    relevance = torch.zeros(2, regions + 4, 1)
    mask = torch.zeros(2, regions + 4, 1, dtype=torch.bool)
    for row, count in enumerate(clips):
        weights = torch.tensor(rng.random(regions + count), dtype=torch.float32)
        relevance[row, : regions + count, 0] = weights / weights.sum()
        mask[row, : regions + count] = True
    grid, shapes = _regions_then_clips_to_grid(relevance, mask, regions)
    assert grid.shape == (2, 4, regions) and shapes.tolist() == [[4, regions], [2, regions]]
    for row, count in enumerate(clips):
        clip_weights, region_weights = relevance[row, regions : regions + count, 0], relevance[row, :regions, 0]
        assert float(grid[row].sum()) == pytest.approx(1.0, abs=1e-6)
        frame_profile = grid[row, :count].sum(dim=1)
        np.testing.assert_allclose(frame_profile - clip_weights, region_weights.sum() / count, atol=1e-6)
        np.testing.assert_allclose(grid[row, :count].sum(dim=0) - region_weights, clip_weights.sum() / regions, atol=1e-6)
        assert float(grid[row, count:].abs().sum()) == 0.0


def test_plot_helper_writes_a_png(tmp_path):
    from vgd_apps.visualization import plot_video_relevance

    relevance = np.random.default_rng(0).random((4, 9))
    relevance /= relevance.sum()
    frames = np.random.default_rng(1).integers(0, 255, (4, 48, 64, 3), dtype=np.uint8)
    for name, kwargs in (("tiles.png", {}), ("frames.png", {"frames": frames})):
        plot_video_relevance(relevance, path=str(tmp_path / name), title="q / a", **kwargs)
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 2000
    with pytest.raises(ValueError, match="3 frames given for a relevance map of 4 frames"):
        plot_video_relevance(relevance, frames=frames[:3])


# ------------------------------------------------------------------------------------------------ terminal chat


def test_terminal_chat_streams_answers_keeps_history_and_reports_errors(chat, model_dir, videos, tmp_path):
    from vgd_apps.chat import find_demo_videos

    demo = find_demo_videos(os.path.join(model_dir, "data"))
    assert len(demo) == 8
    first, second = demo[0], demo[1]
    video = np.load(first["path"])
    q1, q2, q3 = "what is on the table ?", "what does she do first ?", "where is he ?"
    a1 = chat(video=video, caption=first["caption"], question=q1, max_new_tokens=MAX_NEW_TOKENS)["answer"]
    a2 = chat(video=video, caption=first["caption"], history=[(q1, a1)], question=q2, max_new_tokens=MAX_NEW_TOKENS)["answer"]
    a3 = chat(video=np.load(second["path"]), caption=second["caption"], question=q3, max_new_tokens=MAX_NEW_TOKENS)["answer"]
    a4 = chat(video=video, caption=first["caption"], question=q1, max_new_tokens=MAX_NEW_TOKENS)["answer"]
    np.save(tmp_path / "wrong_dim.npy", np.zeros((4, 4, 3), np.float32))
    stdin = "\n".join([
        q1, q2, "", f"/video {tmp_path / 'wrong_dim.npy'}", f"/video {second['image_id']}", q3,
        f"/video {first['image_id']}", "/reset", "/relevance", q1, "/history", "/quit",
    ]) + "\n"
    env = {**os.environ, "PYTHONPATH": REPO_ROOT}
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "chat_vgd.py"), "--model", model_dir,
                             "--max_new_tokens", str(MAX_NEW_TOKENS)],
                            input=stdin, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    answers = [line.split("model> ", 1)[1] for line in out.splitlines() if "model> " in line and "  model> " not in line]
    assert answers == [a1, a2, a3, a4]
    assert f"video {first['image_id']}: 4 frames x 4 regions; caption: {first['caption']}" in out
    assert "(the question is empty" in out
    assert f"(error: {tmp_path / 'wrong_dim.npy'}: video features have dim 3" in out
    assert "(history cleared)" in out and "where it looked: f1" in out
    assert f"  you> {q1}\n  model> {a4}\n" in out  # the history after /reset holds only the last turn
    assert "Traceback" not in out + result.stderr


def test_terminal_chat_without_a_model_says_how_to_get_one(tmp_path, monkeypatch, capsys):
    import vgd_apps.chat as chat_vgd

    monkeypatch.chdir(tmp_path)  # no outputs/demo here
    assert chat_vgd.main([]) == 1
    assert "error: no model at outputs/demo: train the demo with `python run_vgd.py`" in capsys.readouterr().err


def test_answers_stream_token_by_token_through_the_pipeline(chat, videos):
    from transformers.generation.streamers import BaseStreamer

    from vgd_apps.chat import DialogueSession

    class Recorder(BaseStreamer):
        def __init__(self):
            self.puts = []
            self.ended = False

        def put(self, value):
            self.puts.append(value.reshape(-1).tolist())

        def end(self):
            self.ended = True

    session = DialogueSession(chat)
    session.load_video(videos[0], "a man in a kitchen .")
    recorder = Recorder()
    result = session.ask("what does he do first ?", max_new_tokens=MAX_NEW_TOKENS, streamer=recorder)
    assert recorder.ended and len(recorder.puts) >= 2  # the prompt, then one put per generated token
    streamed = [token for tokens in recorder.puts[1:] for token in tokens]
    assert chat.processor.decode(streamed, skip_special_tokens=True) == result["answer"]
    assert session.history == [("what does he do first ?", result["answer"])]
    with pytest.raises(ValueError, match="the question is empty"):
        session.ask("  ")


def test_default_data_dir_finds_the_demo_cache_beside_the_model(tmp_path):
    """`python run_vgd.py` keeps the demo's dataset in demo-cache/data-<hash> beside outputs/demo and points
    demo-cache/data at the newest one: the chat's default dataset is found there (and in <model>/data first)."""
    from vgd_apps.chat import default_data_dir
    from avsd_dataset.demo import link_latest as _link_latest

    model = tmp_path / "demo"
    model.mkdir()
    assert default_data_dir(str(model)) is None
    for name in ("data-aaa", "data-bbb"):
        (tmp_path / "demo-cache" / name).mkdir(parents=True)
    _link_latest(str(tmp_path / "demo-cache" / "data"), str(tmp_path / "demo-cache" / "data-aaa"))
    _link_latest(str(tmp_path / "demo-cache" / "data"), str(tmp_path / "demo-cache" / "data-bbb"))
    found = default_data_dir(str(model))
    assert os.path.realpath(found) == str((tmp_path / "demo-cache" / "data-bbb").resolve())
    (model / "data").mkdir()
    assert default_data_dir(str(model)) == str(model / "data")


def test_no_video_is_an_error_and_video_none_a_warned_text_only_answer(chat, videos, caplog):
    """Issue 22, item 5: a video-grounded model answering blind must at least say so."""
    with pytest.raises(ValueError, match=r"no video given: a video-grounded model would answer blind\. Pass video=\.\.\."):
        chat(question="what does he do ?", caption="a man")
    with pytest.raises(ValueError, match=r"the conversation carries no video"):
        chat([{"role": "user", "content": [{"type": "text", "text": "what does he do ?"}]}])
    with pytest.raises(ValueError, match=r"no input: the list is empty"):
        chat([])  # was an IndexError
    import logging

    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    pipeline_logger = logging.getLogger(type(chat).__module__)  # loaded as remote code: under transformers_modules
    level = pipeline_logger.level
    pipeline_logger.addHandler(handler)
    pipeline_logger.setLevel(logging.WARNING)  # another test may have quietened it
    try:
        out = chat(video=None, question="what does he do ?", caption="a man", max_new_tokens=3)
    finally:
        pipeline_logger.removeHandler(handler)
        pipeline_logger.setLevel(level)
    assert isinstance(out["answer"], str)
    assert any("answering without a video (video=None)" in record.getMessage() for record in records)
