"""The paper's set-up in configs/: up to 50 epochs, the best checkpoint by CIDEr kept, and a global batch of 16
whatever the number of processes (run_vgd.py derives the per-device batch and the accumulation)."""

import glob
import logging
import os
from types import SimpleNamespace

import pytest
import yaml

import vgd_training.process as vgd_process
import run_vgd

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_CONFIGS = sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "vgd_gpt2_*.yaml")))


def derived(total, world_size, per_device_cap):
    args = SimpleNamespace(total_train_batch_size=total, world_size=world_size, per_device_train_batch_size=per_device_cap, gradient_accumulation_steps=1)
    vgd_process.apply_total_train_batch_size(args)
    return args.per_device_train_batch_size, args.gradient_accumulation_steps


@pytest.mark.parametrize(
    "world_size, cap, expected",
    [(1, 4, (4, 4)), (2, 4, (4, 2)), (4, 4, (4, 1)), (8, 4, (2, 1)), (16, 4, (1, 1)), (1, 16, (16, 1)), (2, 3, (2, 4)), (1, 5, (4, 4))],
)
def test_global_batch_of_16_on_any_number_of_processes(world_size, cap, expected):
    per_device, accumulation = derived(16, world_size, cap)
    assert (per_device, accumulation) == expected
    assert per_device * world_size * accumulation == 16 and per_device <= cap


def test_global_batch_is_logged_and_checked(caplog):
    with caplog.at_level(logging.WARNING, logger="run_vgd"):
        derived(16, 2, 4)
    assert "Global batch 16 = 4 per device x 2 processes x 2 gradient accumulation steps" in caplog.text
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        derived(16, 3, 4)
    assert derived(None, 3, 4) == (4, 1)  # not set: the given per-device batch and accumulation stay


@pytest.mark.parametrize("config", PAPER_CONFIGS, ids=os.path.basename)
def test_paper_configs_follow_the_paper(config, tmp_path):
    with open(config) as f:
        values = yaml.safe_load(f)
    values.pop("bf16")  # a GPU setting; this machine has no bf16 GPU
    cpu_config = tmp_path / os.path.basename(config)
    cpu_config.write_text(yaml.safe_dump(values))
    _, _, _, training_args = run_vgd.parse_arguments([str(cpu_config)])
    assert training_args.num_train_epochs == 50
    assert training_args.total_train_batch_size == 16
    assert training_args.eval_strategy == "epoch" and training_args.save_strategy == "epoch"
    assert training_args.load_best_model_at_end and training_args.metric_for_best_model == "CIDEr"
    assert training_args.greater_is_better  # CIDEr: higher is better
    for world_size in (1, 2, 4, 8):
        per_device, accumulation = derived(training_args.total_train_batch_size, world_size, training_args.per_device_train_batch_size)
        assert per_device * world_size * accumulation == 16
