"""VGDTrainer: loss weighting, invariance to batch x accumulation x processes, logging, resume, push."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from modeling_vgd_gpt2 import VGDGPT2ForDialogue
from avsd_dataset.collator import DataCollatorForVGD
from processing_vgd import VGDProcessor
from tests.local_hub import install_local_hub
from vgd_training import VGDTrainer, VGDTrainingArguments

DIM = 6
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(tiny_gpt2_dir, seed=0):
    processor = VGDProcessor.from_gpt2_pretrained(tiny_gpt2_dir, video_feature_dim=DIM, max_video_frames=8)
    torch.manual_seed(seed)
    model = VGDGPT2ForDialogue.from_gpt2_pretrained(
        tiny_gpt2_dir, processor=processor, max_video_regions=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0
    )
    return processor, model


def examples(processor, count=8, seed=0):
    rng = np.random.default_rng(seed)
    words = "a man opens the window woman sits on couch reading book red cup two people door kitchen".split()
    out = []
    for i in range(count):
        say = lambda n: " ".join(rng.choice(words, size=n))  # noqa: E731
        history = [(say(4) + " ?", say(5) + " .") for _ in range(i % 3)]
        video = rng.normal(size=(2 + i % 3, 1 + i % 2, DIM)).astype(np.float32)
        out.append(processor.process_example(video_features=video, caption=say(6), history=history, question=say(4) + " ?", answer=say(3 + i % 4) + " ."))
    return out


class FixedRows(torch.utils.data.Dataset):
    """Rows of one collated batch: corruption drawn once, so every way of batching sees the same data."""

    def __init__(self, batch):
        self.batch = batch

    def __len__(self):
        return self.batch["input_ids"].shape[0]

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.batch.items()}


def stack(rows):
    return {k: torch.stack([row[k] for row in rows]) for k in rows[0]}


def one_step(model, batch, output_dir, batch_size, accumulation):
    args = VGDTrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation,
        max_steps=1, optim="sgd", learning_rate=0.5, lr_scheduler_type="constant", warmup_steps=0, logging_steps=1,
        save_strategy="no", report_to="none", use_cpu=True, train_sampling_strategy="sequential", seed=0,
    )
    trainer = VGDTrainer(model=model, args=args, train_dataset=FixedRows(batch), data_collator=stack)
    trainer.train()
    return trainer


@pytest.fixture(scope="module")
def corrupted_batch(tiny_gpt2_dir):
    processor, _ = build(tiny_gpt2_dir)
    collator = DataCollatorForVGD(processor, mlm_probability=0.3, mvm_probability=0.3, mvt_probability=0.3, seed=1)
    batch = collator(examples(processor))
    assert (batch["mvt_labels"] == 0).any() and (batch["mlm_labels"] != -100).any() and batch["mvm_mask"].any()
    return batch


def test_compute_loss_is_the_weighted_sum_of_the_four_losses(tiny_gpt2_dir, corrupted_batch, tmp_path):
    processor, model = build(tiny_gpt2_dir)
    args = VGDTrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", mlm_loss_weight=0.5, mvt_loss_weight=2.0, response_context="masked"
    )  # the clean-context response is pinned in test_objectives_pinned.py
    trainer = VGDTrainer(model=model, args=args, processing_class=processor)
    model.eval()
    with torch.no_grad():
        out = model(**corrupted_batch)
        loss = trainer.compute_loss(model, dict(corrupted_batch))
    expected = 1.5 * out.response_loss + 0.5 * out.mlm_loss + out.mvm_loss + 2.0 * out.mvt_loss
    torch.testing.assert_close(loss, expected)
    assert all(value > 0 for value in (out.response_loss, out.mlm_loss, out.mvm_loss, out.mvt_loss))


def test_same_update_for_one_batch_of_8_and_4_x_2_accumulation(tiny_gpt2_dir, corrupted_batch, tmp_path):
    _, model_a = build(tiny_gpt2_dir)
    _, model_b = build(tiny_gpt2_dir)
    trainer_a = one_step(model_a, corrupted_batch, tmp_path / "a", batch_size=8, accumulation=1)
    trainer_b = one_step(model_b, corrupted_batch, tmp_path / "b", batch_size=4, accumulation=2)
    log_a, log_b = trainer_a.state.log_history[0], trainer_b.state.log_history[0]
    for key in ("loss", "response_loss", "mlm_loss", "mvm_loss", "mvt_loss"):
        assert log_a[key] == pytest.approx(log_b[key], rel=1e-4), key
    for (name, a), b in zip(model_a.named_parameters(), model_b.parameters()):
        torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-4, msg=name)


def test_objective_losses_are_logged_to_the_trainer_state(tiny_gpt2_dir, corrupted_batch, tmp_path):
    _, model = build(tiny_gpt2_dir)
    trainer = one_step(model, corrupted_batch, tmp_path, batch_size=8, accumulation=1)
    log = trainer.state.log_history[0]
    assert {"loss", "response_loss", "mlm_loss", "mvm_loss", "mvt_loss"} <= set(log)
    assert log["loss"] == pytest.approx(log["response_loss"] + log["mlm_loss"] + log["mvm_loss"] + log["mvt_loss"], rel=1e-4)


DDP_SCRIPT = """
import os, sys, torch
sys.path.insert(0, {repo!r})
from tests.test_trainer import build, one_step
batch = torch.load({batch!r})
_, model = build({gpt2!r})
trainer = one_step(model, batch, {out!r}, batch_size=4, accumulation=1)
rank = trainer.args.process_index
print(f"process {{rank}} of {{trainer.args.world_size}} trained {{trainer.state.global_step}} step(s)", flush=True)
if rank == 0:
    torch.save({{"state": model.state_dict(), "log": trainer.state.log_history[0]}}, {result!r})
