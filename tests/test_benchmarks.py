"""Keeps benchmarks/bench_vgd.py from rotting: its sections run end to end on a minuscule shape (seconds).
Only the presence and sign of the figures are checked, never timings."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))

import bench_vgd  # noqa: E402

REQUIRED_KEYS = ("train_tokens_per_s_ratio", "peak_memory_ratio", "generate_speedup_cached_vs_recompute")


@pytest.fixture(scope="module")
def tiny_report():
    # Scoring starts two JVMs (PTB tokenizer, METEOR): too slow here; its code path is run in the subprocess test.
    return bench_vgd.run_benchmark("tiny", "cpu", compile=False, skip={"scoring"}, log=lambda *args: None)


def test_every_section_reports_positive_figures(tiny_report):
    for key in REQUIRED_KEYS:
        assert tiny_report[key] > 0, key
    train = tiny_report["train_eager"]
    for side in ("vgd", "plain"):
        assert train[f"{side}_tokens_per_s"] > 0
        assert train[f"{side}_peak_memory_bytes"] > 0
        assert train[f"{side}_step_s_median"] > 0
    assert train["vgd_parameters"] > train["plain_parameters"]
    generation = tiny_report["generation"]
    assert generation["responses_per_s_cached"] > 0 and generation["responses_per_s_recompute"] > 0
    assert generation["new_tokens_generated"] == bench_vgd.PRESETS["tiny"]["new_tokens"]
    assert tiny_report["data_path"]["examples_per_s"] > 0
    padding = tiny_report["padding"]
    for video in ("fixed64", "variable", "variable_known"):
        assert 0 <= padding[video]["padding_fraction_grouped"] < padding[video]["padding_fraction_random"] < 1
    assert tiny_report["scoring"] == {"skipped": "--skip"}
    assert set(tiny_report["targets"]) >= set(REQUIRED_KEYS)
    table = bench_vgd.format_table(tiny_report)
    assert "tokens/s" in table and "responses/s" in table and "padding waste" in table


def test_training_batches_carry_all_four_objectives():
    p = bench_vgd.PRESETS["tiny"]
    vgd, plain, ids = bench_vgd.make_models(p, bench_vgd.torch.device("cpu"))
    vgd_batch, plain_batch = bench_vgd.make_training_batches(p, ids, bench_vgd.torch.device("cpu"))
    assert vgd_batch["input_ids"].shape == plain_batch["input_ids"].shape
    assert (vgd_batch["mlm_labels"] != -100).any() and vgd_batch["mvm_mask"].any()
    assert (vgd_batch["mvt_labels"] == 0).any() and (vgd_batch["mvt_labels"] == 1).any()
    out = vgd(**vgd_batch)
    for name in ("response_loss", "mlm_loss", "mvm_loss", "mvt_loss"):
        assert bench_vgd.torch.isfinite(getattr(out, name)), name
    assert bench_vgd.torch.equal(vgd_batch["labels"], plain_batch["labels"])


def test_command_line_without_datasets_evaluate_pycocoevalcap(tmp_path):
    """What the GPU machine has: no datasets / evaluate / pycocoevalcap. bfloat16 autocast as on a GPU."""
    output = tmp_path / "report.json"
    script = textwrap.dedent(
        f"""
        import runpy, sys
        for name in ("datasets", "evaluate", "pycocoevalcap"):
            sys.modules[name] = None  # import fails, importlib.util.find_spec returns None: as if not installed
        sys.argv = ["bench_vgd.py", "--preset", "tiny", "--set", "dtype=bfloat16", "--output_json", {str(output)!r}]
        runpy.run_path({os.path.join(REPO_ROOT, "benchmarks", "bench_vgd.py")!r}, run_name="__main__")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tokens/s" in result.stdout
    report = json.loads(output.read_text())
    for key in REQUIRED_KEYS:
        assert report[key] > 0, key
    assert "bfloat16" in report["train_eager"]["dtype"]
    assert "skipped" in report["scoring"]  # no pycocoevalcap: skipped with the reason, the rest still reported
    assert report["data_path"]["examples_per_s"] > 0
    assert report["environment"]["torch"] and report["command"].startswith("python benchmarks/bench_vgd.py")


