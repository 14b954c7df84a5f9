"""run_vgd.py end to end on tiny synthetic data: outputs, configs, failures that keep the model, DDP."""

import glob
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

import avsd_dataset.demo as avsd_demo
import run_vgd
from vgd_training import TrainingDivergedError, VGDTrainer

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = [
    "--demo_num_train_dialogs", "24", "--demo_num_valid_dialogs", "4", "--demo_num_test_dialogs", "8",
    "--demo_n_layer", "1", "--demo_n_embd", "32", "--demo_n_head", "2", "--demo_vocab_size", "300",
    "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8",
    "--generation_num_beams", "2", "--generation_max_new_tokens", "4", "--eval_max_generation_examples", "4",
]


def test_smoke_run_writes_model_predictions_and_metrics(tmp_path):
    output_dir = tmp_path / "run"
    metrics = run_vgd.main(TINY + ["--max_steps", "2", "--logging_steps", "1", "--output_dir", str(output_dir)])
    expected = {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "answer_accuracy", "answer_accuracy_shuffled_video", "answer_accuracy_chance"}
    assert expected <= set(metrics)
    assert json.loads((output_dir / "metrics.json").read_text()) == pytest.approx(metrics)
    result = json.loads((output_dir / "test_result.json").read_text())
    data_dirs = glob.glob(os.path.join(avsd_demo.demo_cache_dir(run_vgd.DataArguments(), str(output_dir)), "data-*"))
    assert len(data_dirs) == 1
    test = json.loads(open(os.path.join(data_dirs[0], "test_set4DSTC7-AVSD.json")).read())
    assert [d["image_id"] for d in result["dialogs"]] == [d["image_id"] for d in test["dialogs"]]
    assert all(d["dialog"][-1]["answer"] != "__UNDISCLOSED__" for d in result["dialogs"])
    assert (output_dir / "model.safetensors").exists() and (output_dir / "processor_config.json").exists()
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert any("response_loss" in log for log in state["log_history"])
    assert "eval_CIDEr" in json.loads((output_dir / "eval_results.json").read_text())
    # what the processor truncated is reported with the training metrics (not dropped as a nested dict)
    all_results = json.loads((output_dir / "all_results.json").read_text())
    assert all_results["train_truncation_examples"] > 0 and "train_truncation_history_turns_dropped" in all_results
    # the folder is a model folder: no dataset, no scratch backbone; a model card; ordinary file modes
    assert not (output_dir / "data").exists() and not (output_dir / "offline-gpt2").exists()
    assert not [name for name in os.listdir(output_dir) if os.path.isdir(output_dir / name)]
    card = (output_dir / "README.md").read_text()
    assert "## Model description" in card and "## Training and evaluation data" in card and "### Training hyperparameters" in card
    assert "AutoModelForCausalLM.from_pretrained" in card and "More information needed" not in card
    assert f"- answer_accuracy: {metrics['answer_accuracy']:.3f}" in card
    assert str(tmp_path) not in card and "SchedulerType." not in card  # a relative usage path, readable settings
    umask = os.umask(0)
    os.umask(umask)
    for name in ("model.safetensors", "config.json", "README.md"):
        assert os.stat(output_dir / name).st_mode & 0o777 == 0o666 & ~umask, name


def test_video_frame_init_std_reaches_a_new_model_and_is_checked(tmp_path):
    output_dir = tmp_path / "run"
    run_vgd.main(TINY + ["--max_steps", "1", "--do_eval", "false", "--do_predict", "false", "--video_frame_init_std", "0.5",
                         "--output_dir", str(output_dir)])
    assert json.loads((output_dir / "config.json").read_text())["video_frame_init_std"] == 0.5
    with pytest.raises(ValueError, match="--video_frame_init_std must be > 0"):
        run_vgd.main(TINY + ["--video_frame_init_std", "0", "--output_dir", str(tmp_path / "bad")])


