#!/usr/bin/env python
"""CPU time of the embedded demo per stage, today's settings against the settings before issue 24, in one run.

    python benchmarks/bench_demo.py                        # both full demos, seed 0 (about 10 minutes of CPU)
    python benchmarks/bench_demo.py --seed 1 --cases after  # one case only
    python benchmarks/bench_demo.py --max_steps 100         # a quick look (training shortened in both cases)

Each case is `python run_vgd.py` (the demo) in a fresh process, one after the other (never two at once: the
machine may be shared), each with a fresh data cache (both generate the synthetic data, as a fresh clone does).
Per case it prints the CPU seconds (user + system, the Java scorer included) of each stage that the demo records in
`stage_times.json` (data, model, training, evaluation, decoding, scoring), of the start-up before them and of the
whole command (the child process's rusage), the wall time, and the test metrics; then the ratios before / after.
CPU time, not wall time, is what to compare on a shared machine: a run that waits for a core takes longer but not
more CPU. The CPU model and the load average at the start are printed with the numbers.

Cases:
- `before`: the demo as it was before issue 24: `--cache_train_turns false` and today's flags set back to the
  old values (BEFORE_ARGS below).
- `width_128`: as `after`, with the 2 x 128 model of the demo before its width became 96.
- `no_guard`: as `after`, with `--max_nonfinite_grad_skips -1` (no check of the gradients before each update).
- `after`:  `python run_vgd.py` as it is (only `--seed` and the folders given).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The demo's settings before issue 24 (those that issue 24 changed), given explicitly so that the comparison holds
# whatever the defaults become.
BEFORE_ARGS = [
    "--cache_train_turns", "false",
    "--num_train_epochs", "8",
    "--learning_rate", "3e-3",
    "--eval_max_generation_examples", "64",
    "--generation_num_beams", "3",
    "--demo_n_embd", "128",
    "--demo_n_head", "4",
]
# `width_128`: today's demo with the 2 x 128 model it had until the width became 96 (the other levers of issue 24 kept)
# `no_guard`: today's demo without VGDTrainer's non-finite-gradient check (issue 20), to price its host sync per step
CASES = {
    "before": BEFORE_ARGS,
    "width_128": ["--demo_n_embd", "128", "--demo_n_head", "4"],
    "no_guard": ["--max_nonfinite_grad_skips", "-1"],
    "after": [],
}
STAGES = ("data", "model", "training", "evaluation", "decoding", "scoring")
METRICS = ("answer_accuracy", "answer_accuracy_shuffled_video", "answer_accuracy_chance", "METEOR", "CIDEr")


def cpu_model() -> str:
    """The CPU model name (bench_extraction's reader: numpy and torch only, nothing of the project)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_extraction import _cpu_name

    return _cpu_name()


def run_case(name: str, args: list[str], workdir: str, seed: int, max_steps: int | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=REPO_ROOT)
    output_dir = os.path.join(workdir, name, "out")
    command = [
        sys.executable, os.path.join(REPO_ROOT, "run_vgd.py"), "--seed", str(seed), "--output_dir", output_dir,
        "--cache_dir", os.path.join(workdir, name, "cache"), "--overwrite_output_dir", "--disable_tqdm", "true",
        *(["--max_steps", str(max_steps)] if max_steps else []), *args,
    ]
    print(f"[{name}] {' '.join(command[1:])}", flush=True)
    log_path = os.path.join(workdir, f"{name}.log")
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        with open(log_path) as f:
            raise RuntimeError(f"[{name}] failed:\n{f.read()[-3000:]}")
    with open(os.path.join(output_dir, "stage_times.json")) as f:
        stages = json.load(f)
    with open(os.path.join(output_dir, "metrics.json")) as f:
        metrics = json.load(f)
    with open(os.path.join(output_dir, "trainer_state.json")) as f:
        steps = json.load(f).get("global_step")
    result = {
        "wall_s": wall,
        # the whole command: the demo and every child it waited for (Java's METEOR)
        "command_cpu_s": usage.ru_utime + usage.ru_stime,
        "startup_cpu_s": stages["startup_cpu_s"],
        "stages": stages["stages"],
        "metrics": {key: metrics.get(key) for key in METRICS},
        "train_steps": steps,
    }
    print(f"[{name}] {wall:.1f} s wall, {result['command_cpu_s']:.1f} s CPU; "
          + ", ".join(f"{stage} {values['cpu_s']:.1f}" for stage, values in result["stages"].items())
          + f"; accuracy {result['metrics']['answer_accuracy']:.3f}", flush=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", nargs="+", default=["before", "after"], choices=list(CASES), help="Which cases to run, in this order.")
    parser.add_argument("--max_steps", type=int, default=None, help="Shorten training in every case (a quick look; accuracy meaningless).")
    parser.add_argument("--extra_args", default="", help="More run_vgd.py arguments for every case, one string (e.g. a smaller demo for a test).")
    parser.add_argument("--workdir", default=None, help="Keep the runs' folders here (default: a temporary folder, removed).")
    parser.add_argument("--output_json", default=None)
    args = parser.parse_args()

    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_demo_")
    os.makedirs(workdir, exist_ok=True)
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; load average at start {os.getloadavg()[0]:.2f} (CPU times are "
          f"comparable on a shared machine, wall times are not)", flush=True)
    results = {}
    try:
        for name in args.cases:
            results[name] = run_case(name, CASES[name] + args.extra_args.split(), workdir, args.seed, args.max_steps)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    names = [name for name in CASES if name in results]  # in CASES order: the ratio columns are the first / each other
    print(f"\nCPU seconds per stage (seed {args.seed}" + (f", --max_steps {args.max_steps}" if args.max_steps else "") + ")")
    ratios = [f"{names[0]}/{name}" for name in names[1:]]
    header = f"{'stage':<22}" + "".join(f"{name:>10}" for name in names) + "".join(f"{ratio:>18}" for ratio in ratios)
    print(header)
    print("-" * len(header))

    def row(label, values):
        line = f"{label:<22}" + "".join(f"{value:10.1f}" if value is not None else f"{'-':>10}" for value in values)
        for value in values[1:]:
            line += f"{values[0] / value:17.2f}x" if values[0] and value else f"{'-':>18}"
        print(line)

    row("start-up (imports)", [results[name]["startup_cpu_s"] for name in names])
    for stage in STAGES:
        row(stage, [results[name]["stages"].get(stage, {}).get("cpu_s") for name in names])
    row("whole command", [results[name]["command_cpu_s"] for name in names])
    row("wall (shared machine)", [results[name]["wall_s"] for name in names])
    print(f"{'training steps':<22}" + "".join(f"{results[name]['train_steps'] or 0:10d}" for name in names))
    for key in METRICS:
        print(f"{key[:22]:<22}" + "".join(f"{results[name]['metrics'][key]:10.3f}" if results[name]["metrics"][key] is not None else f"{'-':>10}" for name in names))
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump({"cpu": cpu_model(), "seed": args.seed, "max_steps": args.max_steps, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