def test_static_cache_generation_section_runs_and_matches_the_dynamic_cache():
    p = dict(bench_vgd.PRESETS["tiny"], gen_static_cache=True)  # compiled with the eager backend: graph capture only
    result = bench_vgd.bench_generation_caches(p, bench_vgd.torch.device("cpu"), log=lambda *args: None)
    assert result["outputs_identical"] == {"static_eager": True, "static_compiled": True}
    assert all(rate > 0 for rate in result["responses_per_s"].values())
    assert result["speedup_static_compiled_vs_dynamic_eager"] > 0


def test_variance_share_of_the_video_probe():
    """probe_video_features.variance_share: 1 when the class explains every feature, ~0 for unrelated classes, and the
    per-channel standardisation makes a loud unrelated channel not drown a quiet class-driven one."""
    import numpy as np

    from probe_video_features import variance_share

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=2000)
    centers = rng.standard_normal((4, 6))
    assert variance_share(centers[labels], labels) == pytest.approx(1.0)
    assert variance_share(rng.standard_normal((2000, 6)), labels) < 0.01
    quiet_signal = np.stack([1e-3 * centers[labels, 0], 1e3 * rng.standard_normal(2000)], axis=1)
    assert variance_share(quiet_signal, labels) == pytest.approx(0.5, abs=0.02)


def test_training_sweep_packs_features_and_reports_finished_and_stopped_runs(tmp_path):
    """benchmarks/sweep_video_training.py: the int8 pack round-trips the clip tokens, every run is run_vgd.main with
    the video demo's arguments (its accuracy table), and a run still going at the deadline is reported unfinished."""
    import numpy as np

    from avsd_dataset.synthetic import generate_synthetic_avsd

    import sweep_video_training

    data_dir = str(tmp_path / "data")
    generate_synthetic_avsd(data_dir, num_train_dialogs=12, num_valid_dialogs=4, num_test_dialogs=8, video_stream="r3d_18",
                            num_frames=4, num_regions=3, feature_dim=16, seed=0)
    packed = str(tmp_path / "pooled.npz")
    sweep_video_training.main(["unused", packed, "--pack", os.path.join(data_dir, "features")])
    sweep_video_training.unpack(packed, str(tmp_path / "unpacked"))
    test_dir = os.path.join(data_dir, "features", "r3d_18_testset")
    name = sorted(os.listdir(test_dir))[0]
    pooled = np.load(os.path.join(test_dir, name)).mean(axis=1)
    restored = np.load(os.path.join(tmp_path, "unpacked", "r3d_18_testset", name))
    assert restored.shape == (4, 1, 16)
    assert (np.abs(restored[:, 0] - pooled) <= np.load(packed)["scale"] / 2 + 1e-6).all()

    runs = tmp_path / "runs.json"
    whitening = ["--video_whitening_components", "8"]  # the demo's 64 is more than these features' 16 channels
    runs.write_text(json.dumps([{"name": "short", "seed": 0, "epochs": 1, "model": "1x32x2", "args": whitening},
                                {"name": "long", "seed": 1, "epochs": 1, "model": "1x32x2", "args": whitening + ["--max_steps", "100000"]}]))
    table = sweep_video_training.main([data_dir, packed, str(tmp_path / "work"), str(runs), "--device", "cpu",
                                       "--max_steps", "2", "--deadline", "75", "--results", str(tmp_path / "table.json")])
    assert set(table) == {"short", "long"}
    assert 0.0 <= table["short"]["answer_accuracy"] <= 1.0 and "answer_accuracy/place" in table["short"]
    assert "answer_accuracy" not in table["long"] and ("it/s" in table["long"]["unfinished"] or "s/it" in table["long"]["unfinished"])
    assert json.loads((tmp_path / "table.json").read_text())["short"]["run"]["name"] == "short"


def test_decode_threads_benchmark_compares_the_same_frames():
    """benchmarks/bench_decode_threads.py: both swscale settings decode the rendered videos to the same pixels."""
    import bench_decode_threads

    result = bench_decode_threads.main(["--videos", "3", "--frames", "8", "--rounds", "2"])
    assert result["same_frames"] is True
    assert result["one_thread_s"] > 0 and result["auto_threads_s"] > 0