def test_video_frame_init_reaches_a_new_model_and_is_checked(tmp_path, capsys):
    output_dir = tmp_path / "run"
    run_vgd.main(TINY + ["--max_steps", "1", "--do_eval", "false", "--do_predict", "false", "--video_frame_init", "sinusoidal",
                         "--video_frame_init_std", "0.5", "--output_dir", str(output_dir)])
    config = json.loads((output_dir / "config.json").read_text())
    assert config["video_frame_init"] == "sinusoidal" and config["video_frame_init_std"] == 0.5
    with pytest.raises(SystemExit):
        run_vgd.main(TINY + ["--video_frame_init", "uniform", "--output_dir", str(tmp_path / "bad")])
    assert "invalid choice: 'uniform'" in capsys.readouterr().err


def test_whole_dialogue_training_refuses_a_history_limit():
    with pytest.raises(ValueError, match="--train_on_whole_dialogues.*--max_history_turns 2"):
        run_vgd.DataArguments(train_on_whole_dialogues=True, max_history_turns=2)


@pytest.mark.parametrize("config", sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "*.yaml"))))
def test_paper_configs_parse(config, tmp_path):
    with open(config) as f:
        values = yaml.safe_load(f)
    assert values.pop("bf16") is True  # GPU configs; this machine has no bf16 GPU
    cpu_config = tmp_path / os.path.basename(config)
    cpu_config.write_text(yaml.safe_dump(values))
    model_args, data_args, _, training_args = run_vgd.parse_arguments([str(cpu_config)])
    assert model_args.model_name_or_path in ("gpt2", "gpt2-medium")
    assert training_args.learning_rate == 5e-5 and training_args.lr_scheduler_type == "inverse_sqrt"
    assert training_args.response_loss_weight == 1.5 and training_args.metric_for_best_model == "CIDEr"
    assert data_args.data_dir == values["data_dir"]


def test_json_config_as_the_only_argument(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"data_dir": "data/avsd", "output_dir": str(tmp_path), "video_pooling": "temporal", "use_mvm": False}))
    model_args, data_args, _, training_args = run_vgd.parse_arguments([str(path)])
    assert model_args.video_pooling == "temporal" and not model_args.use_mvm
    assert training_args.per_device_train_batch_size == 16  # the paper's default, not the demo's


def test_error_during_training_keeps_a_checkpoint(tmp_path, monkeypatch):
    calls = []
    original = VGDTrainer.training_step

    def failing_step(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("simulated failure at step 3")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(VGDTrainer, "training_step", failing_step)
    with pytest.raises(RuntimeError, match="simulated failure"):
        run_vgd.main(TINY + ["--max_steps", "5", "--output_dir", str(tmp_path), "--do_train"])
    checkpoint = tmp_path / "checkpoint-2"
    assert (checkpoint / "model.safetensors").exists() and (checkpoint / "optimizer.pt").exists()
    run_vgd.main(TINY + ["--max_steps", "3", "--output_dir", str(tmp_path), "--do_train", "--resume_from_checkpoint", "last"])
    assert json.loads((tmp_path / "trainer_state.json").read_text())["global_step"] == 3


def test_error_in_evaluation_after_training_keeps_the_trained_model(tmp_path, monkeypatch):
    def failing_evaluate(self, *args, **kwargs):
        raise RuntimeError("simulated evaluation failure")

    monkeypatch.setattr(VGDTrainer, "evaluate", failing_evaluate)
    with pytest.raises(RuntimeError, match="simulated evaluation failure"):
        run_vgd.main(TINY + ["--max_steps", "1", "--output_dir", str(tmp_path), "--do_train", "--do_eval"])
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "modeling_vgd_gpt2.py").exists()


def test_two_process_accelerate_launch_trains_and_the_model_reloads(tmp_path):
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533",
        os.path.join(REPO_ROOT, "run_vgd.py"), *TINY, "--max_steps", "2", "--do_train", "--output_dir", str(tmp_path), "--logging_steps", "1",
        "--log_level_replica", "info",
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "process 0 of 2" in result.stdout and "process 1 of 2" in result.stdout
    assert " - WARNING - " not in result.stdout
    from modeling_vgd_gpt2 import VGDGPT2ForDialogue

    model = VGDGPT2ForDialogue.from_pretrained(tmp_path)
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and model.config.model_type == "vgd_gpt2"


