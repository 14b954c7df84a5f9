"""A model named on the command line is checked once before anything is loaded or replaced (issue 22, item 7): an
unreachable Hub or HF_HUB_OFFLINE=1 without a cached copy ends the run in one line, in seconds; a missing folder is
named as one (not as a malformed Hub id)."""

import os
import subprocess
import sys
import time

import pytest
from huggingface_hub import constants

import vgd_training.hub_access as hub_access_vgd
from vgd_training.hub_access import ModelSourceError, check_model_source

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: connection refused at once


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def unreachable_hub(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", UNREACHABLE)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(hub_access_vgd, "HUB_TIMEOUT_S", 3.0)


def test_hf_hub_offline_without_a_cached_copy_is_one_line(offline):
    with pytest.raises(ModelSourceError) as raised:
        check_model_source("vgd-test/never-downloaded")
    assert str(raised.value) == (
        "could not download 'vgd-test/never-downloaded': HF_HUB_OFFLINE=1 is set and it is not in the local cache; "
        "unset it (with a network) or pass a local folder"
    )


def test_an_unreachable_hub_is_said_in_one_line_without_retries(unreachable_hub):
    started = time.monotonic()
    with pytest.raises(ModelSourceError) as raised:
        check_model_source("gpt2")
    assert str(raised.value).startswith("could not download 'gpt2': no network? set HF_HUB_OFFLINE=1 or pass a local folder")
    assert "\n" not in str(raised.value)
    assert time.monotonic() - started < 5  # one request, not minutes of retries


def test_a_missing_folder_is_named_as_one(offline, tmp_path):
    for name in ("/nope", "./nope", str(tmp_path / "no-such-model")):
        with pytest.raises(ModelSourceError, match=r"does not exist"):
            check_model_source(name, flag="--model")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ModelSourceError, match=r"is a file, not a model folder"):
        check_model_source(str(tmp_path / "a.txt"))
    with pytest.raises(ModelSourceError, match=r"not a Hub id"):
        check_model_source("not a repo id")
    assert check_model_source(str(tmp_path)) == str(tmp_path)  # a local folder is taken as it is


def test_run_vgd_with_an_unreachable_hub_fails_in_one_line_and_keeps_the_demo_model(tmp_path):
    """The reported typo: `python run_vgd.py --model_name_or_path gpt2` without network. The earlier demo model
    stays; the error is one line on stderr, in seconds."""
    demo = tmp_path / "outputs" / "demo"
    demo.mkdir(parents=True)
    earlier = {"config.json": "{}", "model.safetensors": "weights", "_run_vgd.json": '{"run_id": "earlier", "demo": true}'}
    for name, text in earlier.items():
        (demo / name).write_text(text)
    env = dict(os.environ, HF_HUB_OFFLINE="0", HF_ENDPOINT=UNREACHABLE, HF_HOME=str(tmp_path / "hf"), VGD_HUB_TIMEOUT="3",
               PYTHONPATH=REPO_ROOT)
    started = time.monotonic()
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "run_vgd.py"), "--model_name_or_path", "gpt2"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert time.monotonic() - started < 60
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == [f"run_vgd.py: error: could not download 'gpt2': no network? set HF_HUB_OFFLINE=1 or pass a local folder (ConnectError from {UNREACHABLE})"]
    assert "Traceback" not in result.stderr and "Retrying" not in result.stderr + result.stdout
    for name, text in earlier.items():
        assert (demo / name).read_text() == text


def test_chat_with_a_missing_model_folder_names_the_folder(offline, capsys):
    from vgd_apps import chat

    assert chat.main(["--model", "/nope"]) == 1
    error = capsys.readouterr().err
    assert "--model /nope: does not exist" in error and "Repo id" not in error
