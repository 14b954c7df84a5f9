#!/usr/bin/env python
"""How much a busy machine slows the demo down: the same shortened demo run idle and next to CPU-bound processes,
side by side in one process, for run_vgd.py's thread settings and for the settings it had before.

    python benchmarks/bench_busy_machine.py                      # 40 training steps + decoding the test split
    python benchmarks/bench_busy_machine.py --max_steps 80 --repeats 3 --busy 1

Each case runs `run_vgd.py --max_steps N --do_train --do_predict` (the demo's settings, its 192 test turns decoded
twice) in a fresh process and times it (wall clock, after one untimed warm-up run that builds the demo's cache).
"loaded" starts `--busy` processes that spin on the CPU (`while True: pass`) first. Cases alternate idle / loaded
within each repeat, and the medians are reported, because the machine may be shared.

Settings compared:
- `default`: what `python run_vgd.py` does now (the demo: `--cpu_threads 1`; OpenMP threads wait passively).
- `before`:  torch's default, one thread per core, OpenMP's default spin-then-sleep waiting (what the demo did).
- `all cores, passive`: one thread per core with passive waiting (what a `--data_dir` run gets on a CPU).
"""

from __future__ import annotations

import argparse
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


def run_demo(workdir: str, max_steps: int, extra_args: list[str], extra_env: dict[str, str]) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=REPO_ROOT, **extra_env)
    command = [
        sys.executable, os.path.join(REPO_ROOT, "run_vgd.py"), "--max_steps", str(max_steps), "--do_train", "--do_predict",
        "--output_dir", os.path.join(workdir, "out"), "--overwrite_output_dir", "--disable_tqdm", "true", *extra_args,
    ]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return elapsed


def busy_processes(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max_steps", type=int, default=40, help="Training steps of the shortened demo.")
    parser.add_argument("--repeats", type=int, default=1, help="Idle / loaded pairs per setting (medians reported).")
    parser.add_argument("--busy", type=int, default=1, help="CPU-bound processes running in the loaded case.")
    parser.add_argument("--settings", default="default,before", help="Comma-separated: default, before, 'all cores, passive'.")
    args = parser.parse_args(argv)

    cores = os.cpu_count() or 1
    chosen = {name: value for name, value in settings(cores).items() if name in [s.strip() for s in args.settings.split(",")]}
    workdir = tempfile.mkdtemp(prefix="bench-busy-")
    print(f"{cores} cores, load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{args.max_steps} training steps + decoding the 192 test turns twice; {args.busy} busy process(es) when loaded")
    run_demo(workdir, 2, [], {})  # warm-up: the demo's cache (synthetic data, scratch backbone)
    times = {name: {"idle": [], "loaded": []} for name in chosen}
    for _ in range(args.repeats):
        for name, (extra_args, extra_env) in chosen.items():
            times[name]["idle"].append(run_demo(workdir, args.max_steps, extra_args, extra_env))
            busy = busy_processes(args.busy)
            try:
                time.sleep(0.5)
                times[name]["loaded"].append(run_demo(workdir, args.max_steps, extra_args, extra_env))
            finally:
                for process in busy:
                    process.kill()
                    process.wait()
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"\n| setting | idle (s) | loaded (s) | loaded / idle |\n|---|---|---|---|")
    for name, runs in times.items():
        idle, loaded = statistics.median(runs["idle"]), statistics.median(runs["loaded"])
        print(f"| {name} | {idle:.1f} | {loaded:.1f} | {loaded / idle:.2f} |")
    return times


if __name__ == "__main__":
    main()
