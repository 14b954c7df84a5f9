"""What issue 24 changed to make the demo cheaper must not change what it learns: training turns processed once and
kept in memory give the same run, bit for bit; `--eval_max_generation_examples 0` skips only the validation
decoding; the demo records its time per stage."""

import json
import time

import numpy as np
from safetensors.numpy import load_file

import avsd_dataset.demo as avsd_demo
import avsd_dataset.turns as avsd_turns
import vgd_training.process as vgd_process
import run_vgd
from test_run_vgd import TINY


def _train(tmp_path, name, extra):
    output_dir = tmp_path / name
    run_vgd.main(TINY + ["--max_steps", "6", "--num_train_epochs", "3", "--logging_steps", "1", "--do_train", "--do_eval",
                         "--output_dir", str(output_dir), "--cache_dir", str(tmp_path / "cache"), *extra])
    return output_dir


def test_cached_training_turns_give_the_same_run(tmp_path):
    """6 steps over 3 epochs of 24 dialogues (batch 8): the turns come from the cache from the second epoch on."""
    cached = _train(tmp_path, "cached", ["--cache_train_turns", "true", "--eval_max_generation_examples", "0"])
    plain = _train(tmp_path, "plain", ["--cache_train_turns", "false"])
    logs = [json.loads((folder / "trainer_state.json").read_text())["log_history"] for folder in (cached, plain)]
    keys = ("loss", "response_loss", "mlm_loss", "mvm_loss", "mvt_loss", "grad_norm")
    steps = [[{key: log[key] for key in keys if key in log} for log in history if "loss" in log] for history in logs]
    assert len(steps[0]) == 6 and steps[0] == steps[1]
    weights = [load_file(str(folder / "model.safetensors")) for folder in (cached, plain)]
    assert weights[0].keys() == weights[1].keys()
    assert all(np.array_equal(weights[0][name], weights[1][name]) for name in weights[0])
    # --eval_max_generation_examples 0: the losses and the matching accuracy, no decoding
    evaluation = [json.loads((folder / "eval_results.json").read_text()) for folder in (cached, plain)]
    assert "eval_CIDEr" not in evaluation[0] and "eval_CIDEr" in evaluation[1]
    assert evaluation[0]["eval_loss"] == evaluation[1]["eval_loss"]
    assert evaluation[0]["eval_matching_accuracy"] == evaluation[1]["eval_matching_accuracy"]


def test_cached_turn_dataset_hands_out_copies():
    class Source:
        calls = 0

    class Dataset(avsd_turns.CachedTurnDataset):
        def __init__(self):
            self._cache = {}

        def __len__(self):
            return 1

    def fresh(self, index):
        Source.calls += 1
        return {"input_ids": np.arange(4)}

    original = avsd_turns.DialogueTurnDataset.__getitem__
    avsd_turns.DialogueTurnDataset.__getitem__ = fresh
    try:
        dataset = Dataset()
        first = dataset[0]
        first["input_ids"][0] = 99  # what a collator might do to a batch
        assert dataset[0]["input_ids"].tolist() == [0, 1, 2, 3]
        assert Source.calls == 1
    finally:
        avsd_turns.DialogueTurnDataset.__getitem__ = original


def test_stage_times_count_cpu_and_wall(capsys):
    stages = vgd_process.StageTimes()
    with stages.stage("training"):
        end = time.process_time() + 0.05
        while time.process_time() < end:
            pass
    with stages.stage("scoring"):
        time.sleep(0.02)
    with stages.stage("training"):
        pass
    times = stages.as_dict()
    assert list(times) == ["training", "scoring"]
    assert times["training"]["cpu_s"] >= 0.04 and times["scoring"]["wall_s"] >= 0.02
    stages.print_table()
    out = capsys.readouterr().out
    assert "training" in out and "total" in out


def test_demo_defaults_of_issue_24():
    defaults = avsd_demo.DEMO_TRAINING_DEFAULTS
    assert defaults["num_train_epochs"] == 7.5 and defaults["eval_max_generation_examples"] == 0 and defaults["cpu_threads"] == 1
    demo = avsd_demo.DemoArguments()
    assert (demo.demo_n_layer, demo.demo_n_embd, demo.demo_n_head) == (2, 96, 4)
    # the training turns are cached for the embedded demo unless --cache_train_turns says otherwise
    assert run_vgd.DataArguments().cache_train_turns is None


def test_bench_demo_runs_both_cases(tmp_path):
    """benchmarks/bench_demo.py end to end on a minuscule demo (2 steps): both cases, the per-stage table, the JSON."""
    import os
    import subprocess
    import sys

    from test_run_vgd import REPO_ROOT

    output = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "benchmarks", "bench_demo.py"), "--max_steps", "2", "--workdir", str(tmp_path / "work"),
         "--output_json", str(output), "--extra_args", " ".join(TINY)],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "whole command" in result.stdout and "before/after" in result.stdout
    report = json.loads(output.read_text())
    assert set(report["results"]) == {"before", "after"}
    for case in report["results"].values():
        assert {"training", "decoding", "scoring"} <= set(case["stages"]) and case["command_cpu_s"] > 0
    assert "evaluation" in report["results"]["before"]["stages"]


def test_bench_nonfinite_guard_prices_the_check_with_and_without_it(tmp_path):
    """benchmarks/bench_nonfinite_guard.py on a minuscule demo: both cases run, each round in the other order."""
    import os
    import subprocess
    import sys

    from test_run_vgd import REPO_ROOT

    output = tmp_path / "guard.json"
    result = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "benchmarks", "bench_nonfinite_guard.py"), "--steps", "2", "--rounds", "2",
         "--output_json", str(output), "--extra_args", " ".join(TINY)],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rounds = [line.split(":")[0] for line in result.stdout.splitlines() if line.startswith("round ")]
    assert rounds == ["round 0 off", "round 0  on", "round 1  on", "round 1 off"]
    report = json.loads(output.read_text())
    assert len(report["per_step_cpu_s"]["on"]) == len(report["per_step_cpu_s"]["off"]) == 2 and report["ratio_on_off"] > 0