def test_answer_ceiling_reads_the_facts_from_informative_tokens_and_not_from_noise(tmp_path):
    """benchmarks/probe_answer_ceiling.py answers every scored test question from classifiers on the clip tokens:
    near-perfect on the synthetic features (each fact a prototype in its regions), near chance once the same
    files hold noise."""
    import numpy as np

    from avsd_dataset.synthetic import generate_synthetic_avsd

    import probe_answer_ceiling

    data_dir = str(tmp_path / "data")
    generate_synthetic_avsd(data_dir, num_train_dialogs=300, num_valid_dialogs=4, num_test_dialogs=64, video_stream="r3d_18",
                            num_frames=8, num_regions=4, feature_dim=32, noise=0.3, seed=0)
    feature_dir = os.path.join(data_dir, "features")
    informative = probe_answer_ceiling.main([data_dir, feature_dir, "--epochs", "30"])
    assert set(informative) == {"linear", "projection"}
    assert informative["linear"]["all"] > 0.9 and informative["projection"]["all"] > 0.9
    assert informative["linear"]["place"] == 1.0 and informative["linear"]["action_first"] > 0.9
    rng = np.random.default_rng(1)
    for folder in ("r3d_18", "r3d_18_testset"):
        for name in os.listdir(os.path.join(feature_dir, folder)):
            if name.endswith(".npy"):
                path = os.path.join(feature_dir, folder, name)
                np.save(path, rng.standard_normal(np.load(path).shape).astype(np.float32))
    noise = probe_answer_ceiling.main([data_dir, feature_dir, "--epochs", "30"])
    assert noise["linear"]["all"] < 0.35 and noise["projection"]["all"] < 0.35


def test_feature_transforms_write_clip_tokens_and_the_clips_and_regions_layout(tmp_path):
    """benchmarks/diag_feature_transforms.py: a transform writes one token per clip; `clips_and_regions` writes the
    clip tokens, then one token per region averaged over the clips; an unknown variant is refused by name."""
    import numpy as np

    from avsd_dataset.synthetic import generate_synthetic_avsd

    import diag_feature_transforms

    data_dir = str(tmp_path / "data")
    generate_synthetic_avsd(data_dir, num_train_dialogs=40, num_valid_dialogs=2, num_test_dialogs=4, video_stream="r3d_18",
                            num_frames=6, num_regions=4, feature_dim=512, noise=0.3, seed=0)
    feature_dir, out_root = os.path.join(data_dir, "features"), str(tmp_path / "out")
    diag_feature_transforms.main([data_dir, feature_dir, out_root, "--variants", "differences_half", "clips_and_regions"])
    name = sorted(n for n in os.listdir(os.path.join(feature_dir, "r3d_18_testset")) if n.endswith(".npy"))[0]
    grid = np.load(os.path.join(feature_dir, "r3d_18_testset", name))  # [6, 4, 512]
    halved = np.load(os.path.join(out_root, "differences_half", "r3d_18_testset", name))
    layout = np.load(os.path.join(out_root, "clips_and_regions", "r3d_18_testset", name))
    clip_tokens = grid.mean(axis=1)
    assert halved.shape == (6, 1, 512) and layout.shape == (6 + 4, 1, 512)
    np.testing.assert_allclose(halved[:, 0, :256], clip_tokens[:, :256], atol=1e-5)
    np.testing.assert_allclose(halved[:, 0, 256:], 0.5 * clip_tokens[:, 256:], atol=1e-5)
    np.testing.assert_allclose(layout[:6, 0], clip_tokens, atol=1e-5)
    np.testing.assert_allclose(layout[6:, 0], grid.mean(axis=0), atol=1e-5)
    with pytest.raises(ValueError, match="unknown variants \\['nope'\\]"):
        diag_feature_transforms.main([data_dir, feature_dir, out_root, "--variants", "nope"])


def test_every_action_moves_in_the_video_demos_32_pixel_frames():
    """Renderer 4: at 32 x 32 each of the 8 actions shows moving pixels and differs from every other action's
    picture (renderer 3 drew "laughs" and "waves" as still pictures there: 0 moving pixels)."""
    import check_action_motion

    rows = check_action_motion.motion_table(32, 32)
    assert sorted(row["action"] for row in rows) == sorted(check_action_motion.FACT_VALUES["action"])
    for row in rows:
        assert row["moving_mean"] >= 1.0 and row["apart"] >= 4, row
