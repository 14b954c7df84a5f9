#!/usr/bin/env python
"""The web page answering about one unseen test `.mp4` of the video demo, in headless Chromium, with a screenshot.

    python benchmarks/screenshot_video_page.py MODEL_DIR DATA_DIR [--image_id RJPEA] [--png docs/video_page.png]

MODEL_DIR: a model trained by `python -m avsd_dataset.video_demo` (it records its video backbone, so it answers
from video files); DATA_DIR: that run's synthetic data folder (its `videos_testset/` were never trained on).
Starts `python -m vgd_apps.web` on a free port, picks the test video in the page's list, asks the test dialogue's
own scored question (without its history: the page starts a conversation), waits for the answer and its relevance
map, saves the screenshot, and prints the page's answer next to the `video-grounded-dialogue` pipeline's answer for
the same video file, caption and question, and next to the ground truth. Needs Debian's `chromium` and
`chromium-driver`, selenium, gradio and pytest (the helpers of tests/test_app_browser.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO_ROOT, os.path.join(REPO_ROOT, "tests")]  # the page's browser helpers live with its test


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("data_dir")
    parser.add_argument("--image_id", default=None, help="A test video id (default: the first test dialogue's).")
    parser.add_argument("--png", default=os.path.join(REPO_ROOT, "docs", "video_page.png"))
    args = parser.parse_args(argv)
    # the page runs in its own working folder: relative paths are taken from here
    args.model_dir, args.data_dir = os.path.abspath(args.model_dir), os.path.abspath(args.data_dir)

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from transformers import pipeline

    from avsd_dataset.synthetic import TEST_FILE, load_ground_truth
    from avsd_dataset.synthetic_video import TEST_VIDEO_DIR
    from test_app_browser import free_port, headless_chromium, start_app

    with open(os.path.join(args.data_dir, TEST_FILE), encoding="utf-8") as f:
        dialogs = {d["image_id"]: d for d in json.load(f)["dialogs"]}
    image_id = args.image_id or next(iter(dialogs))
    dialog = dialogs[image_id]
    question = dialog["dialog"][-1]["question"]
    video = os.path.join(args.data_dir, TEST_VIDEO_DIR, image_id + ".mp4")
    truth = load_ground_truth(args.data_dir)["videos"][image_id]

    chat = pipeline("video-grounded-dialogue", model=args.model_dir, trust_remote_code=True, device="cpu")
    expected = chat(video=video, caption=dialog["caption"], question=question, num_beams=1, max_new_tokens=20)["answer"]

    port = free_port()
    work = tempfile.mkdtemp(prefix="video-page-")
    page = start_app(args.model_dir, port, os.path.join(work, "page.log"), "--data_dir", args.data_dir, "--max_demo_videos", "400")
    driver = headless_chromium(os.path.join(work, "chromium"))
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 180)
        if image_id != next(iter(dialogs)):  # the page opens on the first test video; pick another in its dropdown
            box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#demo-video input"))
            box.click()
            box.send_keys(image_id)
            option = wait.until(lambda d: [o for o in d.find_elements(By.CSS_SELECTOR, "ul.options li") if o.text.startswith(image_id)])
            option[0].click()
            wait.until(lambda d: image_id in d.find_element(By.CSS_SELECTOR, "#status").text)
        textarea = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#question textarea"))
        textarea.send_keys(question)
        driver.find_element(By.CSS_SELECTOR, "#ask").click()
        status = wait.until(lambda d: (s := d.find_element(By.CSS_SELECTOR, "#status").text).startswith("Turn 1") and s)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#relevance img"))
        time.sleep(1.0)
        chatbot = driver.find_element(By.CSS_SELECTOR, "#chatbot").text
        os.makedirs(os.path.dirname(os.path.abspath(args.png)), exist_ok=True)
        driver.save_screenshot(args.png)
    finally:
        driver.quit()
        page.terminate()
        page.wait(timeout=30)
    print(json.dumps({
        "video": video, "question": question, "status": status, "page_chat": chatbot,
        "pipeline_answer": expected, "page_has_pipeline_answer": expected.strip() in chatbot,
        "ground_truth": {k: truth[k] for k in ("place", "object", "color", "count", "actions") if k in truth},
        "screenshot": args.png,
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
