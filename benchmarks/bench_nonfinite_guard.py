#!/usr/bin/env python
"""Price of VGDTrainer's non-finite-gradient check (`--max_nonfinite_grad_skips`, issue 20) on the demo's training loop.

    python benchmarks/bench_nonfinite_guard.py                 # 3 rounds x 300 steps each way, about 4 minutes of CPU
    python benchmarks/bench_nonfinite_guard.py --steps 20 --rounds 1 --extra_args "--demo_n_embd 32 ..."   # a smoke run

The check runs once per optimizer step: a float32 sum of every gradient tensor, one host sync, and (only when one is
not finite) dropping the update. Both cases run the real `run_vgd.main` (the embedded demo, one torch thread, the same
cached data) in this process, alternating (off, on, then on, off, ...) so that a change in the machine's load hits both;
per case it prints the median over rounds of the training loop's CPU time per step (`time.process_time` around
`trainer.train`, read from the demo's `stage_times.json`) and the ratio on / off.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--extra_args", default="", help="More run_vgd.py arguments for both cases, one string.")
    parser.add_argument("--output_json", default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    import run_vgd
    from benchmarks.bench_demo import cpu_model

    workdir = tempfile.mkdtemp(prefix="bench_guard_")
    cases = {"off": ["--max_nonfinite_grad_skips", "-1"], "on": []}
    per_step = {name: [] for name in cases}
    for round_index in range(args.rounds):
        order = list(cases) if round_index % 2 == 0 else list(cases)[::-1]  # off, on / on, off / ...: no order bias
        for name in order:
            flags = cases[name]
            output_dir = os.path.join(workdir, f"{name}-{round_index}")
            run_vgd.main([
                "--output_dir", output_dir, "--cache_dir", os.path.join(workdir, "cache"), "--max_steps", str(args.steps),
                "--do_train", "true", "--do_eval", "false", "--do_predict", "false", "--disable_tqdm", "true",
                "--logging_steps", str(args.steps), *flags, *args.extra_args.split(),
            ])
            with open(os.path.join(output_dir, "stage_times.json")) as f:
                training = json.load(f)["stages"]["training"]
            per_step[name].append(training["cpu_s"] / args.steps)
            print(f"round {round_index} {name:>3}: {1000 * per_step[name][-1]:.2f} ms CPU per step", flush=True)
    shutil.rmtree(workdir, ignore_errors=True)
    median = {name: statistics.median(values) for name, values in per_step.items()}
    print(f"\nCPU: {cpu_model()}; {args.rounds} rounds x {args.steps} steps per case, one torch thread")
    print(f"{'check':<6}{'median ms/step':>16}{'all rounds':>36}")
    for name in cases:
        print(f"{name:<6}{1000 * median[name]:16.2f}{'  '.join(f'{1000 * v:.2f}' for v in per_step[name]):>36}")
    print(f"on / off: {median['on'] / median['off']:.3f}x CPU time per step")
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump({"cpu": cpu_model(), "steps": args.steps, "per_step_cpu_s": per_step, "ratio_on_off": median["on"] / median["off"]}, f, indent=1)


if __name__ == "__main__":
    main()
