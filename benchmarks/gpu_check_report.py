"""Collect the sections of benchmarks/gpu_check.sh into one JSON and print a short table (last).

    python benchmarks/gpu_check_report.py RESULTS_DIR DEVICE TOTAL_SECONDS
"""

from __future__ import annotations

import json
import os
import sys

SECTIONS = ("train", "decode", "extract_r3d_18", "extract_mvit_v2_s", "bf16", "fsdp", "deepspeed")


def load(folder: str, name: str) -> dict:
    entry: dict = {}
    rc_path, json_path, log_path = (os.path.join(folder, f"{name}{ext}") for ext in (".rc", ".json", ".log"))
    if os.path.exists(rc_path):
        rc, seconds = open(rc_path).read().split()
        entry.update(rc=int(rc), seconds=int(seconds), timed_out=int(rc) in (124, 137))
    if os.path.exists(json_path):
        try:
            entry["result"] = json.load(open(json_path, encoding="utf-8"))
        except ValueError as error:
            entry["result_error"] = str(error)
    if os.path.exists(log_path):
        lines = open(log_path, encoding="utf-8", errors="replace").read().splitlines()
        entry["log_tail"] = lines[-15:]
        if lines and lines[0].startswith("skipped:"):
            entry["skipped"] = lines[0][len("skipped: "):]
    return entry


def dig(data, *keys, default=None):
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return default
        data = data[key]
    return data


def fmt(value, spec=".3f"):
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return format(value, spec)
    return str(value)


def table(report: dict) -> str:
    s = report["sections"]
    train = dig(s, "train", "result") or {}
    eager, compiled = train.get("train_eager") or {}, train.get("train_compiled") or {}
    decode = dig(s, "decode", "result", "generation") or {}
    bf16 = dig(s, "bf16", "result") or {}
    rows = [
        ("train tokens/s ratio VGD/plain, eager", fmt(train.get("train_tokens_per_s_ratio"))),
        ("train tokens/s ratio VGD/plain, compiled", fmt(train.get("train_tokens_per_s_ratio_compiled"))),
        ("  vs plain with its loss fused", fmt(train.get("train_tokens_per_s_ratio_compiled_vs_plain_fused_loss"))),
        ("VGD tokens/s eager / compiled", f"{fmt(eager.get('vgd_tokens_per_s'), '.0f')} / {fmt(compiled.get('vgd_tokens_per_s'), '.0f')}"),
        ("peak memory ratio eager / compiled", f"{fmt(train.get('peak_memory_ratio'))} / {fmt(train.get('peak_memory_ratio_compiled'))}"),
        ("graph breaks VGD / plain (compiled)", f"{fmt(compiled.get('vgd_graph_breaks'), 'd')} / {fmt(compiled.get('plain_graph_breaks'), 'd')}"),
        ("decode: projected test set, beam 5 (s)", fmt(decode.get("projected_test_set_decode_s_cached"), ".1f")),
    ]
    for name in ("extract_r3d_18", "extract_mvit_v2_s"):
        result = dig(s, name, "result") or {}
        rate = dig(result, "clips_per_second", "end-to-end")
        rows.append((f"{name} clips/s end-to-end", fmt(rate, ".1f") if rate is not None else (dig(s, name, "skipped") or "-")))
    rows.append(("bf16 12x768: outcome", bf16.get("outcome") or dig(s, "bf16", "skipped") or "-"))
    rows.append(("bf16: steps / first non-finite step / max grad norm",
                 f"{fmt(bf16.get('steps'), 'd')} / {fmt(bf16.get('first_nonfinite_step'))} / {fmt(bf16.get('grad_norm_max'), '.2f')}"))
    for name in ("fsdp", "deepspeed"):
        entry = s.get(name) or {}
        rows.append((f"run_vgd.py {name}", entry.get("skipped") or (f"rc={entry['rc']} in {entry['seconds']} s" if "rc" in entry else "-")))
    rows.append(("sections timed out", ", ".join(n for n, e in s.items() if e.get("timed_out")) or "none"))
    width = max(len(r[0]) for r in rows)
    head = f"gpu_check ({report['device']}, {report['total_s']} s): {report.get('gpu') or 'no GPU'}"
    return "\n".join([head, "-" * len(head)] + [f"{label:<{width}}  {value}" for label, value in rows])


def main():
    folder, device, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
    report = {"device": device, "total_s": total, "sections": {}}
    gpu = os.path.join(folder, "gpu.txt")
    if os.path.exists(gpu):
        report["gpu"] = open(gpu).read().strip()
    for name in SECTIONS:
        entry = load(folder, name)
        if entry:
            report["sections"][name] = entry
    wheels = os.path.join(folder, "wheels.log")
    if os.path.exists(wheels):
        report["wheels"] = open(wheels).read().splitlines()[-5:]
    with open(os.path.join(folder, "gpu_check.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, default=str)
    print(table(report))


if __name__ == "__main__":
    main()