FAULTS_PER_STEP = """
import resource, sys, types
import torch
import vgd_training.process as vgd_process
tuned = vgd_process.keep_freed_memory_for_reuse(types.SimpleNamespace(device=torch.device("cpu")))
def step(k):  # a training step's pattern: a few MB-sized buffers whose sizes vary with the batch, written, freed
    buffers = [torch.empty(n).fill_(1.0) for n in (200_000 * (1 + k % 5), 1_500_000, 3_000_000 + 100_000 * (k % 7))]
for k in range(7):  # warm up
    step(k)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for k in range(21):
    step(k)
print(tuned, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 21)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt")
def test_cpu_runs_keep_freed_memory_for_reuse():
    """run_vgd tells glibc to keep freed buffers: buffers freed and allocated again are not page-faulted in again
    (without it, 160-260 pages per step of this pattern, 9-19 with it); a user's MALLOC_* variable wins."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    run = lambda env: subprocess.run([sys.executable, "-c", FAULTS_PER_STEP], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True).stdout.split()
    tuned, tuned_faults = run(env)
    untouched, default_faults = run({**env, "MALLOC_ARENA_MAX": "2"})
    assert (tuned, untouched) == ("True", "False")
    assert float(tuned_faults) < 50 and float(default_faults) > 4 * float(tuned_faults)  # measured: 9-19 vs 160-260


def test_a_diverged_run_stops_with_a_clear_error_and_saves_no_diverged_state(tmp_path, monkeypatch):
    calls = []
    original = VGDTrainer.training_step

    def blowing_up_step(self, model, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # what a too-high learning rate does: the weights stop being finite
            with torch.no_grad():
                model.video_projection.weight.fill_(float("nan"))
        return original(self, model, *args, **kwargs)

    monkeypatch.setattr(VGDTrainer, "training_step", blowing_up_step)
    args = ["--max_steps", "6", "--logging_steps", "1", "--save_strategy", "steps", "--save_steps", "2"]
    with pytest.raises(TrainingDivergedError) as error:
        run_vgd.main(TINY + args + ["--output_dir", str(tmp_path), "--do_train"])
    message = str(error.value)
    assert "Training diverged" in message and "between steps 3 and 3" in message and "response_loss nan" in message
    assert f"the newest checkpoint before it is {tmp_path / 'checkpoint-2'}" in message
    assert calls == [1, 1, 1]  # stopped at the first logging step that saw it
    assert (tmp_path / "checkpoint-2").is_dir() and not (tmp_path / "checkpoint-3").exists()
    assert not (tmp_path / "model.safetensors").exists()  # neither a final model nor a rescue checkpoint of the NaN state


def _inf_gradient_at(calls_with_inf: set, monkeypatch):
    """Patch VGDTrainer.training_step: after the backward of the listed calls (1-based), one gradient element is inf (a bf16
    spike or one bad batch; benchmarks/RESULTS.md, bf16 section). Returns, per call, the
    weights as they were when that call began."""
    weights_at_call = []
    original = VGDTrainer.training_step

    def step_with_inf_gradient(self, model, *args, **kwargs):
        weights_at_call.append({name: p.detach().clone() for name, p in model.named_parameters()})
        loss = original(self, model, *args, **kwargs)
        if len(weights_at_call) in calls_with_inf:
            model.video_projection.weight.grad[0, 0] = float("inf")
        return loss

    monkeypatch.setattr(VGDTrainer, "training_step", step_with_inf_gradient)
    return weights_at_call


def _same_weights(a: dict, b: dict) -> bool:
    return all(torch.equal(a[name], b[name]) for name in a)


def test_an_update_with_a_non_finite_gradient_is_skipped_and_training_goes_on(tmp_path, monkeypatch, caplog):
    weights_at_call = _inf_gradient_at({3}, monkeypatch)
    with caplog.at_level("WARNING", logger="vgd_training.trainer"):
        run_vgd.main(TINY + ["--max_steps", "5", "--logging_steps", "1", "--output_dir", str(tmp_path), "--do_train", "--do_eval", "false", "--do_predict", "false"])
    assert len(weights_at_call) == 5
    assert not _same_weights(weights_at_call[1], weights_at_call[2])  # step 2 updated the weights
    assert _same_weights(weights_at_call[2], weights_at_call[3])  # step 3's update (inf gradient) was dropped
    assert not _same_weights(weights_at_call[3], weights_at_call[4])  # and training went on
    assert "Optimizer step 3: the gradient is not finite; this update is skipped" in caplog.text
    from safetensors.torch import load_file

    final = load_file(str(tmp_path / "model.safetensors"))
    assert all(torch.isfinite(tensor).all() for tensor in final.values())
    log_history = json.loads((tmp_path / "trainer_state.json").read_text())["log_history"]
    assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in log_history if "loss" in entry)


