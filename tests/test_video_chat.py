"""From rendered .mp4 files to a chat about them, end to end: synthetic videos -> `extract_features` (a tiny
random-init r3d_18) -> `run_vgd.py` on those features -> the trained model answers from the video files through
`processor(videos=...)`, the pipeline, the terminal chat and the web page (headless Chromium)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import torch
from safetensors import safe_open

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_NEW_TOKENS = 4
SEED = 7  # the random backbone's seed: not the default, so that a model that ignored it would differ
EXTRACT_ARGS = ["--backbone", "r3d_18", "--random_init", "--seed", str(SEED), "--crop_size", "32", "--resize_size", "36",
                "--num_workers", "0", "--batch_size", "8"]
QUESTION = "what is on the table ?"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`(data_dir, feature_dir, model_dir)`: the tiny recipe of the README, run in-process."""
    import run_vgd
    from avsd_dataset.extract_features import main as extract_features
    from avsd_dataset.offline_gpt2 import build_offline_gpt2
    from avsd_dataset.synthetic import corpus_texts, generate_synthetic_avsd
    from avsd_dataset.synthetic_video import render_synthetic_videos

    root = tmp_path_factory.mktemp("video_chat")
    data_dir, feature_dir, model_dir = str(root / "data"), str(root / "video_features"), str(root / "model")
    generate_synthetic_avsd(data_dir, num_train_dialogs=4, num_valid_dialogs=2, num_test_dialogs=3, seed=5)
    info = render_synthetic_videos(data_dir, height=48, width=64)
    extract_features([info["video_dir"], feature_dir, *EXTRACT_ARGS])
    extract_features([info["test_video_dir"], feature_dir, *EXTRACT_ARGS, "--split", "test"])
    gpt2_dir = build_offline_gpt2(corpus_texts(data_dir), str(root / "gpt2"), vocab_size=300, n_positions=128,
                                  n_embd=32, n_layer=1, n_head=2)
    run_vgd.main([
        "--model_name_or_path", gpt2_dir, "--data_dir", data_dir, "--feature_dir", feature_dir, "--feature_streams", "r3d_18",
        "--output_dir", model_dir, "--max_steps", "2", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4",
        "--generation_num_beams", "1", "--generation_max_new_tokens", "3", "--eval_max_generation_examples", "2",
        "--report_to", "none",
    ])
    return data_dir, feature_dir, model_dir


def test_trained_model_records_the_backbone_and_sees_the_extracted_features(trained):
    from modeling_vgd_gpt2 import VGDGPT2ForDialogue
    from processing_vgd import VGDProcessor

    data_dir, feature_dir, model_dir = trained
    with open(os.path.join(feature_dir, "r3d_18", "backbone.json")) as f:
        recorded = json.load(f)
    assert recorded["random_init_seed"] == SEED and recorded["weights"] is None
    processor = VGDProcessor.from_pretrained(model_dir)
    model = VGDGPT2ForDialogue.from_pretrained(model_dir).eval()
    assert model.config.video_backbone == recorded == processor.video_processor.video_backbone
    with safe_open(os.path.join(model_dir, "model.safetensors"), framework="pt") as weights:
        assert any(key.startswith("video_backbone.") for key in weights.keys())  # the random weights travel with the model
    # The features the model computes from an .mp4 are those extracted in bulk (that it was trained on).
    test_videos = os.path.join(data_dir, "videos_testset")
    for name in sorted(os.listdir(test_videos)):
        inputs = processor(videos=[os.path.join(test_videos, name)], question=[QUESTION], return_tensors="pt")
        with torch.no_grad():
            features, mask = model.extract_video_features(inputs["pixel_values_videos"], inputs["video_clip_mask"])
        extracted = np.load(os.path.join(feature_dir, "r3d_18_testset", name[:-4] + ".npy"))
        assert features.shape[1:] == extracted.shape and bool(mask.all())
        np.testing.assert_allclose(features[0].numpy(), extracted, rtol=1e-4, atol=1e-5)


