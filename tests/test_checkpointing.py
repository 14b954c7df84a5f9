"""Checkpoints never lose or corrupt work: exact resume with the default settings, atomic saves, and
`resume_from_checkpoint="last"` skipping half-written or foreign checkpoints."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from vgd_training.checkpointing import CHECKPOINT_INFO_NAME, find_last_complete_checkpoint
from modeling_vgd_gpt2 import VGDGPT2ForDialogue
from avsd_dataset.collator import DataCollatorForVGD
from processing_vgd import VGDProcessor
from vgd_training import VGDTrainer, VGDTrainingArguments

DIM = 6


class LengthsDataset(torch.utils.data.Dataset):
    """Unbatched processor outputs with a `lengths` attribute, so the trainer batches them by length (the default)."""

    def __init__(self, items):
        self.items = items
        self.lengths = [len(item["input_ids"]) + int(np.prod(item["video_features"].shape[:2])) for item in items]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def build(tiny_gpt2_dir):
    processor = VGDProcessor.from_gpt2_pretrained(tiny_gpt2_dir, video_feature_dim=DIM, max_video_frames=8)
    torch.manual_seed(0)
    # dropout on: its RNG must be restored too
    model = VGDGPT2ForDialogue.from_gpt2_pretrained(tiny_gpt2_dir, processor=processor, max_video_regions=4, resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
    return processor, model


def dataset(processor, count=20, seed=0):
    rng = np.random.default_rng(seed)
    words = "a man opens the window woman sits on couch reading book red cup two people door kitchen".split()
    items = []
    for i in range(count):
        say = lambda n: " ".join(rng.choice(words, size=n))  # noqa: E731
        history = [(say(4) + " ?", say(5) + " .") for _ in range(i % 3)]
        video = rng.normal(size=(2 + i % 3, 1 + i % 2, DIM)).astype(np.float32)
        items.append(processor.process_example(video_features=video, caption=say(3 + i % 5), history=history, question=say(4) + " ?", answer=say(3 + i % 4) + " ."))
    return LengthsDataset(items)


def make_trainer(tiny_gpt2_dir, output_dir, max_steps, save_steps=2, run_id="run-a"):
    processor, model = build(tiny_gpt2_dir)
    # the defaults of the objectives (all four on), length-grouped sampling (the default), accumulation 2
    collator = DataCollatorForVGD(processor, seed=0)
    args = VGDTrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=max_steps,
        save_steps=save_steps, save_strategy="steps", learning_rate=2e-3, warmup_steps=1, report_to="none",
        use_cpu=True, seed=0, logging_steps=1, disable_tqdm=True,
    )
    assert args.train_sampling_strategy == "group_by_length"
    return VGDTrainer(model=model, args=args, train_dataset=dataset(processor), data_collator=collator, processing_class=processor, run_id=run_id)


def train_logs(trainer):
    return [log for log in trainer.state.log_history if "loss" in log]


@pytest.fixture(scope="module")
def straight_run(tiny_gpt2_dir, tmp_path_factory):
    """12 optimizer steps = 2.4 epochs of 20 items in batches of 2 x 2, a checkpoint every 2 steps."""
    output_dir = tmp_path_factory.mktemp("straight")
    trainer = make_trainer(tiny_gpt2_dir, output_dir, max_steps=12)
    trainer.train()
    return output_dir, trainer


@pytest.mark.parametrize("step", [4, 6, 10])  # inside epoch 0, mid epoch 1, inside epoch 2
def test_resume_from_any_checkpoint_ends_bit_identical(tiny_gpt2_dir, straight_run, tmp_path, step):
    straight_dir, straight = straight_run
    shutil.copytree(straight_dir / f"checkpoint-{step}", tmp_path / f"checkpoint-{step}")
    resumed = make_trainer(tiny_gpt2_dir, tmp_path, max_steps=12)
    resumed.train(resume_from_checkpoint="last")
    assert resumed.state.global_step == 12
    for (name, a), b in zip(straight.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(a, b), name
    expected = [log for log in train_logs(straight) if log["step"] > step]
    got = [log for log in train_logs(resumed) if log["step"] > step]  # the history before `step` comes from the checkpoint
    assert len(got) == 12 - step
    keys = ("loss", "response_loss", "mlm_loss", "mvm_loss", "mvt_loss", "grad_norm", "learning_rate", "step")
    assert [{k: log[k] for k in keys} for log in got] == [{k: log[k] for k in keys} for log in expected]


def test_component_losses_after_a_resume_are_averaged_over_the_logging_interval(tiny_gpt2_dir, straight_run, tmp_path):
    straight_dir, straight = straight_run
    shutil.copytree(straight_dir / "checkpoint-8", tmp_path / "checkpoint-8")
    resumed = make_trainer(tiny_gpt2_dir, tmp_path, max_steps=12)
    resumed.train(resume_from_checkpoint="last")
    first = [log for log in train_logs(resumed) if log["step"] > 8][0]
    assert first["step"] == 9
    weighted_sum = first["response_loss"] + first["mlm_loss"] + first["mvm_loss"] + first["mvt_loss"]
    assert first["loss"] == pytest.approx(weighted_sum, rel=1e-3)  # not divided by the global step (9)


def test_checkpoints_are_complete_and_record_the_run(straight_run):
    straight_dir, _ = straight_run
    names = sorted(os.listdir(straight_dir))
    assert [n for n in names if n.startswith("checkpoint-")] == [f"checkpoint-{n}" for n in (10, 12, 2, 4, 6, 8)]
    assert not [n for n in names if n.startswith("tmp-")]
    info = json.loads((straight_dir / "checkpoint-4" / CHECKPOINT_INFO_NAME).read_text())
    assert info["run_id"] == "run-a" and info["global_step"] == 4 and info["collator"]["generator"] is not None
    assert oct(os.stat(straight_dir / "checkpoint-4" / "model.safetensors").st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_last_skips_half_written_missing_state_and_foreign_checkpoints(straight_run, tmp_path):
    straight_dir, _ = straight_run
    for step in (2, 4, 6, 8, 10):
        shutil.copytree(straight_dir / f"checkpoint-{step}", tmp_path / f"checkpoint-{step}")
    weights = tmp_path / "checkpoint-10" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # killed while writing the weights
    (tmp_path / "checkpoint-8" / "trainer_state.json").unlink()  # killed before the trainer state
    info = json.loads((tmp_path / "checkpoint-6" / CHECKPOINT_INFO_NAME).read_text())
    (tmp_path / "checkpoint-6" / CHECKPOINT_INFO_NAME).write_text(json.dumps({**info, "run_id": "older-run"}))
    shutil.copytree(straight_dir / "checkpoint-12", tmp_path / "tmp-checkpoint-12")  # a save that never finished
    path, skipped = find_last_complete_checkpoint(str(tmp_path), "run-a")
    assert path == str(tmp_path / "checkpoint-4")
    reasons = {os.path.basename(folder): reason for folder, reason in skipped}
    assert set(reasons) == {"tmp-checkpoint-12", "checkpoint-10", "checkpoint-8", "checkpoint-6"}
    assert "model.safetensors is unreadable or half-written" in reasons["checkpoint-10"]
    assert "trainer_state.json is missing" in reasons["checkpoint-8"]
    assert "another run (older-run" in reasons["checkpoint-6"]
    assert "unfinished save" in reasons["tmp-checkpoint-12"]


def test_a_killed_save_leaves_the_previous_checkpoint_resumable(tiny_gpt2_dir, tmp_path, monkeypatch):
    trainer = make_trainer(tiny_gpt2_dir, tmp_path, max_steps=4)
    original = VGDTrainer._save_rng_state

    def killed(self, output_dir):
        if self.state.global_step == 4:
            raise KeyboardInterrupt("killed while saving")
        return original(self, output_dir)

    monkeypatch.setattr(VGDTrainer, "_save_rng_state", killed)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    # the Trainer's own save went into the staging folder tmp-checkpoint-4/checkpoint-4 and was never renamed
    assert (tmp_path / "tmp-checkpoint-4" / "checkpoint-4" / "model.safetensors").exists() and not (tmp_path / "checkpoint-4").exists()
    monkeypatch.setattr(VGDTrainer, "_save_rng_state", original)
    resumed = make_trainer(tiny_gpt2_dir, tmp_path, max_steps=4)
    assert resumed.last_complete_checkpoint() == str(tmp_path / "checkpoint-2")
    resumed.train(resume_from_checkpoint="last")
    assert resumed.state.global_step == 4 and (tmp_path / "checkpoint-4" / "trainer_state.json").exists()
    assert not (tmp_path / "tmp-checkpoint-4").exists()


def test_no_complete_checkpoint_is_a_clear_error(tiny_gpt2_dir, straight_run, tmp_path):
    straight_dir, _ = straight_run
    shutil.copytree(straight_dir / "checkpoint-2", tmp_path / "checkpoint-2")
    trainer = make_trainer(tiny_gpt2_dir, tmp_path, max_steps=4, run_id="run-b")
    with pytest.raises(ValueError, match=r"no complete checkpoint of this run .*checkpoint-2: it belongs to another run \(run-a"):
        trainer.train(resume_from_checkpoint="last")


def test_losses_logged_after_a_ctrl_c_mid_accumulation_window_equal_the_uninterrupted_run(tiny_gpt2_dir, tmp_path, monkeypatch):
    """Issue 22, item 6: Ctrl-C in the second micro-batch of step 6 (logging every 4 steps), the emergency checkpoint
    of step 5, then a resume: the losses logged at steps 8 and 12 are those of the uninterrupted run (the rescue
    state carries the logging window's loss accumulators, not only the weights)."""

    def logging_trainer(output_dir):
        trainer = make_trainer(tiny_gpt2_dir, output_dir, max_steps=12, save_steps=100)
        trainer.args.logging_steps = 4
        return trainer

    straight = logging_trainer(tmp_path / "straight")
    straight.train()
    interrupted = logging_trainer(tmp_path / "interrupted")
    calls = []
    original = VGDTrainer.training_step

    def training_step(self, *args, **kwargs):
        calls.append(self.state.global_step)
        if len(calls) == 2 * 5 + 2:  # step 6's second micro-batch: its first one is already in the loss sum
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(VGDTrainer, "training_step", training_step)
    with pytest.raises(KeyboardInterrupt):
        interrupted.train()
    assert interrupted.state.global_step == 5
    where = interrupted.save_emergency_checkpoint()
    monkeypatch.setattr(VGDTrainer, "training_step", original)
    assert where.endswith("checkpoint-5")
    resumed = logging_trainer(tmp_path / "interrupted")
    resumed.train(resume_from_checkpoint="last")
    for (name, a), b in zip(straight.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(a, b), name
    keys = ("step", "loss", "response_loss", "mlm_loss", "mvm_loss", "mvt_loss")
    expected = [{k: log[k] for k in keys} for log in train_logs(straight) if log["step"] > 5]
    got = [{k: log[k] for k in keys} for log in train_logs(resumed) if log["step"] > 5]
    assert [log["step"] for log in got] == [8, 12]
    assert got == expected


def test_last_in_a_folder_that_names_no_run_says_whose_checkpoint_it_continues(tiny_gpt2_dir, straight_run, tmp_path, caplog):
    """Issue 22, item 2: a folder without _run_vgd.json resuming with "last" took any run's checkpoint and logged it as
    "of this run"; now it says the folder names no run and which run the checkpoint continues."""
    straight_dir, _ = straight_run
    shutil.copytree(straight_dir / "checkpoint-4", tmp_path / "checkpoint-4")
    trainer = make_trainer(tiny_gpt2_dir, tmp_path, max_steps=4, run_id=None)
    with caplog.at_level("INFO"):
        path = trainer.last_complete_checkpoint()
    assert path == str(tmp_path / "checkpoint-4")
    messages = [record.getMessage() for record in caplog.records if "Resuming from" in record.getMessage()]
    assert len(messages) == 1 and "the folder names no run, so this continues the checkpoint's run run-a" in messages[0]
    assert "of this run" not in messages[0]
