#!/usr/bin/env python
"""Diagnostic: many trainings of the video demo's model side by side (one GPU or a many-core CPU), one table.

    python benchmarks/sweep_video_training.py DATA_DIR POOLED_NPZ WORK_DIR RUNS_JSON [--device cuda|cpu]
        [--deadline SECONDS] [--results FILE]

DATA_DIR is a `python -m avsd_dataset.video_demo` run's data folder (the dialogues' JSON files; its videos and
synthetic features are not read). POOLED_NPZ holds that run's standardised features with every clip's regions
averaged (one token per clip, what `--video_pooling temporal` trains on), int8-quantised per channel so that it
travels to a GPU machine: `--pack FEATURE_DIR` writes it from a stream folder (`r3d_18/`, `r3d_18_testset/`).
`--feature_dir DIR` (POOLED_NPZ then `-`) trains on a stream folder as it is instead, e.g. the video demo's own
standardised features on the CPU. RUNS_JSON is a list of runs,
`{"name": ..., "seed": S, "epochs": E, "model": "LAYERSxWIDTHxHEADS", "args": [...]}` (`args`: more run_vgd.py arguments).
Every run is `run_vgd.main` with the video demo's own training arguments (`avsd_dataset.video_demo.training_arguments`,
today's defaults) on those features, from an offline GPT-2 of the given shape built from the training dialogues
(`avsd_dataset.offline_gpt2`, as the video demo builds it: the same tokenizer and weights at 2x128x4), and the demo's table of
answer accuracy (with video / shuffled / chance, per question type); the captioning metrics are skipped (METEOR
needs Java, which a GPU machine may lack). All runs start at once, one process each (one CPU thread); a run still
going at `--deadline` seconds is stopped and reported with the step it reached. The table is printed last and
written to `--results` (JSON). Results: docs/video.md.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

STREAM = "r3d_18"
TYPES = ("place", "color", "count", "object", "action_first", "action_last", "action_next", "action_before")


def pack(feature_dir: str, out_file: str) -> None:
    """Average every clip's regions of a stream folder and write them int8-quantised (per-channel scale)."""
    arrays = {}
    for split in (STREAM, f"{STREAM}_testset"):
        names = sorted(n for n in os.listdir(os.path.join(feature_dir, split)) if n.endswith(".npy"))
        arrays[split] = ([n[:-4] for n in names], np.stack([np.load(os.path.join(feature_dir, split, n)).mean(axis=1) for n in names]))
    scale = np.abs(np.concatenate([x for _, x in arrays.values()])).max(axis=(0, 1)) / 127.0
    np.savez(out_file, scale=scale.astype(np.float32),
             **{f"{split}_ids": np.array(ids) for split, (ids, _) in arrays.items()},
             **{split: np.round(x / scale).astype(np.int8) for split, (_, x) in arrays.items()})


def unpack(npz_file: str, feature_dir: str) -> None:
    data = np.load(npz_file)
    scale = data["scale"]
    for split in (STREAM, f"{STREAM}_testset"):
        os.makedirs(os.path.join(feature_dir, split), exist_ok=True)
        for video_id, tokens in zip(data[f"{split}_ids"], data[split]):
            np.save(os.path.join(feature_dir, split, f"{video_id}.npy"), (tokens.astype(np.float32) * scale)[:, None, :])


def gpt2_dir(work_dir: str, data_dir: str, shape: str) -> str:
    """The video demo's offline GPT-2 (its stage 5, `avsd_dataset.video_demo.stage_gpt2`) at this shape, built once."""
    from avsd_dataset.video_demo import VideoDemoArguments, stage_gpt2

    n_layer, n_embd, n_head = (int(x) for x in shape.split("x"))
    demo_args = VideoDemoArguments(output_dir=work_dir, n_layer=n_layer, n_embd=n_embd, n_head=n_head)
    return stage_gpt2(demo_args, {"gpt2_dir": os.path.join(work_dir, f"gpt2-{shape}"), "data_dir": data_dir})["path"]