def test_pipeline_on_a_video_file_equals_processor_and_generate(trained):
    from transformers import pipeline

    data_dir, _, model_dir = trained
    chat = pipeline("video-grounded-dialogue", model=model_dir, trust_remote_code=True, device="cpu")
    video = os.path.join(data_dir, "videos_testset", sorted(os.listdir(os.path.join(data_dir, "videos_testset")))[0])
    history = [("is he alone ?", "yes .")]
    output = chat(video=video, caption="a room .", history=history, question=QUESTION, max_new_tokens=MAX_NEW_TOKENS,
                  return_video_relevance=True)
    inputs = chat.processor(videos=[video], caption=["a room ."], history=[history], question=[QUESTION], return_tensors="pt")
    generated = chat.model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS)
    expected = chat.processor.batch_decode(generated[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]
    assert output["answer"] == expected
    assert output["video_relevance"].shape == (4, 4)  # 64 frames -> 4 clips of 16; 2 x 2 cells of the 32-pixel crop


def test_pipeline_batches_video_files_as_it_answers_them_one_by_one(trained):
    """`chat([...], batch_size=2)` on .mp4 files (benchmarks/measure_relevance.py --videos does): the clips of a
    batch are padded together, and every answer and relevance map equals the one-by-one call's."""
    from transformers import pipeline

    data_dir, _, model_dir = trained
    chat = pipeline("video-grounded-dialogue", model=model_dir, trust_remote_code=True, device="cpu")
    folder = os.path.join(data_dir, "videos_testset")
    inputs = [{"video": os.path.join(folder, name), "question": QUESTION} for name in sorted(os.listdir(folder))]
    batched = chat(inputs, batch_size=2, max_new_tokens=MAX_NEW_TOKENS, num_beams=1, return_video_relevance=True)
    for one, output in zip(inputs, batched):
        single = chat(**one, max_new_tokens=MAX_NEW_TOKENS, num_beams=1, return_video_relevance=True)
        assert output["answer"] == single["answer"]
        np.testing.assert_allclose(output["video_relevance"], single["video_relevance"], rtol=1e-4, atol=1e-6)


def test_terminal_chat_answers_about_video_files(trained, tmp_path):
    from transformers import pipeline

    data_dir, _, model_dir = trained
    test_videos = os.path.join(data_dir, "videos_testset")
    first, second = (os.path.join(test_videos, name) for name in sorted(os.listdir(test_videos))[:2])
    chat = pipeline("video-grounded-dialogue", model=model_dir, trust_remote_code=True, device="cpu")
    q2 = "what does he do first ?"
    a1 = chat(video=first, question=QUESTION, max_new_tokens=MAX_NEW_TOKENS)["answer"]
    a2 = chat(video=second, caption="a kitchen .", question=q2, max_new_tokens=MAX_NEW_TOKENS)["answer"]
    stdin = f"{QUESTION}\n/video {second} a kitchen .\n{q2}\n/quit\n"
    env = {**os.environ, "PYTHONPATH": REPO_ROOT}
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "chat_vgd.py"), "--model", model_dir, "--video", first,
                             "--data_dir", data_dir, "--max_new_tokens", str(MAX_NEW_TOKENS)],
                            input=stdin, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert f"video {first}: 4 frames x 4 regions" in out
    assert f"(video {second}: 4 frames x 4 regions; caption: a kitchen .)" in out
    answers = [line.split("model> ", 1)[1] for line in out.splitlines() if "model> " in line]
    assert answers == [a1, a2]
    assert "Traceback" not in out + result.stderr


def test_frames_drawn_are_the_middle_frame_of_each_clip(trained):
    from vgd_apps.web import sample_frames
    from processing_vgd import VGDProcessor
    from video_processing_vgd import decode_video

    data_dir, _, model_dir = trained
    processor = VGDProcessor.from_pretrained(model_dir)
    video = os.path.join(data_dir, "videos_testset", sorted(os.listdir(os.path.join(data_dir, "videos_testset")))[0])
    frames = sample_frames(video, 4, processor.video_processor)
    decoded, _ = decode_video(video, shortest_edge=processor.video_processor.size["shortest_edge"])
    assert decoded.shape[0] == 64
    np.testing.assert_array_equal(frames, decoded[[8, 24, 40, 56]])
    assert sample_frames(video, 2, processor.video_processor).shape[0] == 2  # a model keeping fewer frames
    assert sample_frames(np.zeros((3, 16), np.float32), 3, processor.video_processor) is None  # features: no frames


def test_page_answers_about_an_mp4_and_draws_its_frames_with_the_heatmap(trained, tmp_path):
    from test_app_browser import CHROMEDRIVER, CHROMIUM, ask_in_browser, free_port, headless_chromium, start_app, text_of, wait_for_status

    assert CHROMIUM and CHROMEDRIVER, "headless Chromium is needed: apt-get install -y chromium chromium-driver"
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from transformers import pipeline

    from vgd_apps.chat import find_demo_videos

    data_dir, _, model_dir = trained
    demo = find_demo_videos(data_dir, video_files=True)
    assert [os.path.splitext(video["path"])[1] for video in demo] == [".mp4"] * 3
    first, other = demo[0], demo[1]
    chat = pipeline("video-grounded-dialogue", model=model_dir, trust_remote_code=True, device="cpu")
    expected = chat(video=first["path"], caption=first["caption"], question=QUESTION, max_new_tokens=MAX_NEW_TOKENS)["answer"]
    expected_upload = chat(video=other["path"], question=QUESTION, max_new_tokens=MAX_NEW_TOKENS)["answer"]

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    app = start_app(model_dir, port, str(tmp_path / "app.log"), "--data_dir", data_dir, "--max_new_tokens", str(MAX_NEW_TOKENS))
    driver = headless_chromium(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path))
    try:
        status = ask_in_browser(driver, url, QUESTION)  # the picked demo video: an .mp4
        assert status.startswith(f"Turn 1: answered from {first['image_id']}."), status
        assert expected.strip() in text_of(driver, "#chatbot")
        side = WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#relevance img"))
        assert side[0].size["width"] > 100
        driver.save_screenshot(str(tmp_path / "page.png"))
        # An uploaded .mp4 (a copy under another name): answered from that file.
        upload = tmp_path / "uploaded_clip.mp4"
        shutil.copy(other["path"], upload)
        before = text_of(driver, "#status")
        driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(upload))
        status = wait_for_status(driver, before)  # the upload finished (not Gradio's pending overlay above the old line)
        assert "uploaded_clip.mp4: 4 frames x 4 regions" in status, status
        status = ask_in_browser(driver, url, QUESTION)
        assert status.startswith("Turn 1: answered from uploaded_clip.mp4."), status
        assert expected_upload.strip() in text_of(driver, "#chatbot")
        assert "Traceback" not in driver.page_source and "Internal error" not in driver.page_source
    finally:
        driver.quit()
        app.terminate()
        app.wait(timeout=30)
    log = open(tmp_path / "app.log").read()
    assert "Traceback" not in log and "could not decode frames" not in log, log[-3000:]
