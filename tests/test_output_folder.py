"""run_vgd.py guards its output folder: unwritable or full folders are refused before training, a folder holding
another run's results is refused (or replaced on request), and a folder that fails during or after training loses
nothing: the newest trained state goes to a rescue folder and the error says where.

Read-only folders are made with a read-only bind mount (we run as root, and root ignores permission bits); where
mounting is not allowed, a non-root user gets a chmod-ed folder and root a path below a regular file."""

import contextlib
import json
import os
import subprocess

import pytest
from safetensors import safe_open

import run_vgd
from vgd_training import VGDTrainer

TINY = [
    "--demo_num_train_dialogs", "24", "--demo_num_valid_dialogs", "4", "--demo_num_test_dialogs", "8",
    "--demo_n_layer", "1", "--demo_n_embd", "32", "--demo_n_head", "2", "--demo_vocab_size", "300",
    "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8", "--do_train",
]


def _mount(*args) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _can_bind_mount(tmp_path) -> bool:
    probe = tmp_path / "mount-probe"
    probe.mkdir()
    if not _mount("--bind", str(probe), str(probe)):
        return False
    subprocess.run(["umount", str(probe)], capture_output=True)
    return True


@contextlib.contextmanager
def bind_mount(path):
    """`path` bind-mounted onto itself, so it can be remounted read-only; unmounted at the end."""
    assert _mount("--bind", str(path), str(path))
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def make_read_only(path):
    assert _mount("-o", "remount,bind,ro", str(path), str(path))


