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