trainer.accelerator.wait_for_everyone()
# Leave without tearing the process group down: its C++ threads sometimes abort a worker at exit on a loaded machine
# ("terminate called without an active exception", SIGABRT after both processes had trained and the result was
# saved: CI, 2026-12-04). Everything this test checks is written and flushed by now.
sys.stdout.flush()
os._exit(0)
"""


def test_two_processes_of_4_match_one_batch_of_8(tiny_gpt2_dir, corrupted_batch, tmp_path):
    torch.save(corrupted_batch, tmp_path / "batch.pt")
    script = tmp_path / "ddp_step.py"
    script.write_text(DDP_SCRIPT.format(repo=REPO_ROOT, batch=str(tmp_path / "batch.pt"), gpt2=tiny_gpt2_dir, out=str(tmp_path / "ddp"), result=str(tmp_path / "ddp.pt")))
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517", str(script),
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "process 0 of 2 trained 1 step(s)" in result.stdout and "process 1 of 2 trained 1 step(s)" in result.stdout

    _, model = build(tiny_gpt2_dir)
    single = one_step(model, corrupted_batch, tmp_path / "single", batch_size=8, accumulation=1)
    ddp = torch.load(tmp_path / "ddp.pt")
    for key in ("loss", "response_loss", "mlm_loss", "mvm_loss", "mvt_loss"):
        assert ddp["log"][key] == pytest.approx(single.state.log_history[0][key], rel=1e-4), key
    for name, value in model.state_dict().items():
        torch.testing.assert_close(ddp["state"][name], value, atol=2e-6, rtol=1e-4, msg=name)


def test_resume_from_a_checkpoint_continues_the_same_run(tiny_gpt2_dir, tmp_path):
    processor, _ = build(tiny_gpt2_dir)
    data = examples(processor, count=16)
    collator = DataCollatorForVGD(processor, mlm_probability=0.0, mvm_probability=0.0, mvt_probability=0.0)

    def run(output_dir, max_steps, resume=None):
        _, model = build(tiny_gpt2_dir)
        args = VGDTrainingArguments(
            output_dir=str(output_dir), per_device_train_batch_size=4, max_steps=max_steps, save_steps=2, save_strategy="steps",
            learning_rate=1e-3, warmup_steps=1, report_to="none", use_cpu=True, seed=0, logging_steps=1,
        )
        trainer = VGDTrainer(model=model, args=args, train_dataset=data, data_collator=collator, processing_class=processor)
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    straight = run(tmp_path / "straight", max_steps=4)
    run(tmp_path / "interrupted", max_steps=2)
    resumed = run(tmp_path / "interrupted", max_steps=4, resume=str(tmp_path / "interrupted" / "checkpoint-2"))
    assert resumed.state.global_step == 4
    for (name, a), b in zip(straight.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, msg=name)


def test_push_to_hub_offline_then_load_in_a_fresh_process(tiny_gpt2_dir, tmp_path, monkeypatch):
    hub = install_local_hub(monkeypatch, str(tmp_path / "hub"))
    processor, model = build(tiny_gpt2_dir)
    data = examples(processor, count=8)
    args = VGDTrainingArguments(
        output_dir=str(tmp_path / "run"), per_device_train_batch_size=4, max_steps=2, save_strategy="no", report_to="none",
        use_cpu=True, push_to_hub=True, hub_model_id="test-user/vgd-tiny", hub_strategy="end",
    )
    trainer = VGDTrainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorForVGD(processor), processing_class=processor)
    trainer.train()
    info = trainer.push_to_hub(commit_message="tiny run", test_metrics={"CIDEr": 0.5, "Bleu_4": 0.25})
    assert str(info.commit_url).startswith("https://huggingface.co/test-user/vgd-tiny/commit/")
    pushed = tmp_path / "hub" / "test-user" / "vgd-tiny"
    for name in ("model.safetensors", "config.json", "modeling_vgd_gpt2.py", "configuration_vgd_gpt2.py", "processing_vgd.py", "processor_config.json", "README.md"):
        assert (pushed / name).exists(), name
    card = (pushed / "README.md").read_text()
    assert "| CIDEr | 0.500 |" in card and 'AutoModelForCausalLM.from_pretrained("test-user/vgd-tiny", trust_remote_code=True)' in card
    # the card is the Trainer's (metadata, hyperparameters, versions) with our sections filled in, no local paths
    assert "More information needed" not in card and "### Training hyperparameters" in card and "- Transformers " in card
    assert str(tmp_path) not in card and "SchedulerType." not in card and "np.load(" in card

    video = np.random.default_rng(0).normal(size=(3, 1, DIM)).astype(np.float32)
    inputs = processor(video_features=[video], caption=["a man opens the window"], history=[[]], question=["what does he do ?"], return_tensors="pt")
    model.eval()
    expected = model.generate(**inputs, max_new_tokens=4, do_sample=False, num_beams=2)
    np.save(tmp_path / "video.npy", video)
    script = textwrap.dedent(
        f"""
        import sys, numpy as np
        from transformers import AutoModelForCausalLM, AutoProcessor
        processor = AutoProcessor.from_pretrained({str(pushed)!r}, trust_remote_code=True)
        model = AutoModelForCausalLM.from_pretrained({str(pushed)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        assert type(processor).__module__.startswith("transformers_modules."), type(processor).__module__
        video = np.load({str(tmp_path / "video.npy")!r})
        inputs = processor(video_features=[video], caption=["a man opens the window"], history=[[]], question=["what does he do ?"], return_tensors="pt")
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False, num_beams=2)
        print(out.tolist())
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected.tolist()
    assert hub.commits


NONFINITE_FLAG_ON_SHARDS = """
import os, torch, torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor
from vgd_training.trainer import local_nonfinite_gradient_flag
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29613")
dist.init_process_group("gloo", rank=0, world_size=1)
mesh = init_device_mesh("cpu", (1,))
weight = torch.nn.Parameter(distribute_tensor(torch.randn(4, 3), mesh, [Shard(0)]))  # an FSDP2-style parameter
optimizer = torch.optim.AdamW([weight])
flags = [local_nonfinite_gradient_flag(optimizer)]
weight.grad = distribute_tensor(torch.randn(4, 3), mesh, [Shard(0)])
flags.append(float(local_nonfinite_gradient_flag(optimizer)))
grad = torch.randn(4, 3)
grad[1, 2] = float("inf")
weight.grad = distribute_tensor(grad, mesh, [Shard(0)])
flags.append(float(local_nonfinite_gradient_flag(optimizer)))
print(flags)
dist.destroy_process_group()
"""


def test_the_nonfinite_gradient_flag_reads_plain_and_sharded_gradients():
    """The check behind VGDTrainer's skipped updates: 1.0 for an inf / NaN element, 0.0 otherwise, None without any
    gradient, and on FSDP2's DTensor gradients it reads the local shard (in a subprocess: it starts a gloo group)."""
    from vgd_training.trainer import local_nonfinite_gradient_flag

    first, second = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2))
    optimizer = torch.optim.AdamW([first, second])
    assert local_nonfinite_gradient_flag(optimizer) is None
    first.grad, second.grad = torch.ones(3), torch.full((2, 2), 1e30)  # large but finite elements: not flagged
    assert float(local_nonfinite_gradient_flag(optimizer)) == 0.0
    second.grad[0, 1] = float("nan")
    assert float(local_nonfinite_gradient_flag(optimizer)) == 1.0
    result = subprocess.run([sys.executable, "-c", NONFINITE_FLAG_ON_SHARDS], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[None, 0.0, 1.0]"