@pytest.fixture
def unwritable_dir(tmp_path):
    """A folder no file can be written into, whoever we are."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if _can_bind_mount(tmp_path):
        with bind_mount(folder):
            make_read_only(folder)
            yield folder
    elif os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
    else:
        (tmp_path / "a-file").write_text("")
        yield tmp_path / "a-file" / "output"


def test_read_only_output_folder_is_refused_before_training(unwritable_dir, monkeypatch):
    trained = []
    monkeypatch.setattr(VGDTrainer, "train", lambda self, *a, **k: trained.append(1))
    with pytest.raises(OSError, match=f"output folder {unwritable_dir}"):
        run_vgd.main(TINY + ["--max_steps", "2", "--output_dir", str(unwritable_dir)])
    assert not trained


def test_full_output_folder_is_refused_before_training(tmp_path, monkeypatch):
    trained = []
    monkeypatch.setattr(VGDTrainer, "train", lambda self, *a, **k: trained.append(1))
    folder = tmp_path / "full"
    folder.mkdir()
    if _can_bind_mount(tmp_path):
        assert _mount("-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder))
        cleanup = lambda: subprocess.run(["umount", "-l", str(folder)], capture_output=True)  # noqa: E731
    else:  # no mounting allowed here: the disk reports 100 kB free
        import shutil

        real = shutil.disk_usage
        monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=100_000))
        cleanup = lambda: None  # noqa: E731
    try:
        with pytest.raises(OSError, match=rf"output folder {folder} has 0\.\d MiB free, but this run needs about"):
            run_vgd.main(TINY + ["--max_steps", "2", "--output_dir", str(folder)])
    finally:
        cleanup()
    assert not trained


def test_folder_failing_after_the_first_step_keeps_the_trained_state_in_a_rescue_folder(tmp_path, monkeypatch):
    """The output folder turns read-only during training (a checkpoint save fails, then the emergency save there)."""
    rescue = tmp_path / "rescue"
    monkeypatch.setenv("VGD_RESCUE_DIR", str(rescue))
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    original_step = VGDTrainer.training_step
    mounted = _can_bind_mount(tmp_path)

    def step_then_fail_the_folder(self, *args, **kwargs):
        loss = original_step(self, *args, **kwargs)
        if self.state.global_step == 1:  # after the first optimizer step
            if mounted:
                make_read_only(output_dir)
            else:
                monkeypatch.setattr(VGDTrainer, "save_model", _failing_save_under(str(output_dir)))
        return loss

    monkeypatch.setattr(VGDTrainer, "training_step", step_then_fail_the_folder)
    with bind_mount(output_dir) if mounted else contextlib.nullcontext():
        with pytest.raises(OSError) as error:
            run_vgd.main(TINY + ["--max_steps", "3", "--save_strategy", "steps", "--save_steps", "2", "--output_dir", str(output_dir)])
    saved = rescue / f"out-{json.loads((output_dir / '_run_vgd.json').read_text())['run_id']}" / "checkpoint-2"
    assert (saved / "trainer_state.json").exists() and (saved / "optimizer.pt").exists()
    assert json.loads((saved / "trainer_state.json").read_text())["global_step"] == 2
    with safe_open(str(saved / "model.safetensors"), "pt") as f:
        assert len(list(f.keys())) > 10
    assert "Read-only file system" in str(error.value) or "simulated" in str(error.value)
    assert error.value.__notes__ == [f"Training stopped at step 2; the trained state of that step is saved in {saved} (continue with --resume_from_checkpoint {saved})"]


def test_final_save_failing_keeps_the_model_in_a_rescue_folder_and_says_where(tmp_path, monkeypatch):
    rescue = tmp_path / "rescue"
    monkeypatch.setenv("VGD_RESCUE_DIR", str(rescue))
    output_dir = tmp_path / "out"
    original_save = VGDTrainer.save_model

    def save_then_fail(self, folder=None, _internal_call=False):
        if not _internal_call and os.path.abspath(folder or self.args.output_dir) == str(output_dir):  # the final save
            raise OSError(28, "No space left on device")
        return original_save(self, folder, _internal_call=_internal_call)

    monkeypatch.setattr(VGDTrainer, "save_model", save_then_fail)
    with pytest.raises(OSError, match=r"saving the trained model into .*out failed .*saved into .*rescue.*checkpoint-2"):
        run_vgd.main(TINY + ["--max_steps", "2", "--output_dir", str(output_dir)])
    [saved] = list(rescue.glob("out-*/checkpoint-2"))
    assert json.loads((saved / "trainer_state.json").read_text())["global_step"] == 2


def _failing_save_under(folder):
    original = VGDTrainer.save_model

    def save(self, output_dir=None, _internal_call=False):
        if os.path.abspath(output_dir or self.args.output_dir).startswith(folder):
            raise OSError(30, "simulated: Read-only file system")
        return original(self, output_dir, _internal_call=_internal_call)

    return save


def test_a_used_folder_is_refused_then_replaced_with_overwrite_output_dir(tmp_path):
    output_dir = tmp_path / "out"
    run_vgd.main(TINY + ["--max_steps", "1", "--output_dir", str(output_dir)])
    (output_dir / "test_result.json").write_text("{}")  # e.g. predictions of that earlier run
    with pytest.raises(FileExistsError, match=r"holds the results of another run .*--overwrite_output_dir.*--resume_from_checkpoint last"):
        run_vgd.main(TINY + ["--max_steps", "2", "--output_dir", str(output_dir)])
    first_run = json.loads((output_dir / "_run_vgd.json").read_text())["run_id"]
    run_vgd.main(TINY + ["--max_steps", "2", "--output_dir", str(output_dir), "--overwrite_output_dir"])
    assert json.loads((output_dir / "_run_vgd.json").read_text())["run_id"] != first_run
    assert not (output_dir / "test_result.json").exists()  # nothing of the earlier run is left beside the new model
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 2


def test_demo_runs_replace_their_own_output_and_the_smoke_run_has_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, _, _, training_args = run_vgd.parse_arguments([])
    assert training_args.output_dir == os.path.join("outputs", "demo")
    _, _, _, training_args = run_vgd.parse_arguments(["--max_steps", "3"])
    assert training_args.output_dir == os.path.join("outputs", "smoke")
    run_vgd.main(TINY + ["--max_steps", "1"])
    run_vgd.main(TINY + ["--max_steps", "2"])  # a demo run replaces an earlier demo run's output
    assert json.loads((tmp_path / "outputs" / "smoke" / "trainer_state.json").read_text())["global_step"] == 2
    assert not (tmp_path / "outputs" / "demo").exists()
    assert sorted(os.listdir(tmp_path / "outputs")) == ["demo-cache", "smoke"]


def test_run_vgd_resumed_after_a_kill_ends_bit_identical(tmp_path, monkeypatch):
    """End to end with the defaults (all four objectives, length-grouped batches) plus accumulation 2 and dropout:
    a run killed after step 3 and resumed with `--resume_from_checkpoint last` ends as the uninterrupted run."""
    import torch
    from safetensors.torch import load_file

    args = TINY + ["--max_steps", "6", "--save_strategy", "steps", "--save_steps", "2", "--gradient_accumulation_steps", "2",
                   "--per_device_train_batch_size", "4", "--demo_dropout", "0.1", "--logging_steps", "1"]
    run_vgd.main(args + ["--output_dir", str(tmp_path / "straight")])

    original_step = VGDTrainer.training_step

    def killed_after_step_3(self, *a, **k):
        if self.state.global_step == 3:
            raise KeyboardInterrupt
        return original_step(self, *a, **k)

    monkeypatch.setattr(VGDTrainer, "training_step", killed_after_step_3)
    with pytest.raises(KeyboardInterrupt):
        run_vgd.main(args + ["--output_dir", str(tmp_path / "killed")])
    monkeypatch.setattr(VGDTrainer, "training_step", original_step)
    assert (tmp_path / "killed" / "checkpoint-3").is_dir()  # the emergency checkpoint
    run_vgd.main(args + ["--output_dir", str(tmp_path / "killed"), "--resume_from_checkpoint", "last"])

    straight, resumed = load_file(tmp_path / "straight" / "model.safetensors"), load_file(tmp_path / "killed" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
    logs = [json.loads((tmp_path / name / "trainer_state.json").read_text())["log_history"] for name in ("straight", "killed")]
    keys = ("step", "loss", "response_loss", "mlm_loss", "mvm_loss", "mvt_loss", "grad_norm")
    assert [[{k: log[k] for k in keys} for log in history if "loss" in log] for history in logs] == [[{k: log[k] for k in keys} for log in logs[0] if "loss" in log]] * 2


def test_a_failing_demo_run_leaves_the_earlier_demo_model_in_place(tmp_path, monkeypatch):
    """Issue 22, item 7: the earlier demo model is replaced only once the new run has a model to put in its place
    (written beside, then swapped), never at start-up; a run that fails while loading its model changes nothing."""
    monkeypatch.chdir(tmp_path)
    run_vgd.main(TINY + ["--max_steps", "1"])
    smoke = tmp_path / "outputs" / "smoke"
    before = {name: (smoke / name).read_bytes() for name in os.listdir(smoke) if (smoke / name).is_file()}
    assert {"config.json", "model.safetensors", "_run_vgd.json"} <= set(before)
    broken = tmp_path / "not-a-gpt2"
    broken.mkdir()  # a local folder without a model: fails when loaded, after the output folder was claimed
    with pytest.raises(Exception):
        run_vgd.main(TINY + ["--max_steps", "1", "--model_name_or_path", str(broken)])
    after = {name: (smoke / name).read_bytes() for name in os.listdir(smoke) if (smoke / name).is_file()}
    assert after == before  # same files, same bytes, the earlier run's claim included
    from modeling_vgd_gpt2 import VGDGPT2ForDialogue

    VGDGPT2ForDialogue.from_pretrained(str(smoke))  # the chat can still load it
    run_vgd.main(TINY + ["--max_steps", "2"])  # a run that trains replaces it
    assert json.loads((smoke / "_run_vgd.json").read_text())["run_id"] != json.loads(before["_run_vgd.json"])["run_id"]
    assert json.loads((smoke / "trainer_state.json").read_text())["global_step"] == 2
    assert not [name for name in os.listdir(smoke) if name.startswith("tmp-")]  # no staging folder left


def test_an_overwritten_folder_keeps_its_checkpoints_until_the_new_run_saves_one(tmp_path):
    output_dir = tmp_path / "out"
    run_vgd.main(TINY + ["--max_steps", "2", "--save_strategy", "steps", "--save_steps", "2", "--output_dir", str(output_dir)])
    assert (output_dir / "checkpoint-2").is_dir()
    seen = []
    original = VGDTrainer._save_checkpoint

    def save_checkpoint(self, model, trial):
        seen.append(sorted(os.listdir(output_dir)))
        return original(self, model, trial)

    VGDTrainer._save_checkpoint = save_checkpoint
    try:
        run_vgd.main(TINY + ["--max_steps", "1", "--save_strategy", "steps", "--save_steps", "1", "--output_dir", str(output_dir), "--overwrite_output_dir"])
    finally:
        VGDTrainer._save_checkpoint = original
    assert "checkpoint-2" in seen[0] and "model.safetensors" in seen[0]  # the earlier run's results were there until then
    assert not (output_dir / "checkpoint-2").exists() and (output_dir / "checkpoint-1").is_dir()
