"""The web page (app_vgd.py) in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`, which
`.ci/run` installs) driven by selenium against the app served on a free localhost port."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
import pytest

from avsd_dataset.video_demo import free_port
from chat_fixtures import MAX_NEW_TOKENS, build_tiny_chat_model

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def start_app(model_dir: str, port: int, log_path: str, *extra: str) -> subprocess.Popen:
    """`python app_vgd.py --model model_dir --port port`, waiting until the page answers (or the app dies)."""
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, os.path.join(REPO_ROOT, "app_vgd.py"), "--model", model_dir, "--port", str(port), *extra],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=os.path.dirname(log_path),
    )
    deadline = time.time() + 180
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with {process.returncode}:\n{open(log_path).read()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.5)
    process.terminate()
    raise RuntimeError(f"the app did not answer within 180 s:\n{open(log_path).read()[-3000:]}")


def headless_chromium(user_data_dir: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1500,1000", f"--user-data-dir={user_data_dir}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def text_of(driver, css: str) -> str:
    from selenium.webdriver.common.by import By

    elements = driver.find_elements(By.CSS_SELECTOR, css)
    return elements[0].text if elements else ""


def ask_in_browser(driver, url: str, question: str, timeout: float = 120) -> str:
    """Load the page (if not loaded), type `question`, press Ask; returns the status line once it has changed."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    if driver.current_url.rstrip("/") != url.rstrip("/"):
        driver.get(url)
    wait = WebDriverWait(driver, timeout)
    box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#question textarea"))
    before = text_of(driver, "#status")
    box.clear()
    box.send_keys(question)
    driver.find_element(By.CSS_SELECTOR, "button#ask").click()
    return wait_for_status(driver, before, timeout)


def wait_for_status(driver, before: str, timeout: float = 120) -> str:
    """The status line once it differs from `before` and the request is finished."""
    from selenium.webdriver.support.ui import WebDriverWait

    def pending(status: str) -> bool:
        # Gradio's overlay while a request runs: "processing", a timer line "0.4s" / "0.0/0.7s", or a queue line
        # "queue: 1/1 | 0.0/0.7s" above the previous status
        first = (status.splitlines()[0] if status else "").strip()
        timer = r"[\d.]+(/[\d.]+)?s(\s*[|/].*)?"
        return "processing" in status or first.startswith("queue:") or re.fullmatch(timer, first) is not None

    def done(d):
        status = text_of(d, "#status")
        return status if status not in ("", before) and not pending(status) else False

    return WebDriverWait(driver, timeout).until(done)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_chat_model(str(tmp_path_factory.mktemp("app_model")))


def test_page_answers_like_the_pipeline_and_draws_the_relevance_map(model_dir, tmp_path):
    assert CHROMIUM and CHROMEDRIVER, "headless Chromium is needed: apt-get install -y chromium chromium-driver"
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from transformers import pipeline

    from vgd_apps.chat import find_demo_videos

    first = find_demo_videos(os.path.join(model_dir, "data"))[0]
    question = "what is on the table ?"
    chat = pipeline("video-grounded-dialogue", model=model_dir, trust_remote_code=True, device="cpu")
    expected = chat(video=np.load(first["path"]), caption=first["caption"], question=question,
                    max_new_tokens=MAX_NEW_TOKENS, return_video_relevance=True)
    follow_up = "what does he do first ?"
    expected_follow_up = chat(video=np.load(first["path"]), caption=first["caption"], history=[(question, expected["answer"])],
                              question=follow_up, max_new_tokens=MAX_NEW_TOKENS)["answer"]

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    app = start_app(model_dir, port, str(tmp_path / "app.log"), "--max_new_tokens", str(MAX_NEW_TOKENS))
    driver = headless_chromium(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path))
    try:
        status = ask_in_browser(driver, url, question)
        assert status.startswith(f"Turn 1: answered from {first['image_id']}."), status
        assert "where it looked: f1" in status
        chat_text = text_of(driver, "#chatbot")
        assert question in chat_text and expected["answer"].strip() in chat_text, chat_text
        # The heatmap: in the side panel and next to the answer in the dialogue.
        wait = WebDriverWait(driver, 60)
        side = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#relevance img"))
        assert side[0].get_attribute("src") and side[0].size["width"] > 100
        assert driver.find_elements(By.CSS_SELECTOR, "#chatbot img")
        driver.save_screenshot(str(tmp_path / "page.png"))
        assert (tmp_path / "page.png").read_bytes().startswith(b"\x89PNG")

        # The history is kept: the second answer is the pipeline's answer given the first turn.
        assert ask_in_browser(driver, url, follow_up).startswith(f"Turn 2: answered from {first['image_id']}.")
        assert expected_follow_up.strip() in text_of(driver, "#chatbot")

        # Bad input: a clear message on the page, never a stack trace.
        status = ask_in_browser(driver, url, "   ")
        assert "the question is empty" in status, status
        np.save(tmp_path / "wrong_dim.npy", np.zeros((4, 4, 3), np.float32))
        before = text_of(driver, "#status")
        driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(tmp_path / "wrong_dim.npy"))
        status = wait_for_status(driver, before, 60)
        assert "wrong_dim.npy: video features have dim 3" in status, status
        page = driver.page_source
        assert "Traceback" not in page and "Internal error" not in page
    finally:
        driver.quit()
        app.terminate()
        app.wait(timeout=30)
    log = open(tmp_path / "app.log").read()
    assert "Traceback" not in log, log[-3000:]