def run_one(spec_file: str) -> None:
    """One training (in its own process): run_vgd.main without the captioning metrics; writes result.json."""
    with open(spec_file, encoding="utf-8") as f:
        spec = json.load(f)
    import run_vgd

    run_vgd.avsd_caption_metrics = lambda predictions, references: {}
    start = time.time()
    metrics = run_vgd.main(spec["argv"])
    result = {key: value for key, value in metrics.items() if "accuracy" in key or key.startswith("train_")}
    result["seconds"] = time.time() - start
    with open(os.path.join(spec["output_dir"], "sweep_result.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)


def last_progress(log_file: str) -> str:
    try:
        with open(log_file, "rb") as f:
            f.seek(max(os.path.getsize(log_file) - 400, 0))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return "no log"
    marks = [part.strip() for part in tail.replace("\r", "\n").split("\n") if "it/s" in part or "s/it" in part]
    return marks[-1][-60:] if marks else tail.strip()[-120:]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", nargs="?")
    parser.add_argument("pooled_npz", nargs="?")
    parser.add_argument("work_dir", nargs="?")
    parser.add_argument("runs_json", nargs="?")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--deadline", type=float, default=480.0)
    parser.add_argument("--results", default=None)
    parser.add_argument("--max_steps", type=int, default=-1, help="Every run stops after this many steps (a dry run).")
    parser.add_argument("--pack", metavar="FEATURE_DIR", help="Write POOLED_NPZ (the 2nd argument) from FEATURE_DIR and stop.")
    parser.add_argument("--feature_dir", default=None,
                        help="Train on this stream folder as it is (regions kept; the runs average them, as the video demo "
                             "does) instead of POOLED_NPZ (then give '-' for it): the video demo's own features, on the CPU.")
    parser.add_argument("--one", metavar="SPEC_JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        return run_one(args.one)
    if args.pack:
        return pack(args.pack, args.pooled_npz)

    start = time.time()
    os.makedirs(args.work_dir, exist_ok=True)
    feature_dir = args.feature_dir or os.path.join(args.work_dir, "features")
    if args.feature_dir is None and not os.path.isdir(os.path.join(feature_dir, f"{STREAM}_testset")):
        unpack(args.pooled_npz, feature_dir)
    with open(args.runs_json, encoding="utf-8") as f:
        runs = json.load(f)
    from avsd_dataset.video_demo import VideoDemoArguments, paths, training_arguments

    processes = {}
    for run in runs:
        out_dir = os.path.join(args.work_dir, run["name"])
        os.makedirs(out_dir, exist_ok=True)
        demo_args = VideoDemoArguments(output_dir=out_dir, cache_dir=args.work_dir, video_pooling="temporal",
                                       seed=run["seed"], num_train_epochs=run["epochs"], max_steps=args.max_steps)
        where = dict(paths(demo_args), data_dir=args.data_dir, feature_dir=feature_dir)
        argv_run = training_arguments(demo_args, where, gpt2_dir(args.work_dir, args.data_dir, run.get("model", "2x128x4")))
        argv_run += ["--use_cpu", str(args.device == "cpu"), "--disable_tqdm", "false"] + run.get("args", [])
        spec_file = os.path.join(out_dir, "sweep_spec.json")
        with open(spec_file, "w", encoding="utf-8") as f:
            json.dump({"argv": argv_run, "output_dir": out_dir}, f)
        log = open(os.path.join(out_dir, "sweep.log"), "w")
        processes[run["name"]] = (subprocess.Popen([sys.executable, os.path.abspath(__file__), "--one", spec_file], stdout=log,
                                                   stderr=subprocess.STDOUT, cwd=ROOT), log, out_dir)
    print(f"[sweep] {len(processes)} runs started at {time.time() - start:.0f}s", flush=True)
    next_report = time.time() + 60
    while any(p.poll() is None for p, _, _ in processes.values()) and time.time() - start < args.deadline:
        time.sleep(5)
        running = [name for name, (p, _, _) in processes.items() if p.poll() is None]
        if time.time() >= next_report:
            next_report += 60
            print(f"[sweep {time.time() - start:.0f}s] running: " + "; ".join(f"{n}: {last_progress(os.path.join(processes[n][2], 'sweep.log'))}" for n in running), flush=True)
    table = {}
    for run in runs:
        process, log, out_dir = processes[run["name"]]
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
        result_file = os.path.join(out_dir, "sweep_result.json")
        if os.path.isfile(result_file):
            with open(result_file, encoding="utf-8") as f:
                table[run["name"]] = dict(json.load(f), run=run)
        else:
            table[run["name"]] = {"run": run, "unfinished": last_progress(os.path.join(out_dir, "sweep.log")), "rc": process.returncode}
    if args.results:
        with open(args.results, "w", encoding="utf-8") as f:
            json.dump(table, f, indent=1)
    print("| run | seed | epochs | model | args | accuracy | shuffled | " + " | ".join(TYPES) + " | train s |")
    for name, row in table.items():
        run = row["run"]
        head = f"| {name} | {run['seed']} | {run['epochs']} | {run.get('model', '2x128x4')} | {' '.join(run.get('args', []))} |"
        if "answer_accuracy" in row:
            per_type = " | ".join(f"{row.get(f'answer_accuracy/{t}', float('nan')):.2f}" for t in TYPES)
            print(f"{head} {row['answer_accuracy']:.3f} | {row['answer_accuracy_shuffled_video']:.3f} | {per_type} | {row['seconds']:.0f} |")
        else:
            print(f"{head} unfinished (rc {row.get('rc')}): {row.get('unfinished')} |")
    return table


if __name__ == "__main__":
    main()
