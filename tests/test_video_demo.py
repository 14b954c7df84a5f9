"""`python -m avsd_dataset.video_demo` end to end at CI size: a handful of rendered .mp4 files -> extraction (a tiny
random-init r3d_18) -> a few training steps -> the table; a rerun reuses the videos, the features and the trained
model; the trained model answers from a test .mp4 as from its extracted features; and the `--weights` path with a
weights file made here (nothing downloaded)."""

import json
import os

import numpy as np
import pytest
import torch

# A handful of videos, a tiny model, a few steps (the answers of so short a run mean nothing).
CI_ARGS = [
    "--num_train_dialogs", "4", "--num_valid_dialogs", "1", "--num_test_dialogs", "2", "--data_seed", "3",
    "--crop_size", "16", "--resize_size", "16", "--extract_workers", "0", "--extract_batch_size", "8",
    "--n_layer", "1", "--n_embd", "32", "--n_head", "2", "--vocab_size", "300", "--max_steps", "2",
    "--per_device_train_batch_size", "4", "--generation_num_beams", "1", "--generation_max_new_tokens", "4",
]


def _mtimes(folder):
    return {name: os.stat(os.path.join(folder, name)).st_mtime_ns for name in sorted(os.listdir(folder))}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from avsd_dataset.video_demo import main

    root = tmp_path_factory.mktemp("video_demo")
    argv = ["--output_dir", str(root / "model"), "--cache_dir", str(root / "cache"), "--backbone_seed", "5", *CI_ARGS, "--num_processes", "2"]
    first = main(argv)
    return root, argv, first


def test_the_command_runs_every_stage_and_reports_the_table(demo_run, tmp_path_factory):
    root, _, result = demo_run
    assert [stage["stage"] for stage in result["stages"]] == [
        "1 data", "2 render .mp4", "3 extract train+valid", "4 extract test", "4b standardise features", "5 tokenizer + GPT-2", "6 train + decode", "7 answer from a .mp4"]
    assert all(stage["wall_s"] >= 0 and stage["cpu_s"] >= 0 for stage in result["stages"])
    assert result["rendered"] == {"rendered": 7, "existing": 0}
    assert result["extracted"]["train"]["done"] == 5 and result["extracted"]["test"]["done"] == 2
    assert result["trained"] is True
    metrics = result["metrics"]
    for key in ("Bleu_1", "Bleu_4", "CIDEr", "answer_accuracy", "answer_accuracy_shuffled_video", "answer_accuracy_chance"):
        assert key in metrics and 0.0 <= metrics[key] <= 10.0
    per_type = [key.split("/", 1)[1] for key in metrics if key.startswith("answer_accuracy/")]
    assert per_type and all(f"answer_accuracy_shuffled_video/{t}" in metrics and f"answer_accuracy_chance/{t}" in metrics for t in per_type)
    with open(root / "model" / "video_demo_result.json") as f:
        assert json.load(f)["metrics"] == metrics
    # the demo's training settings: half the feature demo's learning rate, batches drawn at random (not length-grouped)
    with open(root / "model" / "video_demo.json") as f:
        trained_with = json.load(f)["argv"]
    assert trained_with[trained_with.index("--learning_rate") + 1] == "0.0015"
    assert trained_with[trained_with.index("--train_sampling_strategy") + 1] == "random"
    # the temporal encoding starts large enough to tell the clips apart in time, and the model records it
    assert trained_with[trained_with.index("--video_frame_init_std") + 1] == "0.5"
    assert trained_with[trained_with.index("--video_frame_init") + 1] == "sinusoidal"
    # one torch thread per process with --num_processes 2; the training turns processed once and kept in memory
    assert trained_with[trained_with.index("--cpu_threads") + 1] == "1"
    assert trained_with[trained_with.index("--cache_train_turns") + 1] == "True"
    # MLM masks 30 % of the context's text tokens (the caption's object and count are put back from the video)
    assert trained_with[trained_with.index("--mlm_probability") + 1] == "0.3"
    # the clip tokens as they are by default; --video_whitening_components K reaches run_vgd.py
    assert "--video_whitening_components" not in trained_with
    with open(root / "model" / "config.json") as f:
        config = json.load(f)
    assert config["video_frame_init_std"] == 0.5 and config["video_whitening_components"] is None
    assert config["video_frame_init"] == "sinusoidal"
    from avsd_dataset import video_demo

    whitened = video_demo.training_arguments(
        video_demo.VideoDemoArguments(output_dir=str(tmp_path_factory.mktemp("whitened")), video_whitening_components=64),
        {"data_dir": "data", "feature_dir": "features", "stream": "r3d_18"}, "gpt2")
    assert whitened[whitened.index("--video_whitening_components") + 1] == "64"
    # trained by two data-parallel processes (accelerate launch): both took part, and the decoding too
    with open(root / "model" / "video_demo.json") as f:
        assert json.load(f)["num_processes"] == 2
    with open(root / "model" / "trainer_state.json") as f:
        assert json.load(f)["global_step"] == 2
    with open(root / "model" / "test_result.json") as f:
        assert len(json.load(f)["dialogs"]) == 2  # every test dialogue decoded once, gathered from both processes


