"""Why did the 6 x 384 scratch demo diverge under bf16 (H200: NaN between steps 801 and 900, float32 trained on)?

Runs the embedded demo of `run_vgd.py` (synthetic data, offline GPT-2 built from scratch, `DataCollatorForVGD`,
`VGDTrainer` with its loss weights, AdamW, schedule, clipping and bf16 autocast: the real training path) with an
instrumented trainer that records, at EVERY step:
- each objective's loss (response, MLM, MVM, MVT, unweighted) and whether it is finite;
- the gradient norm before clipping, the largest per-parameter gradient norm and its parameter, non-finite grads;
- the largest |activation| of every block, attention, MLP, ln_f, the heads and the video projection, the largest
  attention score (q.k / sqrt(d) recomputed from `c_attn`'s output), and the first module (in execution order)
  whose output stops being finite.
It stops at the first non-finite loss / gradient (the step is reported) or after `--max_steps`, and writes one
JSON line per step plus a summary (`--output_json`).

    python benchmarks/bf16_stability.py --n_layer 6 --n_embd 384 --n_head 6 --learning_rate 1e-3 --bf16 --max_steps 300
    python benchmarks/bf16_stability.py ... --no-bf16          # the float32 twin (same seed, same batches)

Anything after `--` goes to run_vgd.py unchanged (e.g. `-- --max_grad_norm 0`). CPU: one torch thread unless
`--threads`; bf16 on the CPU is autocast like on a GPU (the Trainer's `--bf16`), matmuls in bf16 with float32
accumulation (oneDNN), so it reproduces bf16's rounding, not a GPU kernel's exact order.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402

OBJECTIVES = ("response", "mlm", "mvm", "mvt")


class StepRecorder:
    """Forward hooks that keep, per step, the max |output| of chosen modules and the first non-finite one."""

    def __init__(self, model):
        self.model = model
        self.current: dict = {}
        self.first_nonfinite: list[str] = []
        self.hooks = []
        named = dict(model.named_modules())
        watched = ["video_projection", "transformer.drop", "transformer.ln_f", "lm_head", "mvm_head", "mvt_head"]
        for index in range(len(model.transformer.h)):
            watched += [f"transformer.h.{index}.attn", f"transformer.h.{index}.mlp", f"transformer.h.{index}"]
        for name in watched:
            if name in named:
                self.hooks.append(named[name].register_forward_hook(self._hook(name)))
        for index, block in enumerate(model.transformer.h):
            self.hooks.append(block.attn.c_attn.register_forward_hook(self._attention_scores(index, block.attn)))

    def reset(self):
        self.current = {}
        self.first_nonfinite = []

    def _record(self, name, tensor):
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point() or tensor.numel() == 0:
            return
        with torch.no_grad():
            finite = bool(torch.isfinite(tensor).all())
            value = float(tensor.detach().float().abs().nan_to_num(nan=float("inf")).max())
        self.current[name] = max(self.current.get(name, 0.0), value)
        if not finite and name not in self.first_nonfinite:
            self.first_nonfinite.append(name)

    def _hook(self, name):
        def hook(module, args, output):
            if isinstance(output, tuple):
                output = output[0]
            self._record(name, output)

        return hook

    def _attention_scores(self, index, attn):
        def hook(module, args, output):
            with torch.no_grad():
                query, key, _ = output.detach().float().split(attn.split_size, dim=2)
                heads, head_dim = attn.num_heads, attn.head_dim
                shape = (*query.shape[:2], heads, head_dim)
                query = query.view(shape).transpose(1, 2)
                key = key.view(shape).transpose(1, 2)
                # max over the first 8 rows only: enough to follow the growth, cheap
                scores = query[:8] @ key[:8].transpose(-1, -2) / math.sqrt(head_dim)
            self._record(f"transformer.h.{index}.attn.scores", scores)

        return hook


class StopRun(RuntimeError):
    """--stop_after: end the run at a step count without changing the schedule (unlike --max_steps)."""


def instrumented_trainer_class(base, log_path: str, recorder_box: dict, stop_at_nonfinite: bool, stop_after: int = 0):
    class InstrumentedVGDTrainer(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if "recorder" not in recorder_box:
                recorder_box["recorder"] = StepRecorder(self.accelerator.unwrap_model(model))
                recorder_box["trainer"] = self
            recorder_box["recorder"].reset()
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
            record = {"step": self.state.global_step + 1}
            for name in OBJECTIVES:
                value = outputs.get(f"{name}_loss") if hasattr(outputs, "get") else None
                record[f"{name}_loss"] = None if value is None else float(value.detach().float())
            record["total_loss"] = float(loss.detach().float())
            logits = outputs.get("mvt_logits")
            record["mvt_logits_max"] = None if logits is None else float(logits.detach().float().abs().max())
            recorder_box["pending"] = record
            return (loss, outputs) if return_outputs else loss

        def _clip_grad_norm(self, model):
            unwrapped = self.accelerator.unwrap_model(model)
            per_parameter = {
                name: float(p.grad.detach().float().norm()) for name, p in unwrapped.named_parameters() if p.grad is not None
            }
            norm = super()._clip_grad_norm(model)
            self._record_step(per_parameter, norm)
            return norm

        def _record_step(self, per_parameter, norm):
            record = recorder_box.pop("pending", {"step": self.state.global_step + 1})
            recorder = recorder_box["recorder"]
            record["learning_rate"] = self.lr_scheduler.get_last_lr()[0] if self.lr_scheduler is not None else None
            record["grad_norm"] = float(norm) if norm is not None else None
            finite_norms = {k: v for k, v in per_parameter.items() if math.isfinite(v)}
            if finite_norms:
                worst = max(finite_norms, key=finite_norms.get)
                record["largest_param_grad"] = [worst, finite_norms[worst]]
            record["nonfinite_grads"] = sorted(k for k, v in per_parameter.items() if not math.isfinite(v))[:20]
            record["activation_max"] = {k: round(v, 4) for k, v in recorder.current.items()}
            record["first_nonfinite_activations"] = recorder.first_nonfinite[:10]
            with torch.no_grad():
                record["weight_max"] = max(float(p.detach().abs().max()) for p in self.model.parameters())
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            losses_finite = all(record.get(f"{n}_loss") is None or math.isfinite(record[f"{n}_loss"]) for n in OBJECTIVES)
            if stop_at_nonfinite and (not losses_finite or record["nonfinite_grads"] or not math.isfinite(record["grad_norm"] or 0.0)):
                raise NonFiniteStep(record)
            if stop_after and record["step"] >= stop_after:
                raise StopRun(record["step"])

    return InstrumentedVGDTrainer


class NonFiniteStep(RuntimeError):
    def __init__(self, record):
        super().__init__(f"non-finite at step {record['step']}")
        self.record = record


def summarise(log_path: str) -> dict:
    records = [json.loads(line) for line in open(log_path, encoding="utf-8")]
    summary = {"steps": len(records)}
    if not records:
        return summary
    first_bad = next(
        (r for r in records if r["nonfinite_grads"] or r["first_nonfinite_activations"]
         or any(r.get(f"{n}_loss") is not None and not math.isfinite(r[f"{n}_loss"]) for n in OBJECTIVES)),
        None,
    )
    summary["first_nonfinite_step"] = first_bad["step"] if first_bad else None
    if first_bad:
        summary["first_nonfinite_record"] = first_bad
        before = [r for r in records if r["step"] < first_bad["step"]][-10:]
        summary["grad_norms_before"] = [(r["step"], r["grad_norm"]) for r in before]
    finite_norms = [r["grad_norm"] for r in records if r["grad_norm"] is not None and math.isfinite(r["grad_norm"])]
    summary["grad_norm_max"] = max(finite_norms) if finite_norms else None
    summary["grad_norm_last"] = records[-1]["grad_norm"]
    summary["last_losses"] = {n: records[-1].get(f"{n}_loss") for n in OBJECTIVES}
    keys = set().union(*(r["activation_max"] for r in records))
    summary["activation_max_overall"] = {k: max(r["activation_max"].get(k, 0.0) for r in records) for k in sorted(keys)}
    summary["attention_score_max_by_step"] = [
        (r["step"], max((v for k, v in r["activation_max"].items() if k.endswith(".scores")), default=None))
        for r in records[:: max(1, len(records) // 20)]
    ]
    summary["losses_by_step"] = [
        (r["step"], *(None if r.get(f"{n}_loss") is None else round(r[f"{n}_loss"], 4) for n in OBJECTIVES), r["grad_norm"])
        for r in records[:: max(1, len(records) // 20)]
    ]
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n_layer", type=int, default=6)
    parser.add_argument("--n_embd", type=int, default=384)
    parser.add_argument("--n_head", type=int, default=6)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--max_steps", type=int, default=300)
    parser.add_argument("--num_train_epochs", type=float, default=8, help="sets the schedule's length when max_steps is 0")
    parser.add_argument("--per_device_train_batch_size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output_dir", default=None)
    parser.add_argument("--output_json", default=None)
    parser.add_argument("--stop_after", type=int, default=0, help="end after this many steps, keeping the schedule of --num_train_epochs (use with --max_steps 0)")
    parser.add_argument("--keep_going", action="store_true", help="do not stop at the first non-finite step")
    args, passthrough = parser.parse_known_args(argv)
    passthrough = [a for a in passthrough if a != "--"]
    torch.set_num_threads(args.threads)

    import run_vgd
    import trainer_vgd

    output_dir = args.output_dir or tempfile.mkdtemp(prefix="bf16-stability-")
    log_path = os.path.join(output_dir, "steps.jsonl")
    os.makedirs(output_dir, exist_ok=True)
    if os.path.exists(log_path):
        os.remove(log_path)
    recorder_box: dict = {}
    run_vgd.VGDTrainer = instrumented_trainer_class(trainer_vgd.VGDTrainer, log_path, recorder_box, not args.keep_going, args.stop_after)
    run_argv = [
        "--output_dir", os.path.join(output_dir, "run"), "--overwrite_output_dir", "true",
        "--demo_n_layer", str(args.n_layer), "--demo_n_embd", str(args.n_embd), "--demo_n_head", str(args.n_head),
        "--learning_rate", str(args.learning_rate), "--bf16", str(args.bf16), "--seed", str(args.seed),
        "--per_device_train_batch_size", str(args.per_device_train_batch_size),
        "--num_train_epochs", str(args.num_train_epochs), "--logging_steps", "50",
        "--do_train", "true", "--do_eval", "false", "--do_predict", "false", "--cpu_threads", str(args.threads),
    ]
    if args.max_steps:
        run_argv += ["--max_steps", str(args.max_steps)]
    run_argv += passthrough
    start = time.perf_counter()
    outcome = "finished"
    try:
        run_vgd.main(run_argv)
    except NonFiniteStep as error:
        outcome = f"stopped: non-finite at step {error.record['step']}"
    except StopRun as error:
        outcome = f"stopped after step {error.args[0]} (--stop_after)"
    except trainer_vgd.TrainingDivergedError as error:
        outcome = f"stopped by VGDTrainer: {error}"
    summary = {"outcome": outcome, "seconds": round(time.perf_counter() - start, 1), "args": vars(args),
               "run_vgd_argv": run_argv, "torch": torch.__version__, **summarise(log_path)}
    # optimizer steps whose update VGDTrainer dropped because the gradient was not finite (--max_nonfinite_grad_skips)
    summary["skipped_updates"] = getattr(recorder_box.get("trainer"), "nonfinite_grad_skipped_steps", None)
    print(json.dumps({k: v for k, v in summary.items() if k != "first_nonfinite_record"}, indent=1))
    if summary.get("first_nonfinite_record"):
        print("first non-finite step:", json.dumps(summary["first_nonfinite_record"]))
    if args.output_json:
        with open(args.output_json, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
    return summary


if __name__ == "__main__":
    main()
