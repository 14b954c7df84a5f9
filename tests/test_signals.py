"""A real SIGTERM sent to a real run_vgd.py process: the current step finishes, a resumable checkpoint is saved,
the process exits 143 saying how to resume, and `--resume_from_checkpoint last` continues from that step."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import run_vgd
from tests.test_run_vgd import REPO_ROOT, TINY


def start_run(output_dir, log_path, extra=()):
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    args = TINY + ["--max_steps", "400", "--save_strategy", "steps", "--save_steps", "400", "--logging_steps", "1", "--output_dir", str(output_dir), *extra]
    log = open(log_path, "w")
    return subprocess.Popen([sys.executable, "run_vgd.py", *args], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log


def wait_for_training(process, log_path, timeout=120):
    """Until the run has logged its first training loss (a step is done)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if "'loss'" in open(log_path).read():
            return
        if process.poll() is not None:
            pytest.fail(f"the run ended before training (exit {process.returncode}):\n{open(log_path).read()[-3000:]}")
        time.sleep(0.2)
    process.kill()
    pytest.fail("training did not start in time")


@pytest.mark.parametrize("signum", [signal.SIGTERM])
def test_sigterm_saves_a_resumable_checkpoint_and_exits_143(tmp_path, signum):
    output_dir = tmp_path / "run"
    log_path = tmp_path / "run.log"
    process, log = start_run(output_dir, log_path)
    try:
        wait_for_training(process, log_path)
        os.kill(process.pid, signum)  # what `kill -TERM`, `timeout`, SLURM and Kubernetes do
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    text = log_path.read_text()
    assert code == 128 + signum, text[-3000:]
    checkpoints = [name for name in os.listdir(output_dir) if name.startswith("checkpoint-")]
    assert len(checkpoints) == 1, os.listdir(output_dir)
    step = int(checkpoints[0].split("-")[1])
    assert 0 < step < 400
    where = os.path.join(str(output_dir), checkpoints[0])
    assert f"Stopped by SIGTERM after step {step}: the trained state of that step is saved in {where}." in text
    assert "--resume_from_checkpoint last" in text
    assert json.loads((output_dir / checkpoints[0] / "trainer_state.json").read_text())["global_step"] == step
    assert not (output_dir / "model.safetensors").exists()  # stopped: no final model, no evaluation

    # the same command with --resume_from_checkpoint last continues from that step
    run_vgd.main(TINY + ["--do_train", "--max_steps", str(step + 2), "--save_strategy", "no", "--output_dir", str(output_dir), "--resume_from_checkpoint", "last"])
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == step + 2
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry][-2:] == [step + 1, step + 2]
