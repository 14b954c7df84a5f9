#!/usr/bin/env python
"""How much a busy machine slows the demo down: the same shortened demo run idle and next to CPU-bound processes,
side by side in one process, for run_vgd.py's thread settings and for the settings it had before.

    python benchmarks/bench_busy_machine.py                      # 30 training steps of the demo
    python benchmarks/bench_busy_machine.py --max_steps 80 --repeats 3 --decode

Each case runs `run_vgd.py --max_steps N --do_train` (the demo's settings; with `--decode` also `--do_predict`: its
192 test turns decoded twice) in a fresh process and times it: the wall clock of the whole process and the
Trainer's `train_runtime` (after one untimed warm-up run that builds the demo's cache). Each time is printed as it
is measured.
"loaded" starts `--busy` processes that spin on the CPU (`while True: pass`) first. Cases alternate idle / loaded
within each repeat, and the medians are reported, because the machine may be shared.

Settings compared:
- `default`: what `python run_vgd.py` does now (the demo: `--cpu_threads 1`; OpenMP threads wait passively).
- `before`:  torch's default, one thread per core, OpenMP's default spin-then-sleep waiting (what the demo did).
- `all cores, passive`: one thread per core with passive waiting (what a `--data_dir` run gets on a CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def settings(cores: int) -> dict[str, tuple[list[str], dict[str, str]]]:
    return {
        "default": ([], {}),
        "before": (["--cpu_threads", str(cores)], {"OMP_WAIT_POLICY": ""}),  # empty: libgomp's own default
        "all cores, passive": (["--cpu_threads", str(cores)], {}),
    }


def run_demo(workdir: str, max_steps: int, extra_args: list[str], extra_env: dict[str, str], decode: bool = False) -> tuple[float, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=REPO_ROOT, **extra_env)
    command = [
        sys.executable, os.path.join(REPO_ROOT, "run_vgd.py"), "--max_steps", str(max_steps), "--do_train", *(["--do_predict"] if decode else []),
        "--output_dir", os.path.join(workdir, "out"), "--overwrite_output_dir", "--disable_tqdm", "true", *extra_args,
    ]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    with open(os.path.join(workdir, "out", "train_results.json")) as f:
        return elapsed, json.load(f)["train_runtime"]


def busy_processes(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max_steps", type=int, default=30, help="Training steps of the shortened demo.")
    parser.add_argument("--decode", action="store_true", help="Also decode the test split (--do_predict), as the demo does.")
    parser.add_argument("--repeats", type=int, default=1, help="Idle / loaded pairs per setting (medians reported).")
    parser.add_argument("--busy", type=int, default=1, help="CPU-bound processes running in the loaded case.")
    parser.add_argument("--settings", default="default,before", help="Comma-separated: default, before, 'all cores, passive'.")
    args = parser.parse_args(argv)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    chosen = {name: value for name, value in settings(cores).items() if name in [s.strip() for s in args.settings.split(",")]}
    workdir = tempfile.mkdtemp(prefix="bench-busy-")
    load = lambda: ", ".join(f"{x:.2f}" for x in os.getloadavg())  # noqa: E731
    print(f"{cores} cores, load average before: {load()}; {args.max_steps} training steps"
          f"{' + decoding the 192 test turns twice' if args.decode else ''}; {args.busy} busy process(es) when loaded", flush=True)
    run_demo(workdir, 2, [], {})  # warm-up: the demo's cache (synthetic data, scratch backbone)
    times = {name: {"idle": [], "loaded": []} for name in chosen}
    for repeat in range(args.repeats):
        for name, (extra_args, extra_env) in chosen.items():
            for case in ("idle", "loaded"):
                busy = busy_processes(args.busy) if case == "loaded" else []
                try:
                    if busy:
                        time.sleep(0.5)
                    wall, train = run_demo(workdir, args.max_steps, extra_args, extra_env, args.decode)
                finally:
                    for process in busy:
                        process.kill()
                        process.wait()
                times[name][case].append((wall, train))
                print(f"repeat {repeat + 1}, {name}, {case}: process {wall:.1f} s, training loop {train:.1f} s (load average {load()})", flush=True)
    print(f"\n| setting | idle: process / training loop (s) | loaded: process / training loop (s) | loaded / idle: process, training loop |")
    print("|---|---|---|---|")
    for name, runs in times.items():
        idle = [statistics.median(t[i] for t in runs["idle"]) for i in (0, 1)]
        loaded = [statistics.median(t[i] for t in runs["loaded"]) for i in (0, 1)]
        print(f"| {name} | {idle[0]:.1f} / {idle[1]:.1f} | {loaded[0]:.1f} / {loaded[1]:.1f} | {loaded[0] / idle[0]:.2f}, {loaded[1] / idle[1]:.2f} |")
    return times


if __name__ == "__main__":
    main()
