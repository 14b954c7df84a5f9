"""The output-folder lock held for a whole run, the same folder check for every way of resuming, and a failed
start that releases the folder."""

import fcntl
import json
import os
import socket
import subprocess
import sys

import pytest

import run_vgd
from tests.test_run_vgd import TINY
from vgd_training.output_folder import LOCK_NAME, OutputFolderInUseError


class Stop(Exception):
    """Raised in place of the demo data preparation: the run got past the folder check."""


@pytest.fixture
def stop_after_folder_check(monkeypatch):
    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(run_vgd, "prepare_demo_data", stop)


@pytest.mark.parametrize("resume", [[], ["--resume_from_checkpoint", "last"]], ids=["new run", "resume last"])
def test_a_run_into_a_folder_locked_by_a_live_run_is_refused_naming_it(tmp_path, stop_after_folder_check, resume):
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    with open(output_dir / LOCK_NAME, "w") as held:  # another run, alive, holding the lock
        held.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "2024-01-01 00:00:00"}))
        held.flush()
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(OutputFolderInUseError) as raised:
            run_vgd.main(TINY + ["--max_steps", "1", "--output_dir", str(output_dir), *resume])
    assert str(raised.value) == (
        f"the output folder {output_dir} is in use by another run (PID {os.getpid()} on host {socket.gethostname()}, "
        f"started 2024-01-01 00:00:00; lock file {output_dir / LOCK_NAME}). Wait for that run to end, stop it, or choose another --output_dir."
    )


def test_a_lock_left_by_a_killed_run_is_reported_and_taken_over(tmp_path, stop_after_folder_check, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    (output_dir / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "2024-01-01 00:00:00"}))
    with pytest.raises(Stop):
        run_vgd.main(TINY + ["--max_steps", "1", "--output_dir", str(output_dir)])
    assert (
        f"was locked by an earlier run (PID {dead.pid} on host {socket.gethostname()}, started 2024-01-01 00:00:00) that ended "
        "without releasing it (it is no longer running: killed?); taking it over." in caplog.text
    )
    assert not (output_dir / LOCK_NAME).exists()  # released when the run ended


def test_a_run_failing_before_its_first_step_releases_the_folder_for_the_corrected_rerun(tmp_path, monkeypatch):
    output_dir = tmp_path / "run"
    args = TINY + ["--do_train", "--max_steps", "1", "--save_strategy", "no", "--output_dir", str(output_dir)]

    def broken(*a, **k):
        raise RuntimeError("a mistake in the first command")

    with monkeypatch.context() as patch:
        patch.setattr(run_vgd, "load_processor_and_model", broken)
        with pytest.raises(RuntimeError, match="a mistake"):
            run_vgd.main(args)
    assert not (output_dir / "_run_vgd.json").exists() and not (output_dir / LOCK_NAME).exists()
    run_vgd.main(args)  # the corrected rerun is accepted
    assert (output_dir / "model.safetensors").exists() and not (output_dir / LOCK_NAME).exists()


def test_an_explicit_checkpoint_of_another_run_is_refused_in_a_folder_with_results(tmp_path, stop_after_folder_check):
    checkpoint = tmp_path / "a" / "checkpoint-3"
    checkpoint.mkdir(parents=True)
    (checkpoint / "vgd_state.json").write_text(json.dumps({"run_id": "run-a", "global_step": 3}))
    output_dir = tmp_path / "b"
    output_dir.mkdir()
    (output_dir / "_run_vgd.json").write_text(json.dumps({"run_id": "run-b"}))
    (output_dir / "trainer_state.json").write_text("{}")
    args = TINY + ["--max_steps", "5", "--output_dir", str(output_dir), "--resume_from_checkpoint", str(checkpoint)]
    with pytest.raises(FileExistsError) as raised:
        run_vgd.main(args)
    assert str(raised.value) == (
        f"--resume_from_checkpoint {checkpoint} is a checkpoint of another run (run run-a), but the output folder "
        f"{output_dir} holds the results of run run-b (_run_vgd.json, trainer_state.json). Pass --overwrite_output_dir "
        "to replace them, or choose another --output_dir."
    )
    assert (output_dir / "trainer_state.json").exists()
    with pytest.raises(Stop):  # with --overwrite_output_dir the run is accepted and starts...
        run_vgd.main(args + ["--overwrite_output_dir"])
    # ...and the earlier results stay until the new run has a model to put in their place (issue 22, item 7)
    assert (output_dir / "trainer_state.json").exists()