def test_the_model_records_the_backbone_and_answers_from_a_test_mp4_as_from_its_features(demo_run):
    from modeling_vgd_gpt2 import VGDGPT2ForDialogue
    from processing_vgd import VGDProcessor

    root, _, result = demo_run
    answer = result["answer"]
    assert answer["video"].endswith(".mp4") and os.sep + "videos_testset" + os.sep in answer["video"]  # never seen in training
    assert answer["answer_from_video"] == answer["answer_from_features"] and answer["same"] is True
    model = VGDGPT2ForDialogue.from_pretrained(str(root / "model")).eval()
    backbone = model.config.video_backbone
    assert backbone["name"] == "r3d_18" and backbone["weights"] is None and backbone["random_init_seed"] == 5
    assert backbone["crop_size"] == 16 and backbone["clip_length"] == 4 and backbone["layer"] == "layer3"
    assert backbone["rgb_difference"] is True and model.config.video_pooling == "spatial_and_temporal"  # the demo's defaults
    assert model.config.num_video_regions == backbone["num_regions"] == 4  # 16-pixel crops: layer3's map is 2 x 2
    # the per-channel standardisation fitted on the training videos is recorded with the backbone and applied by it
    assert len(backbone["feature_mean"]) == len(backbone["feature_std"]) == backbone["feature_dim"]
    with open(os.path.join(result["paths"]["feature_dir"], "r3d_18", "backbone.json")) as f:
        recorded = json.load(f)
    assert recorded["feature_mean"] == backbone["feature_mean"] and recorded["feature_std"] == backbone["feature_std"]
    processor = VGDProcessor.from_pretrained(str(root / "model"))
    inputs = processor(videos=[answer["video"]], question=[answer["question"]], return_tensors="pt")
    with torch.no_grad():
        features, _ = model.extract_video_features(inputs["pixel_values_videos"], inputs["video_clip_mask"])
    stream_dir = os.path.join(result["paths"]["feature_dir"], "r3d_18_testset")
    extracted = np.load(os.path.join(stream_dir, answer["image_id"] + ".npy"))
    # the region tokens (each averaged over the clips), then one token per clip (the regions averaged)
    regions = extracted.shape[1]
    assert features.shape[1:3] == (regions + extracted.shape[0], 1)
    np.testing.assert_allclose(features[0, :regions, 0].numpy(), extracted.mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(features[0, regions:, 0].numpy(), extracted.mean(axis=1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(features[0].numpy(), processor.feature_extractor.process_video(extracted), rtol=1e-4, atol=1e-5)


def test_a_rerun_reuses_videos_features_and_model(demo_run):
    from avsd_dataset.video_demo import main

    root, argv, first = demo_run
    data_dir, feature_dir = first["paths"]["data_dir"], first["paths"]["feature_dir"]
    before = {folder: _mtimes(folder) for folder in (os.path.join(data_dir, "videos"), os.path.join(feature_dir, "r3d_18"),
                                                      os.path.join(feature_dir, "r3d_18_testset"), str(root / "model"))}
    again = main(argv)
    assert again["rendered"] == {"rendered": 0, "existing": 7}
    assert again["extracted"]["train"]["done"] == 0 and again["extracted"]["train"]["skipped"] == 5
    assert again["extracted"]["test"]["done"] == 0 and again["extracted"]["test"]["skipped"] == 2
    assert again["trained"] is False and again["metrics"] == first["metrics"]
    for folder, mtimes in before.items():
        now = _mtimes(folder)
        assert {name: now[name] for name in mtimes if name.endswith((".mp4", ".npy", ".safetensors"))} == {
            name: value for name, value in mtimes.items() if name.endswith((".mp4", ".npy", ".safetensors"))}
    assert again["answer"]["answer_from_video"] == first["answer"]["answer_from_video"]


def test_pretrained_weights_path_with_a_local_weights_file(demo_run, tmp_path, monkeypatch):
    """`--backbone r3d_18 --weights KINETICS400_V1` offline: torchvision finds the checkpoint file (made here, under
    the name it would download) in $TORCH_HOME/hub/checkpoints and downloads nothing."""
    import torchvision

    from avsd_dataset.video_demo import main

    root, _, first = demo_run
    weights = torchvision.models.video.R3D_18_Weights.KINETICS400_V1
    torch.manual_seed(11)
    state = torchvision.models.video.r3d_18(weights=None).state_dict()
    checkpoints = tmp_path / "torch_home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(state, checkpoints / os.path.basename(weights.url))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    argv = ["--output_dir", str(tmp_path / "model"), "--cache_dir", str(root / "cache"), "--weights", "KINETICS400_V1",
            *CI_ARGS, "--max_steps", "1"]
    result = main(argv)
    assert result["rendered"]["rendered"] == 0  # the same videos, new features
    assert result["extracted"]["train"]["done"] == 5
    with open(os.path.join(result["paths"]["feature_dir"], "r3d_18", "backbone.json")) as f:
        assert json.load(f)["weights"] == "KINETICS400_V1"
    from modeling_vgd_gpt2 import VGDGPT2ForDialogue

    model = VGDGPT2ForDialogue.from_pretrained(str(tmp_path / "model"))
    assert model.config.video_backbone["weights"] == "KINETICS400_V1"
    # the model holds the file's weights (saved with it: answering from a file needs no download)
    loaded = model.video_backbone.model.state_dict()
    for key in ("stem.0.weight", "layer1.0.conv1.0.weight"):
        torch.testing.assert_close(loaded[key], state[key])
    assert result["answer"]["answer_from_video"] == result["answer"]["answer_from_features"]
    os.remove(checkpoints / os.path.basename(weights.url))
    from avsd_dataset.video_demo import answer_from_file

    again = answer_from_file(str(tmp_path / "model"), result["paths"]["data_dir"], result["paths"]["feature_dir"], "r3d_18", 1, 4)
    assert again["answer_from_video"] == result["answer"]["answer_from_video"]


def test_spatiotemporal_tokens_reuse_the_features_and_answer_from_an_mp4_with_every_region(demo_run, tmp_path):
    """`--video_pooling spatiotemporal`: the same videos and features, a model that reads every clip x region token,
    recorded in its config; its own features of a test .mp4 equal the extracted ones region by region, and it gives
    the same answer from the .mp4 as from those features."""
    from avsd_dataset.video_demo import main
    from modeling_vgd_gpt2 import VGDGPT2ForDialogue
    from processing_vgd import VGDProcessor

    root, _, first = demo_run
    argv = ["--output_dir", str(tmp_path / "model"), "--cache_dir", str(root / "cache"), "--backbone_seed", "5", *CI_ARGS,
            "--video_pooling", "spatiotemporal"]  # and training in this process (the default, --num_processes 1)
    result = main(argv)
    with open(tmp_path / "model" / "video_demo.json") as f:
        record = json.load(f)
    assert record["num_processes"] == 1
    assert record["argv"][record["argv"].index("--cpu_threads") + 1] == "2"  # one process: two torch threads
    assert result["rendered"]["rendered"] == 0 and result["extracted"]["train"]["done"] == 0 and result["trained"] is True
    assert result["paths"]["feature_dir"] == first["paths"]["feature_dir"]
    model = VGDGPT2ForDialogue.from_pretrained(str(tmp_path / "model")).eval()
    assert model.config.video_pooling == "spatiotemporal"
    answer = result["answer"]
    extracted = np.load(os.path.join(first["paths"]["feature_dir"], "r3d_18_testset", answer["image_id"] + ".npy"))
    processor = VGDProcessor.from_pretrained(str(tmp_path / "model"))
    inputs = processor(video_features=extracted, question="where is he ?", return_tensors="pt")
    assert inputs["video_features"].shape[1:3] == extracted.shape[:2]  # [B, F, P, D]: every clip x region
    inputs = processor(videos=[answer["video"]], question=[answer["question"]], return_tensors="pt")
    with torch.no_grad():
        features, _ = model.extract_video_features(inputs["pixel_values_videos"], inputs["video_clip_mask"])
    np.testing.assert_allclose(features[0].numpy(), extracted, rtol=1e-4, atol=1e-5)
    assert answer["answer_from_video"] == answer["answer_from_features"]


def test_relevance_measured_on_the_rendered_mp4_files(demo_run, capsys):
    """`benchmarks/measure_relevance.py --videos`: the model answers every validation turn from its .mp4 (batches of
    two: the clips padded together) and each action question's top clip is checked against the rendered action."""
    import sys

    from avsd_dataset.synthetic import load_ground_truth

    root, _, first = demo_run
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    try:
        from measure_relevance import main as measure_relevance
    finally:
        sys.path.pop(0)
    data_dir = first["paths"]["data_dir"]
    assert measure_relevance(["--model", str(root / "model"), "--data_dir", data_dir, "--split", "validation", "--videos",
                              "--batch_size", "2", "--max_new_tokens", "4"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    turns = load_ground_truth(data_dir)["splits"]["validation"]
    actions = [turn for turn in turns if turn["question_type"].startswith("action_")]
    assert actions, "the CI data's validation dialogue asks about actions"
    assert summary["turns"] == len(turns) and summary["n_frame_questions"] == len(actions)
    assert "n_region_questions" not in summary  # the backbone's regions are not the dataset's object regions
    assert summary["uniform_baseline_frames"] == 0.25  # 12 clips, 3 per action
    assert 0.0 <= summary["top_frame_hit_rate"] <= 1.0


def test_failed_training_processes_stop_the_demo_naming_the_command(tmp_path):
    """The processes fail before writing any result (here: an option run_vgd.py does not know): the demo stops
    with their exit code and the command, instead of reading metrics that are not there."""
    from avsd_dataset.video_demo import VideoDemoArguments, train_in_processes

    with pytest.raises(RuntimeError, match=r"(?s)training processes failed \(exit code [1-9].*--no_such_option"):
        train_in_processes(["--no_such_option", "1", "--output_dir", str(tmp_path)], 2, str(tmp_path))
    with pytest.raises(ValueError, match="--num_processes must be at least 1, got 0"):
        VideoDemoArguments(num_processes=0)
    with pytest.raises(ValueError, match="--cpu_threads must be at least 1, got 0"):
        VideoDemoArguments(cpu_threads=0)
    assert (VideoDemoArguments().cpu_threads, VideoDemoArguments(num_processes=2).cpu_threads) == (2, 1)
    with pytest.raises(ValueError, match=r"--mlm_probability must be in \[0, 1\], got 1.5"):
        VideoDemoArguments(mlm_probability=1.5)


def _processes_mentioning(text):
    """Pids of the live processes whose command line contains `text` (Linux /proc)."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(pid))
        except (FileNotFoundError, PermissionError, ProcessLookupError, NotADirectoryError):
            continue
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the training processes through /proc")
def test_sigterm_to_the_demo_stops_its_training_processes(demo_run, tmp_path):
    """A scheduler's SIGTERM to `python -m avsd_dataset.video_demo` reaches the training processes it launched: the
    demo ends with their exit code and none of them trains on as an orphan."""
    import signal
    import subprocess
    import sys
    import time

    root, _, _ = demo_run
    output_dir = str(tmp_path / "stopped-model")
    argv = ["--output_dir", output_dir, "--cache_dir", str(root / "cache"), "--backbone_seed", "5", *CI_ARGS, "--num_processes", "2"]
    argv[argv.index("--max_steps") + 1] = "1000000"  # would train for hours
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    demo = subprocess.Popen([sys.executable, "-m", "avsd_dataset.video_demo", *argv], cwd=repo, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 300
    while len(_processes_mentioning(output_dir)) < 4 and time.time() < deadline:  # the demo, the launcher, 2 trainers
        time.sleep(0.5)
    assert len(_processes_mentioning(output_dir)) >= 4, "the training processes never started"
    time.sleep(8)  # into the training steps
    demo.send_signal(signal.SIGTERM)
    output, _ = demo.communicate(timeout=120)
    assert demo.returncode != 0 and "the training processes failed (exit code" in output, output[-3000:]
    time.sleep(1)
    assert _processes_mentioning(output_dir) == [], "training processes outlived the demo"


def test_pooling_benchmark_times_the_demo_model_against_one_token_per_clip(demo_run, capsys):
    """`benchmarks/bench_video_pooling.py`: the demo model's region + clip tokens against a `temporal` model of the same
    config, on the same dialogues: each reads the token count of its pooling, and both rates are positive."""
    import sys

    root, _, first = demo_run
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    try:
        from bench_video_pooling import main as bench_video_pooling
    finally:
        sys.path.pop(0)
    rates = bench_video_pooling([str(root / "model"), first["paths"]["data_dir"], "--steps", "5", "--batch_size", "2"])
    assert set(rates) == {"spatial_and_temporal", "temporal"} and all(rate > 0 for rate in rates.values())
    out = capsys.readouterr().out
    assert "spatial_and_temporal:  16 video tokens" in out and "temporal:  12 video tokens" in out  # 4 regions + 12 clips
    assert "ratio (spatial_and_temporal / temporal)" in out
