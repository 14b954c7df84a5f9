#!/usr/bin/env python
"""What run_vgd.py's allocator setting on the CPU (`keep_freed_memory_for_reuse`: glibc keeps freed buffers for
the next step instead of unmapping and trimming them) buys: the same shortened demo with and without it.

    python benchmarks/bench_cpu_memory.py                      # 300 training steps of the demo, 2 repeats
    python benchmarks/bench_cpu_memory.py --max_steps 600 --repeats 3

Each case runs `run_vgd.py --max_steps N --do_train` (the demo's settings) in a fresh process, after one untimed
warm-up run that builds the demo's cache, and reports the Trainer's `train_runtime`, the wall clock and the minor
page faults of the process. "glibc defaults" sets `MALLOC_ARENA_MAX=8` (no effect on a process with a few
threads, but any `MALLOC_*` variable makes run_vgd.py leave the allocator alone). Cases alternate within each
repeat and the medians are reported, because the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_busy_machine import run_demo  # noqa: E402

SETTINGS = {"default (freed memory kept)": {}, "glibc defaults": {"MALLOC_ARENA_MAX": "8"}}


def measure(workdir: str, max_steps: int, env: dict[str, str]) -> tuple[float, float, int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
    wall, train_runtime = run_demo(workdir, max_steps, [], env)
    return wall, train_runtime, resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max_steps", type=int, default=300, help="training steps per run")
    parser.add_argument("--repeats", type=int, default=2, help="runs per setting (alternating)")
    args = parser.parse_args(argv)
    results = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory() as workdir:
        run_demo(workdir, 2, [], {})  # builds the demo's data and backbone once
        for repeat in range(args.repeats):
            for name, env in SETTINGS.items():
                results[name].append(measure(workdir, args.max_steps, env))
                wall, train, faults = results[name][-1]
                print(f"repeat {repeat + 1} {name}: training {train:.1f} s, process {wall:.1f} s, {faults:,} minor faults", flush=True)
    medians = {name: [statistics.median(run[i] for run in runs) for i in range(3)] for name, runs in results.items()}
    (tuned_wall, tuned_train, tuned_faults), (plain_wall, plain_train, plain_faults) = medians.values()
    print(f"\n{args.max_steps} demo training steps, median of {args.repeats}")
    print("| setting | training (s) | process (s) | minor page faults |\n|---|---|---|---|")
    for name, (wall, train, faults) in medians.items():
        print(f"| {name} | {train:.1f} | {wall:.1f} | {faults:,.0f} |")
    print(f"| glibc defaults / default | {plain_train / tuned_train:.2f}x | {plain_wall / tuned_wall:.2f}x | {plain_faults / max(tuned_faults, 1):.1f}x |")
    return medians


if __name__ == "__main__":
    main()