def test_non_finite_gradients_in_a_row_stop_the_run_with_a_clear_error(tmp_path, monkeypatch):
    weights_at_call = _inf_gradient_at({2, 3, 4}, monkeypatch)
    args = ["--max_steps", "6", "--logging_steps", "1", "--max_nonfinite_grad_skips", "2", "--do_train", "--do_eval", "false", "--do_predict", "false"]
    with pytest.raises(TrainingDivergedError) as error:
        run_vgd.main(TINY + args + ["--output_dir", str(tmp_path)])
    message = str(error.value)
    assert "the gradient was not finite at 3 optimizer steps in a row (steps 2 to 4; --max_nonfinite_grad_skips 2)" in message
    assert len(weights_at_call) == 4 and _same_weights(weights_at_call[1], weights_at_call[3])  # steps 2-3 skipped
    assert not (tmp_path / "model.safetensors").exists()


def test_a_non_finite_forward_with_finite_weights_is_skipped_and_reported_not_fatal(tmp_path, monkeypatch, caplog):
    """One batch whose forward is not finite (NaN video features reach every loss): its gradient is NaN, the update is
    skipped, the interval's logged losses are NaN but the weights are finite, so the run warns and goes on."""
    calls = []
    original = VGDTrainer.training_step

    def nan_batch_at_call_3(self, model, inputs, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            inputs["video_features"] = torch.full_like(inputs["video_features"], float("nan"))
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(VGDTrainer, "training_step", nan_batch_at_call_3)
    with caplog.at_level("WARNING", logger="vgd_training.trainer"):
        run_vgd.main(TINY + ["--max_steps", "5", "--logging_steps", "1", "--output_dir", str(tmp_path), "--do_train", "--do_eval", "false", "--do_predict", "false"])
    assert len(calls) == 5 and (tmp_path / "model.safetensors").exists()
    assert "Optimizer step 3: the gradient is not finite" in caplog.text
    assert "loss was not finite at some step between 3 and 3, but the weights are finite" in caplog.text


def test_video_whitening_is_fitted_on_the_training_videos_and_saved(tmp_path):
    """`--video_whitening_components K`: a new model's whitening is fitted before step 1 on the training videos as the
    model reads them, and saved with the weights; 0 is refused."""
    import numpy as np
    from safetensors.torch import load_file

    from avsd_dataset.splits import load_splits
    from processing_vgd import VGDProcessor
    from vgd_training.video_whitening import fit_video_whitening

    output_dir = tmp_path / "run"
    run_vgd.main(TINY + ["--max_steps", "1", "--do_eval", "false", "--do_predict", "false", "--video_whitening_components", "4",
                         "--output_dir", str(output_dir)])
    assert json.loads((output_dir / "config.json").read_text())["video_whitening_components"] == 4
    weights = load_file(str(output_dir / "model.safetensors"))
    assert weights["video_projection.weight"].shape[1] == 4 and weights["video_whitening_matrix"].shape[1] == 4
    # the same fit, redone from the training split's features pooled by the saved processor
    data_args = run_vgd.DataArguments()
    data_dir = glob.glob(os.path.join(avsd_demo.demo_cache_dir(data_args, str(output_dir)), "data-*"))[0]
    processor = VGDProcessor.from_pretrained(output_dir)
    data_args = run_vgd.DataArguments(data_dir=data_dir, feature_dir=os.path.join(data_dir, "features"),
                                      feature_streams=",".join(processor.feature_extractor.stream_order))
    splits, _ = load_splits(data_args)
    store = run_vgd.feature_stores(data_args, splits, ["train"])["train"]
    ids = list(dict.fromkeys(splits["train"]["image_id"]))
    mean, matrix = fit_video_whitening((processor.feature_extractor.process_video(store[i]) for i in ids), 4)
    np.testing.assert_allclose(weights["video_whitening_matrix"].numpy(), matrix, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(weights["video_whitening_mean"].numpy(), mean, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="--video_whitening_components must be at least 1"):
        run_vgd.main(TINY + ["--video_whitening_components", "0", "--output_dir", str(tmp_path / "bad")])
    with pytest.raises(ValueError, match=r"--video_whitening_components 999 keeps more components than the video features have channels"):
        run_vgd.main(TINY + ["--video_whitening_components", "999", "--output_dir", str(tmp_path / "too-many")])
    assert not (tmp_path / "too-many" / "model.safetensors").exists()


def test_spatial_and_temporal_pooling_records_p_and_a_file_with_another_p_is_found_before_step_1(tmp_path):
    """`--video_pooling spatial_and_temporal`: the new model and its processor record P, read from the features; a
    feature file with another P is named (path and shape) by the check that runs before step 1."""
    import shutil

    import numpy as np

    from avsd_dataset.splits import check_video_regions, load_splits
    from processing_vgd import VGDProcessor

    output_dir = tmp_path / "run"
    run_vgd.main(TINY + ["--max_steps", "1", "--do_eval", "false", "--do_predict", "false", "--video_pooling", "spatial_and_temporal",
                         "--output_dir", str(output_dir)])
    data_dir = glob.glob(os.path.join(avsd_demo.demo_cache_dir(run_vgd.DataArguments(), str(output_dir)), "data-*"))[0]
    config = json.loads((output_dir / "config.json").read_text())
    extractor = VGDProcessor.from_pretrained(output_dir).feature_extractor
    streams = ",".join(extractor.stream_order)
    video_stream = extractor.stream_order[0]  # the synthetic [F, P, D] stream
    store_args = run_vgd.DataArguments(data_dir=data_dir, feature_dir=os.path.join(data_dir, "features"), feature_streams=streams)
    splits, _ = load_splits(store_args)
    store = run_vgd.feature_stores(store_args, splits, ["train"])["train"]
    regions = store.feature_shapes()[video_stream][1]
    assert config["video_pooling"] == "spatial_and_temporal" and config["num_video_regions"] == regions > 1
    assert extractor.video_pooling == "spatial_and_temporal" and extractor.num_video_regions == regions

    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    copy_args = run_vgd.DataArguments(data_dir=str(copy), feature_dir=str(copy / "features"), feature_streams=streams)
    splits, _ = load_splits(copy_args)
    stores = run_vgd.feature_stores(copy_args, splits, ["train"])
    bad_id = splits["train"][0]["image_id"]
    path = stores["train"].feature_path(bad_id, video_stream)
    np.save(path, np.load(path)[:, :-1])  # one region fewer
    check_video_regions(stores, {"train": splits["train"].filter(lambda i: i != bad_id, input_columns="image_id")}, regions)
    with pytest.raises(ValueError, match=rf"reads {regions} regions per frame.*1 feature files have another number:\n  .*{bad_id}\.npy \(\d+, {regions - 1}, \d+\)"):
        check_video_regions(stores, splits, regions)
