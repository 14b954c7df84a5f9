"""VGD-GPT2 end-to-end benchmark: training step, generation, data path, scoring, padding waste.

Everything is measured in ONE process so that the ratios (VGD-GPT2 / plain GPT-2, cached / recompute) are
comparable even on a noisy, shared machine: the two sides of every ratio run interleaved, step by step, and the
median of each side is kept (wall time; the process CPU time is reported next to it).

1. Training step (forward + backward + AdamW step) of `VGDGPT2ForDialogue` with all four objectives (loss =
   1.5 x response + mlm + mvm + mvt, as `VGDTrainer` combines them) and of a plain `GPT2LMHeadModel` with the same
   n_layer / n_embd / n_head / vocab at the same total sequence length (F x P video tokens + text): tokens/s and
   peak memory, eager and (`--compile`; the default on CUDA) `torch.compile`. float32 on the CPU, bfloat16
   autocast + fused AdamW on a GPU (fused AdamW on the CPU too). VGD batches are built by hand the way
   `DataCollatorForVGD` lays them out (docs/design.md): `<video>` x F*P, `<cap>` caption, history turns, question,
   answer `<|endoftext|>`, `<cls>`; `mlm_labels` on ~15% of the context tokens, `mvm_mask` on ~15% of the regions,
   `mvt_labels` with ~15% negatives (labels / mlm / mvm removed from them, as the collator does). The plain model
   sees the same ids (placeholders are ordinary tokens to it) with `labels` on the same answer positions.
   With `--compile`, a third model is timed: plain GPT-2 with `loss_type` set (`GPT2FusedLoss`), whose loss
   compiles in the same graph as its LM head as VGD-GPT2's does (stock GPT-2 logs a warning in its loss, a graph
   break that happens to save one logits-sized zero gradient under AOTAutograd; see benchmarks/RESULTS.md).
   Peak memory = live tensor bytes before a step (parameters, AdamW state, the batch; gradients are set to None
   between steps) + the peak of the bytes allocated and not yet freed during the step. On CUDA the step peak is
   `torch.cuda.max_memory_allocated() - memory_allocated()` (reset before each model's steps; the other model of
   the pair stays on the device, so the absolute maximum would count it too). On the CPU it is replayed, in time
   order, from the allocation / free events of `torch.profiler` (`profile_memory=True`): every tensor that goes
   through PyTorch's CPU allocator and nothing else (no allocator caching, no Python objects, no libraries), so
   unlike `ru_maxrss` it is exact and repeatable (`tracemalloc` does not see torch allocations).
2. Generation: responses/s with beam 5 and exactly 20 new tokens (`min_new_tokens = max_new_tokens`, so both runs
   do the same work) after AVSD-like prefixes (F x P video tokens + ~100 text tokens, left padded), with the KV
   cache vs `use_cache=False` (every step re-projects the video and re-runs the whole prefix, as the reference
   code's decoding loop does). The cached rate also gives the projected time to decode the 1,710-dialogue test set.
   With `--static_cache` (default on CUDA) the same cached workload also runs with a static KV cache, eager and
   with the forward compiled (`fullgraph=True`), against the dynamic cache (ratios, compile time apart).
3. Data path: examples/s of `VideoFeatureStore` + `VGDProcessor.process_example` + `DataCollatorForVGD`, batch by
   batch in one process (as one DataLoader worker), on AVSD-shaped random features (i3d_rgb / i3d_flow [T, 2048],
   vggish [T', 128]) written to a temporary folder, warm page cache. benchmarks/bench_data_path.py has the
   detailed data-path benchmark.
4. Scoring: seconds to score 1,710 responses with `avsd_dataset.score` (the real DSTC7 test set in
   ../shared/avsd when present, otherwise synthetic sentences with 6 references each). Needs Java and
   pycocoevalcap; skipped (with the reason in the JSON) where they are missing, e.g. on the GPU machine.
5. Padding waste of training batches on an AVSD-like length distribution (7,659 dialogues x 10 turns: history
   grows with the turn index, caption + summary 20-40 words), random batches vs transformers'
   `LengthGroupedSampler` on the trainer's estimated lengths (`DialogueTurnDataset.lengths`), for a fixed and a
   variable number of video tokens (with and without the video length in the estimate).

Shapes (`--preset`, default = the device; `--set key=value` overrides a field):
- `cuda`: gpt2-small (12 x 768, 12 heads, vocab 50,257 + 7), batch 16 x 1,024 (768 video tokens = 96 frames x 8
  regions of AVSD's 4,224-dim features + 256 text tokens); generation 256 prompts (256 video + ~200 text tokens).
- `cpu`: gpt2-small scaled down in width and depth (4 x 256, 4 heads) with the vocabulary (6,144 + 7) and the
  feature size (512) scaled with it, so that gpt2-small's proportions hold: LM head / transformer FLOPs 0.50
  (gpt2-small 0.45), video projection / transformer FLOPs per video token 4.2% (3.8%), VGD's extra parameters
  6.7% (5.4%). Keeping the real vocabulary and feature size on a 4 x 256 model would make the LM head 80% of the
  compute and the feature-sized heads 13% of the parameters, a caricature of gpt2-small
  (`--set feature_dim=4224 base_vocab=50257` runs it anyway). Batch 4 x 256 (128 video + 128 text).
- `tiny`: seconds, for tests/test_benchmarks.py.
On the CPU, torch runs one thread by default (`--threads`): the cores are shared, and a parallel region waits for
its slowest thread, so a preempted thread stalls whichever model happens to be running.

    python benchmarks/bench_vgd.py                                     # CPU, about a minute on 2 cores
    python benchmarks/bench_vgd.py --compile                           # + torch.compile (a few minutes more)
    python benchmarks/bench_vgd.py --skip train data scoring padding --static_cache   # static vs dynamic KV cache
    python benchmarks/bench_vgd.py --device cuda --output_json r.json  # gpt2-small, bf16, eager + compiled

`--output_json PATH` writes `train_tokens_per_s_ratio` (VGD / plain, eager), `peak_memory_ratio` (VGD / plain,
eager), `generate_speedup_cached_vs_recompute`, their `*_compiled` (and `*_compiled_vs_plain_fused_loss`)
counterparts when compiled, every raw figure, the shapes, the versions and the targets (met or not).

Only torch, transformers, numpy and the repository's model / config modules are imported at start (the GPU
machine has no datasets / evaluate / pycocoevalcap); the data path (processor, tokenizers), scoring and padding
sections import what they need lazily and are reported as skipped, with the reason, when it is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback

import numpy as np
import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
for _path in (REPO_ROOT, BENCH_DIR):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from configuration_vgd_gpt2 import VGDGPT2Config  # noqa: E402
from modeling_vgd_gpt2 import VGDGPT2ForDialogue, compute_modality_and_turn_ids  # noqa: E402


GPT2_VOCAB = 50257  # GPT-2's own vocabulary; the processor adds 7 special tokens after it
NUM_SPECIAL = 7
AVSD_TEST_DIALOGUES = 1710

# Shapes. "cpu": small enough for a few minutes on 2 cores; "cuda": gpt2-small, batch 16 x 1,024 tokens;
# "tiny": seconds, for tests/test_benchmarks.py.
PRESETS = {
    "cpu": dict(
        n_layer=4, n_embd=256, n_head=4, base_vocab=6144, feature_dim=512,
        batch_size=4, video_frames=16, video_regions=8, text_length=128,
        warmup_steps=1, train_steps=8, compile=False, dtype="float32",
        gen_prompts=8, gen_batch_size=8, gen_video_frames=16, gen_video_regions=8, gen_text_length=100,
        num_beams=5, new_tokens=20, gen_cached_repeats=2, gen_static_cache=False,
        data_videos=16, data_examples=128, data_batch_size=16, data_max_video_frames=64,
        scoring_responses=AVSD_TEST_DIALOGUES, padding_dialogues=7659, padding_batch_size=16,
    ),
    "cuda": dict(
        n_layer=12, n_embd=768, n_head=12, base_vocab=GPT2_VOCAB, feature_dim=4224,
        batch_size=16, video_frames=96, video_regions=8, text_length=256,
        warmup_steps=3, train_steps=10, compile=True, dtype="bfloat16",
        gen_prompts=256, gen_batch_size=64, gen_video_frames=32, gen_video_regions=8, gen_text_length=200,
        num_beams=5, new_tokens=20, gen_cached_repeats=2, gen_static_cache=True,
        data_videos=32, data_examples=256, data_batch_size=16, data_max_video_frames=64,
        scoring_responses=AVSD_TEST_DIALOGUES, padding_dialogues=7659, padding_batch_size=16,
    ),
    "tiny": dict(
        n_layer=1, n_embd=32, n_head=2, base_vocab=200, feature_dim=16,
        batch_size=2, video_frames=2, video_regions=2, text_length=40,
        warmup_steps=1, train_steps=1, compile=False, dtype="float32",
        gen_prompts=2, gen_batch_size=2, gen_video_frames=2, gen_video_regions=2, gen_text_length=30,
        num_beams=2, new_tokens=3, gen_cached_repeats=1, gen_static_cache=False, gen_compile_backend="eager",
        data_videos=2, data_examples=8, data_batch_size=4, data_max_video_frames=8,
        scoring_responses=4, padding_dialogues=200, padding_batch_size=16,
    ),
}

TARGETS = {
    "train_tokens_per_s_ratio": {"cpu": 0.9, "cuda": 0.95, "op": ">="},
    "peak_memory_ratio": {"cpu": 1.1, "cuda": 1.1, "op": "<="},
    "generate_speedup_cached_vs_recompute": {"cpu": 3.0, "cuda": 3.0, "op": ">="},
    "padding_fraction_grouped": {"cpu": 0.15, "cuda": 0.15, "op": "<="},
}
GPU_GOALS = {"vgd_train_tokens_per_s_compiled": 320_000, "test_set_decode_seconds": 30.0}


# ---------------------------------------------------------------------------------------------- helpers


class SpecialIds:
    """Token ids laid out like `VGDProcessor.from_gpt2_pretrained`: the 7 specials right after GPT-2's vocab."""

    def __init__(self, base_vocab: int):
        self.eos = base_vocab - 1  # <|endoftext|> is GPT-2's last id
        self.video, self.cap, self.usr, self.sys, self.cls, self.mask, self.pad = range(base_vocab, base_vocab + NUM_SPECIAL)
        self.vocab_size = base_vocab + NUM_SPECIAL
        self.word_high = base_vocab - 1  # ordinary words: [0, eos)

    def config_fields(self) -> dict:
        return dict(
            video_token_id=self.video, cap_token_id=self.cap, usr_token_id=self.usr, sys_token_id=self.sys,
            cls_token_id=self.cls, mask_token_id=self.mask, pad_token_id=self.pad, eos_token_id=self.eos,
            bos_token_id=self.eos,
        )


def make_models(p: dict, device: torch.device, seed: int = 0) -> tuple[VGDGPT2ForDialogue, GPT2LMHeadModel, SpecialIds]:
    ids = SpecialIds(p["base_vocab"])
    common = dict(vocab_size=ids.vocab_size, n_layer=p["n_layer"], n_embd=p["n_embd"], n_head=p["n_head"], n_positions=1024)
    torch.manual_seed(seed)
    vgd = VGDGPT2ForDialogue(
        VGDGPT2Config(
            **common, **ids.config_fields(), video_feature_dim=p["feature_dim"],
            max_video_frames=max(256, p["video_frames"], p["gen_video_frames"]),
            max_video_regions=max(64, p["video_regions"], p["gen_video_regions"]), max_turns=16,
        )
    ).to(device)
    torch.manual_seed(seed)
    plain = GPT2LMHeadModel(GPT2Config(**common, pad_token_id=ids.pad, eos_token_id=ids.eos, bos_token_id=ids.eos)).to(device)
    return vgd, plain, ids


def dialogue_text(rng: np.random.Generator, ids: SpecialIds, text_length: int, with_answer: bool) -> tuple[list[int], int]:
    """Text ids of one AVSD-like example of exactly `text_length` tokens: `<cap>` caption, history turns
    (`<usr>` 8-token question `<sys>` 10-token answer), `<usr>` question `<sys>` [answer `<|endoftext|>` `<cls>`].
    Returns (ids, number of answer tokens incl. `<|endoftext|>`)."""

    def words(n):
        return rng.integers(0, ids.word_high, n).tolist()

    question_len = max(1, min(8, text_length // 10))
    answer_len = max(1, min(12, text_length // 8)) if with_answer else 0
    tail = 1 + question_len + 1 + (answer_len + 1 + 1 if with_answer else 0)  # <usr> q <sys> [answer <eos> <cls>]
    budget = text_length - tail - 1  # minus <cap>
    if budget < 1:
        raise ValueError(f"text_length {text_length} too short for an AVSD-like example")
    caption_len = min(30, budget)
    turns = min((budget - caption_len) // 20, 9)  # at most 9 history turns (10-turn dialogues), turn ids < 16
    caption_len = budget - 20 * turns  # the rest of the budget goes to the caption (+ summary)
    text = [ids.cap] + words(caption_len)
    for _ in range(turns):
        text += [ids.usr] + words(8) + [ids.sys] + words(10)
    text += [ids.usr] + words(question_len) + [ids.sys]
    if with_answer:
        text += words(answer_len) + [ids.eos, ids.cls]
    assert len(text) == text_length, (len(text), text_length)
    return text, (answer_len + 1 if with_answer else 0)


def make_training_batches(p: dict, ids: SpecialIds, device: torch.device, seed: int = 0) -> tuple[dict, dict]:
    """(VGD batch with all four objectives, plain GPT-2 batch) of the same shape [B, F*P + text_length]."""
    rng = np.random.default_rng(seed)
    batch_size, frames, regions, dim = p["batch_size"], p["video_frames"], p["video_regions"], p["feature_dim"]
    num_video = frames * regions
    rows, answer_lengths = [], []
    for _ in range(batch_size):
        text, answer_len = dialogue_text(rng, ids, p["text_length"], with_answer=True)
        rows.append([ids.video] * num_video + text)
        answer_lengths.append(answer_len)
    input_ids = torch.tensor(rows)
    length = input_ids.shape[1]
    labels = torch.full_like(input_ids, -100)
    for row, answer_len in enumerate(answer_lengths):
        span = slice(length - 1 - answer_len, length - 1)  # answer + <eos>, before <cls>
        labels[row, span] = input_ids[row, span]
    modality_ids, turn_ids = compute_modality_and_turn_ids(input_ids, VGDGPT2Config(**ids.config_fields()))
    generator = torch.Generator().manual_seed(seed)
    video_features = torch.randn(batch_size, frames, regions, dim, generator=generator)
    video_mask = torch.ones(batch_size, frames, regions, dtype=torch.bool)

    # MVT: ~15% negatives (at least one positive); a negative takes another example's video and loses its other labels.
    positive = torch.from_numpy(rng.random(batch_size) >= 0.15)
    if batch_size > 1 and not positive.any():
        positive[0] = True
    if batch_size > 1 and positive.all():
        positive[-1] = False  # keep the MVT loss meaningful at small batches: one negative
    negatives = (~positive).nonzero().flatten().tolist()
    for row in negatives:
        video_features[row] = video_features[(row + 1) % batch_size].clone()
        labels[row] = -100
    # MLM: ~15% of the context words of positive rows (no markers, video, answer, <eos>, <cls>).
    specials = torch.tensor([ids.video, ids.cap, ids.usr, ids.sys, ids.cls, ids.mask, ids.pad, ids.eos])
    candidates = ~torch.isin(input_ids, specials) & (labels == -100) & positive[:, None]
    chosen = candidates & (torch.rand(input_ids.shape, generator=generator) < 0.15)
    mlm_labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    vgd_input_ids = input_ids.masked_fill(chosen, ids.mask)
    # MVM: ~15% of the regions of positive rows.
    mvm_mask = (torch.rand(video_mask.shape, generator=generator) < 0.15) & video_mask & positive[:, None, None]

    vgd = dict(
        input_ids=vgd_input_ids, attention_mask=torch.ones_like(input_ids), modality_ids=modality_ids, turn_ids=turn_ids,
        video_features=video_features, video_mask=video_mask, labels=labels, mlm_labels=mlm_labels, mvm_mask=mvm_mask,
        mvt_labels=positive.float(),
    )
    plain = dict(input_ids=input_ids.clone(), attention_mask=torch.ones_like(input_ids), labels=labels.clone())
    to = lambda batch: {key: value.to(device) for key, value in batch.items()}  # noqa: E731
    return to(vgd), to(plain)


class GPT2FusedLoss(GPT2LMHeadModel):
    """`GPT2LMHeadModel` with `loss_type` set, so that its loss does not log a warning (a graph break under
    torch.compile). A subclass, not an attribute on a second `GPT2LMHeadModel`: Dynamo would otherwise reuse the
    stock model's compiled frames (same code, guards pass) and keep its graph break."""

    def __init__(self, config):
        super().__init__(config)
        self.loss_type = "ForCausalLM"


def vgd_loss(out) -> torch.Tensor:
    """`VGDTrainer`'s combination (default weights, per-batch means)."""
    return 1.5 * out.response_loss + out.mlm_loss + out.mvm_loss + out.mvt_loss


def plain_loss(out) -> torch.Tensor:
    return out.loss


def make_optimizer(model: torch.nn.Module, device: torch.device) -> tuple[torch.optim.Optimizer, str]:
    try:
        return torch.optim.AdamW(model.parameters(), lr=5e-5, fused=True), "AdamW(fused=True)"
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(model.parameters(), lr=5e-5), "AdamW(foreach)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast_context(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class Trainee:
    """A model, its optimizer, its batch and its loss: one training step per `step()`."""

    def __init__(self, name, model, forward, batch, loss_fn, device, dtype):
        self.name, self.model, self.forward, self.batch, self.loss_fn = name, model, forward, batch, loss_fn
        self.device, self.dtype = device, dtype
        self.optimizer, self.optimizer_name = make_optimizer(model, device)
        self.times: list[float] = []
        self.cpu_times: list[float] = []  # process CPU time: less sensitive than wall time to other jobs on the cores

    def step(self) -> float:
        with autocast_context(self.device, self.dtype):
            loss = self.loss_fn(self.forward(**self.batch))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())  # one sync per step, after the optimizer (as a logging Trainer does)

    def timed_step(self) -> float:
        synchronize(self.device)
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = self.step()
        synchronize(self.device)
        self.times.append(time.perf_counter() - start)
        self.cpu_times.append(time.process_time() - cpu_start)
        if not math.isfinite(loss):
            raise FloatingPointError(f"{self.name}: non-finite loss {loss}")
        return loss

    def static_bytes(self) -> int:
        """Live tensor bytes before a step: parameters, optimizer state, batch (gradients are None)."""
        seen, total = set(), 0
        tensors = list(self.model.parameters()) + [v for v in self.batch.values() if torch.is_tensor(v)]
        for state in self.optimizer.state.values():
            tensors += [v for v in state.values() if torch.is_tensor(v)]
        for tensor in tensors:
            key = (tensor.untyped_storage().data_ptr(), tensor.device)
            if key not in seen:
                seen.add(key)
                total += tensor.untyped_storage().nbytes()
        return total

    def peak_memory_bytes(self) -> tuple[int, str]:
        """Peak live tensor bytes of one training step (see the module docstring)."""
        if self.device.type == "cuda":
            # The other model of the pair is on the device too: count this model's step only, as on the CPU.
            synchronize(self.device)
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            for _ in range(2):
                self.step()
            synchronize(self.device)
            step_peak = torch.cuda.max_memory_allocated(self.device) - before
            return int(step_peak + self.static_bytes()), "static tensors + torch.cuda.max_memory_allocated peak over 2 steps"
        return cpu_step_peak_bytes(self.step) + self.static_bytes(), "static tensors + torch.profiler(profile_memory) peak of one step"


def cpu_step_peak_bytes(fn) -> int:
    """Peak of (bytes allocated - bytes freed) by PyTorch's CPU allocator while `fn()` runs, replaying the
    profiler's memory events in time order. Frees of tensors allocated before profiling are not reported by
    the profiler, which is what makes this a delta on top of the tensors that already existed."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def graph_break_count() -> int:
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return -1
    return int(sum(counters["graph_break"].values()))


def graph_break_reasons(limit: int = 12) -> list[str]:
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return []
    reasons = sorted(counters["graph_break"].items(), key=lambda item: -item[1])
    return [f"{count}x {' '.join(str(reason).split())[:200]}" for reason, count in reasons[:limit]]


def reset_graph_breaks() -> None:
    try:
        from torch._dynamo.utils import counters

        counters.clear()
    except ImportError:
        pass


# ---------------------------------------------------------------------------------------------- 1. training


def bench_training(p: dict, device: torch.device, compiled: bool, log=print) -> dict:
    dtype = getattr(torch, p["dtype"])
    vgd_model, plain_model, ids = make_models(p, device)
    vgd_batch, plain_batch = make_training_batches(p, ids, device)
    assert vgd_batch["input_ids"].shape == plain_batch["input_ids"].shape
    batch_size, length = vgd_batch["input_ids"].shape
    tokens = batch_size * length
    vgd_model.train()
    plain_model.train()
    result = {
        "batch_size": batch_size, "sequence_length": length, "video_tokens": p["video_frames"] * p["video_regions"],
        "text_tokens": p["text_length"], "tokens_per_step": tokens,
        "dtype": p["dtype"] if dtype == torch.float32 else f"{p['dtype']} autocast (float32 weights)",
        "compiled": compiled,
        "vgd_parameters": sum(t.numel() for t in vgd_model.parameters()),
        "plain_parameters": sum(t.numel() for t in plain_model.parameters()),
    }
    sides = [("vgd", vgd_model, vgd_batch, vgd_loss), ("plain", plain_model, plain_batch, plain_loss)]
    if compiled:
        # Stock GPT2LMHeadModel logs a warning inside its loss (`loss_type=None ... unrecognized`): under torch.compile
        # that logger call is a graph break, so its loss lands in a separate graph. VGD-GPT2 sets loss_type and its
        # loss compiles in the same graph as the LM head, where AOTAutograd materialises a zero gradient the size of
        # the logits for the (unused) `logits` output. This third model (plain GPT-2 with loss_type set, no graph
        # break) tells that compile effect apart from VGD's own cost.
        fused = GPT2FusedLoss(plain_model.config).to(device)
        fused.load_state_dict(plain_model.state_dict())
        fused.train()
        sides.append(("plain_fused_loss", fused, plain_batch, plain_loss))
    trainees = []
    for name, model, batch, loss_fn in sides:
        forward = model
        if compiled:
            reset_graph_breaks()
            forward = torch.compile(model)
        trainees.append(Trainee(name, model, forward, batch, loss_fn, device, dtype))
    result["optimizer"] = trainees[0].optimizer_name

    for trainee in trainees:  # warm-up (and compilation) of each model before timing either
        start = time.perf_counter()
        if compiled:
            reset_graph_breaks()
        for _ in range(p["warmup_steps"]):
            trainee.step()
        synchronize(device)
        result[f"{trainee.name}_warmup_s"] = time.perf_counter() - start
        if compiled:
            result[f"{trainee.name}_graph_breaks"] = graph_break_count()
            result[f"{trainee.name}_graph_break_reasons"] = graph_break_reasons()
    for _ in range(p["train_steps"]):  # interleaved: both models see the same machine load
        for trainee in trainees:
            trainee.timed_step()
    for trainee in trainees:
        median = statistics.median(trainee.times)
        result[f"{trainee.name}_step_s_median"] = median
        result[f"{trainee.name}_step_s_all"] = trainee.times
        result[f"{trainee.name}_tokens_per_s"] = tokens / median
        result[f"{trainee.name}_step_cpu_s_median"] = statistics.median(trainee.cpu_times)
        result[f"{trainee.name}_peak_memory_bytes"], result["peak_memory_method"] = trainee.peak_memory_bytes()
    result["train_tokens_per_s_ratio"] = result["vgd_tokens_per_s"] / result["plain_tokens_per_s"]
    result["peak_memory_ratio"] = result["vgd_peak_memory_bytes"] / result["plain_peak_memory_bytes"]
    result["train_cpu_time_ratio"] = result["plain_step_cpu_s_median"] / result["vgd_step_cpu_s_median"]  # same sense as tokens/s
    if compiled:
        result["train_tokens_per_s_ratio_vs_plain_fused_loss"] = result["vgd_tokens_per_s"] / result["plain_fused_loss_tokens_per_s"]
        result["peak_memory_ratio_vs_plain_fused_loss"] = result["vgd_peak_memory_bytes"] / result["plain_fused_loss_peak_memory_bytes"]
    log(
        f"  train ({'compiled' if compiled else 'eager'}): VGD {result['vgd_tokens_per_s']:.0f} tok/s, plain "
        f"{result['plain_tokens_per_s']:.0f} tok/s, ratio {result['train_tokens_per_s_ratio']:.3f}; peak memory ratio "
        f"{result['peak_memory_ratio']:.3f}"
    )
    del trainees, vgd_model, plain_model, sides
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


# ---------------------------------------------------------------------------------------------- 2. generation


def make_generation_batch(p: dict, ids: SpecialIds, device: torch.device, seed: int = 1) -> dict:
    """AVSD-like prompts (video placeholders, caption, history, question, `<sys>`), left padded; text lengths
    vary by +-20% around `gen_text_length`."""
    rng = np.random.default_rng(seed)
    frames, regions, dim = p["gen_video_frames"], p["gen_video_regions"], p["feature_dim"]
    num_video = frames * regions
    rows = []
    for _ in range(p["gen_prompts"]):
        text_length = int(round(p["gen_text_length"] * rng.uniform(0.8, 1.2)))
        text, _ = dialogue_text(rng, ids, text_length, with_answer=False)
        rows.append([ids.video] * num_video + text)
    length = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), length), ids.pad)
    attention_mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, length - len(row):] = torch.tensor(row)
        attention_mask[i, length - len(row):] = 1
    generator = torch.Generator().manual_seed(seed)
    video_features = torch.randn(len(rows), frames, regions, dim, generator=generator)
    video_mask = torch.ones(len(rows), frames, regions, dtype=torch.bool)
    batch = dict(input_ids=input_ids, attention_mask=attention_mask, video_features=video_features, video_mask=video_mask)
    return {key: value.to(device) for key, value in batch.items()}


def generation_setup(p: dict, device: torch.device):
    """`(dtype, model, batch, kwargs)` of the generation benchmarks: the VGD model in `p["dtype"]` (bfloat16 on a
    GPU) in eval mode, the prompt batch, and beam-search arguments that decode exactly `new_tokens` tokens."""
    dtype = getattr(torch, p["dtype"])
    vgd_model, plain_model, ids = make_models(p, device)
    del plain_model
    model = vgd_model.to(dtype).eval()
    batch = make_generation_batch(p, ids, device)
    kwargs = dict(
        num_beams=p["num_beams"], max_new_tokens=p["new_tokens"], min_new_tokens=p["new_tokens"], do_sample=False,
        pad_token_id=ids.pad, eos_token_id=ids.eos,
    )
    return dtype, model, batch, kwargs


def bench_generation(p: dict, device: torch.device, log=print) -> dict:
    dtype, model, batch, kwargs = generation_setup(p, device)
    chunks = [
        {key: value[i : i + p["gen_batch_size"]] for key, value in batch.items()}
        for i in range(0, p["gen_prompts"], p["gen_batch_size"])
    ]

    def run(use_cache: bool) -> tuple[float, list[torch.Tensor]]:
        synchronize(device)
        start = time.perf_counter()
        outputs = []
        with torch.inference_mode():
            for chunk in chunks:
                outputs.append(model.generate(**chunk, use_cache=use_cache, **kwargs))
        synchronize(device)
        return time.perf_counter() - start, outputs

    if device.type == "cuda":  # warm-up (kernels, allocator) before timing
        run(True)
    cached_times, recompute_times = [], []
    cached_out = recompute_out = None
    for repeat in range(p["gen_cached_repeats"]):  # interleaved: cached, recompute, cached, ...
        seconds, cached_out = run(True)
        cached_times.append(seconds)
        if repeat == 0:
            seconds, recompute_out = run(False)
            recompute_times.append(seconds)
    new_tokens = [out.shape[1] - chunk["input_ids"].shape[1] for out, chunk in zip(cached_out, chunks)]
    cached_s, recompute_s = min(cached_times), min(recompute_times)
    result = {
        "prompts": p["gen_prompts"], "batch_size": p["gen_batch_size"], "num_beams": p["num_beams"],
        "new_tokens": p["new_tokens"], "new_tokens_generated": min(new_tokens),
        "prompt_length_max": int(batch["input_ids"].shape[1]),
        "prompt_video_tokens": p["gen_video_frames"] * p["gen_video_regions"],
        "prompt_text_tokens_mean": float((batch["attention_mask"].sum(-1) - p["gen_video_frames"] * p["gen_video_regions"]).float().mean()),
        "dtype": str(dtype).replace("torch.", ""),
        "cached_s_all": cached_times, "recompute_s_all": recompute_times,
        "cached_s": cached_s, "recompute_s": recompute_s,
        "responses_per_s_cached": p["gen_prompts"] / cached_s,
        "responses_per_s_recompute": p["gen_prompts"] / recompute_s,
        "generate_speedup_cached_vs_recompute": recompute_s / cached_s,
        "projected_test_set_decode_s_cached": AVSD_TEST_DIALOGUES / (p["gen_prompts"] / cached_s),
        "outputs_identical": all(torch.equal(a, b) for a, b in zip(cached_out, recompute_out)),
    }
    log(
        f"  generate: cached {result['responses_per_s_cached']:.2f} resp/s, recompute "
        f"{result['responses_per_s_recompute']:.2f} resp/s, speedup {result['generate_speedup_cached_vs_recompute']:.2f}"
    )
    return result


def bench_generation_caches(p: dict, device: torch.device, log=print) -> dict:
    """The generation workload of `bench_generation` (KV cache, beam search) three ways, interleaved in one
    process: eager with transformers' default dynamic cache, eager with a static cache, and with a static cache
    and the model's forward compiled (`torch.compile(model.forward, fullgraph=True, dynamic=False)`: one graph
    for the prefill, one for every decoding step; transformers 5.24 compiles the forward inside `generate()`
    for greedy search / sampling only, not for beam search). The first run of each mode is a warm-up (the
    compiled mode's includes the compilation, reported apart); the outputs must equal the dynamic cache's."""
    dtype, model, batch, kwargs = generation_setup(p, device)
    kwargs["disable_compile"] = True
    chunks = [
        {key: value[i : i + p["gen_batch_size"]] for key, value in batch.items()}
        for i in range(0, p["gen_prompts"], p["gen_batch_size"])
    ]
    torch._dynamo.reset()
    # the "tiny" preset (tests) checks the graph capture with the eager backend; real runs use inductor
    compiled_forward = torch.compile(model.forward, fullgraph=True, dynamic=False, backend=p.get("gen_compile_backend", "inductor"))
    modes = {
        "dynamic_eager": dict(),
        "static_eager": dict(cache_implementation="static"),
        "static_compiled": dict(cache_implementation="static"),
    }

    def run(mode: str) -> tuple[float, list[torch.Tensor]]:
        if mode == "static_compiled":
            model.forward = compiled_forward
        synchronize(device)
        start = time.perf_counter()
        try:
            with torch.inference_mode():
                outputs = [model.generate(**chunk, **modes[mode], **kwargs) for chunk in chunks]
            synchronize(device)
        finally:
            model.__dict__.pop("forward", None)
        return time.perf_counter() - start, outputs

    warmup_s, outputs = {}, {}
    for mode in modes:
        warmup_s[mode], outputs[mode] = run(mode)
    times = {mode: [] for mode in modes}
    for _ in range(max(p["gen_cached_repeats"], 2)):
        for mode in modes:
            seconds, _ = run(mode)
            times[mode].append(seconds)
    best = {mode: min(values) for mode, values in times.items()}
    result = {
        "prompts": p["gen_prompts"], "num_beams": p["num_beams"], "new_tokens": p["new_tokens"], "dtype": str(dtype).replace("torch.", ""),
        "seconds_all": times, "seconds": best,
        "responses_per_s": {mode: p["gen_prompts"] / seconds for mode, seconds in best.items()},
        "speedup_static_eager_vs_dynamic_eager": best["dynamic_eager"] / best["static_eager"],
        "speedup_static_compiled_vs_dynamic_eager": best["dynamic_eager"] / best["static_compiled"],
        "speedup_static_compiled_vs_static_eager": best["static_eager"] / best["static_compiled"],
        "compile_s": warmup_s["static_compiled"] - best["static_compiled"],
        "outputs_identical": {
            mode: all(torch.equal(a, b) for a, b in zip(outputs[mode], outputs["dynamic_eager"])) for mode in ("static_eager", "static_compiled")
        },
    }
    log(
        "  generate caches: static eager x{:.2f}, static compiled x{:.2f} vs dynamic eager (compile {:.0f} s)".format(
            result["speedup_static_eager_vs_dynamic_eager"], result["speedup_static_compiled_vs_dynamic_eager"], result["compile_s"]
        )
    )
    return result


# ---------------------------------------------------------------------------------------------- 3. data path


DATA_STREAM_DIMS = {"i3d_rgb": 2048, "i3d_flow": 2048, "vggish": 128}  # AVSD: 4,224 features per frame
DATA_WORDS = (
    "a the man woman person he she they it is are was does do what who where when how color room kitchen table "
    "chair door window couch book cup phone bag floor wall sits stands walks opens closes picks puts holds looks "
    "talks drinks reads turns leaves yes no not one two there then after before with on in at to of and red blue"
).split()


def _sentence(rng: np.random.Generator, low: int, high: int) -> str:
    return " ".join(DATA_WORDS[i] for i in rng.integers(0, len(DATA_WORDS), int(rng.integers(low, high + 1))))


def bench_data_path(p: dict, log=print) -> dict:
    """Examples/s of feature store + `VGDProcessor.process_example` + `DataCollatorForVGD`, interleaved batch by
    batch as one DataLoader worker runs them, on AVSD-shaped random features (i3d_rgb / i3d_flow [T, 2048], vggish
    [T', 128], T in [150, 250]) with a warm page cache; plus the time of each stage alone. See
    benchmarks/bench_data_path.py for the detailed data-path benchmark (several processor configurations)."""
    from avsd_dataset.offline_gpt2 import train_gpt2_tokenizer  # lazy: tokenizers (a transformers dependency)
    from avsd_dataset.collator import DataCollatorForVGD
    from processing_vgd import AVSD_STREAM_ORDER, VGDProcessor

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        feature_root = os.path.join(tmp, "features")
        image_ids = [f"VID{index:04d}" for index in range(p["data_videos"])]
        for stream in DATA_STREAM_DIMS:
            os.makedirs(os.path.join(feature_root, stream))
        for image_id in image_ids:
            frames = int(rng.integers(150, 251))
            for stream, dim in DATA_STREAM_DIMS.items():
                length = frames if stream != "vggish" else frames + int(rng.integers(-4, 5))
                np.save(os.path.join(feature_root, stream, f"{image_id}.npy"), rng.standard_normal((length, dim), dtype=np.float32))
        try:
            from avsd_dataset.features import VideoFeatureStore

            load = VideoFeatureStore(feature_root, streams=list(AVSD_STREAM_ORDER), split="train").__getitem__
            loader_name = "VideoFeatureStore"
        except ImportError:
            def load(image_id):
                return {s: np.load(os.path.join(feature_root, s, f"{image_id}.npy"), mmap_mode="r") for s in AVSD_STREAM_ORDER}
            loader_name = "np.load(mmap_mode='r')"
        for image_id in image_ids:  # warm page cache, as from the second epoch on
            for array in load(image_id).values():
                np.asarray(array).sum()

        tokenizer_dir = os.path.join(tmp, "gpt2")
        train_gpt2_tokenizer([_sentence(rng, 8, 16) for _ in range(2000)], tokenizer_dir, vocab_size=1000, model_max_length=1024)
        processor = VGDProcessor.from_gpt2_pretrained(
            tokenizer_dir, video_feature_dim=sum(DATA_STREAM_DIMS.values()), stream_order=list(AVSD_STREAM_ORDER),
            max_video_frames=p["data_max_video_frames"],
        )
        collator = DataCollatorForVGD(processor, seed=0)
        dialogues = [
            dict(
                image_id=image_ids[i % len(image_ids)], caption=_sentence(rng, 20, 40),
                history=[(_sentence(rng, 5, 10) + " ?", _sentence(rng, 6, 14) + " .") for _ in range(int(rng.integers(0, 10)))],
                question=_sentence(rng, 5, 10) + " ?", answer=_sentence(rng, 6, 14) + " .",
            )
            for i in range(p["data_examples"])
        ]
        batch_size = p["data_batch_size"]

        def example(d, video):
            return processor.process_example(video, d["caption"], d["history"], d["question"], d["answer"])

        collator([example(d, load(d["image_id"])) for d in dialogues[:batch_size]])  # warm-up
        wall, cpu = time.perf_counter(), time.process_time()
        num_tokens = 0
        for i in range(0, len(dialogues), batch_size):
            batch = collator([example(d, load(d["image_id"])) for d in dialogues[i : i + batch_size]])
            num_tokens += int(batch["attention_mask"].sum())
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stages = {}
        start = time.perf_counter()
        videos = [load(d["image_id"]) for d in dialogues]
        stages["load"] = time.perf_counter() - start
        start = time.perf_counter()
        examples = [example(d, v) for d, v in zip(dialogues, videos)]
        stages["process"] = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(0, len(examples), batch_size):
            collator(examples[i : i + batch_size])
        stages["collate"] = time.perf_counter() - start
    n = len(dialogues)
    result = {
        "loader": loader_name, "examples": n, "batch_size": batch_size, "max_video_frames": p["data_max_video_frames"],
        "feature_dim": sum(DATA_STREAM_DIMS.values()), "examples_per_s": n / wall, "examples_per_cpu_s": n / cpu,
        "mean_sequence_tokens": num_tokens / n,
        **{f"{stage}_us_per_example": seconds / n * 1e6 for stage, seconds in stages.items()},
    }
    log(f"  data path: {result['examples_per_s']:.0f} examples/s ({loader_name})")
    return result


# ---------------------------------------------------------------------------------------------- 4. scoring


def bench_scoring(p: dict, data_dir: str | None = None, log=print) -> dict:
    """Seconds to score `scoring_responses` responses the official way (stopword filter, PTB, BLEU, METEOR,
    ROUGE-L, CIDEr). Real DSTC7 test set (first reference as the hypothesis) when available and the full 1,710
    are asked for; otherwise synthetic sentences with 6 references each."""
    from avsd_dataset import score as avsd_score  # lazy: needs Java + pycocoevalcap at call time
    from bench_scoring import build_result_file

    avsd_score.check_java()
    import pycocoevalcap  # noqa: F401  (a clear ImportError here rather than inside the scorer)

    n = p["scoring_responses"]
    data_dir = data_dir or os.path.join(REPO_ROOT, "..", "shared", "avsd")
    test_json = os.path.join(data_dir, "test_set4DSTC7-AVSD.json")
    reference_json = os.path.join(data_dir, "test_set4DSTC7-AVSD_multiref.json")
    with tempfile.TemporaryDirectory() as tmp:
        if n == AVSD_TEST_DIALOGUES and os.path.exists(test_json) and os.path.exists(reference_json):
            result_json = os.path.join(tmp, "result.json")
            build_result_file(test_json, reference_json, result_json)
            source = "DSTC7 AVSD test set (hypothesis = first reference), avsd_dataset.score.score_result_file"
            start = time.perf_counter()
            scores = avsd_score.score_result_file(result_json, reference_json)
            seconds = time.perf_counter() - start
        else:
            rng = np.random.default_rng(0)
            vocab = "a the man woman he she is are does what color room door cup sits walks opens yes no two red".split()
            sentence = lambda: " ".join(rng.choice(vocab, int(rng.integers(5, 12))))  # noqa: E731
            hypotheses = [sentence() for _ in range(n)]
            references = [[sentence() for _ in range(6)] for _ in range(n)]
            source = f"synthetic ({n} responses x 6 references), avsd_dataset.score.compute_caption_metrics"
            start = time.perf_counter()
            scores = avsd_score.compute_caption_metrics(hypotheses, references)
            seconds = time.perf_counter() - start
    result = {"responses": n, "seconds": seconds, "responses_per_s": n / seconds, "source": source, "scores": scores}
    log(f"  scoring: {n} responses in {seconds:.1f} s")
    return result


# ---------------------------------------------------------------------------------------------- 5. padding waste


def simulate_avsd_lengths(num_dialogues: int, video: str, rng: np.random.Generator) -> dict:
    """Per training example (one per turn of 10-turn dialogues): the true sequence length (video placeholders +
    text tokens + `<cls>`) and the trainer's estimate (`DialogueTurnDataset.lengths`: words x 1.3 + 2 per history
    turn + 4 + video tokens when known).

    Words: caption + summary 20-40, questions 5-10, answers 6-14 (AVSD-like); BPE tokens per word ~1.15.
    `video`: "fixed64" (I3D capped at 64 frames: every AVSD video has more), "variable" (150-250 frames kept,
    max_video_frames=256, unknown to the estimate as in run_vgd.py today), "variable_known" (same, lengths known).
    """
    def tokens(words):
        return words + rng.binomial(words, 0.15)

    true_lengths, estimates = [], []
    for _ in range(num_dialogues):
        caption_words = int(rng.integers(20, 41))
        questions = rng.integers(5, 11, 10)
        answers = rng.integers(6, 15, 10)
        caption_tokens = tokens(caption_words)
        q_tokens, a_tokens = tokens(questions), tokens(answers)
        frames = 64 if video == "fixed64" else int(rng.integers(150, 251))
        for turn in range(10):
            words = caption_words + sum(int(questions[t] + answers[t]) for t in range(turn + 1))
            text = 1 + caption_tokens + sum(2 + int(q_tokens[t] + a_tokens[t]) for t in range(turn)) + 2 + int(q_tokens[turn] + a_tokens[turn]) + 1 + 1
            true_lengths.append(frames + text)  # text: <cap> caption, turns, <usr> q <sys> answer <eos>, <cls>
            known_video = frames if video in ("fixed64", "variable_known") else 0
            estimates.append(int(words * 1.3) + 2 * turn + 4 + known_video)
    return {"true": np.asarray(true_lengths), "estimate": estimates}


def padding_fraction(order, lengths: np.ndarray, batch_size: int) -> float:
    order = np.asarray(list(order))
    padded = real = 0
    for i in range(0, len(order), batch_size):
        batch = lengths[order[i : i + batch_size]]
        padded += batch.max() * len(batch)
        real += batch.sum()
    return float(1.0 - real / padded)


def bench_padding(p: dict, log=print) -> dict:
    from transformers.trainer_pt_utils import LengthGroupedSampler

    result = {"dialogues": p["padding_dialogues"], "turns_per_dialogue": 10, "batch_size": p["padding_batch_size"]}
    for video in ("fixed64", "variable", "variable_known"):
        lengths = simulate_avsd_lengths(p["padding_dialogues"], video, np.random.default_rng(0))
        torch.manual_seed(0)
        random_order = torch.randperm(len(lengths["true"])).tolist()
        generator = torch.Generator().manual_seed(0)
        grouped_order = list(LengthGroupedSampler(p["padding_batch_size"], lengths=lengths["estimate"], generator=generator))
        result[video] = {
            "mean_length": float(lengths["true"].mean()),
            "padding_fraction_random": padding_fraction(random_order, lengths["true"], p["padding_batch_size"]),
            "padding_fraction_grouped": padding_fraction(grouped_order, lengths["true"], p["padding_batch_size"]),
        }
    result["padding_fraction_grouped"] = max(result[v]["padding_fraction_grouped"] for v in ("fixed64", "variable", "variable_known"))
    result["padding_fraction_random"] = max(result[v]["padding_fraction_random"] for v in ("fixed64", "variable", "variable_known"))
    log(
        "  padding (grouped / random): "
        + ", ".join(f"{v} {result[v]['padding_fraction_grouped']:.1%} / {result[v]['padding_fraction_random']:.1%}" for v in ("fixed64", "variable", "variable_known"))
    )
    return result


# ---------------------------------------------------------------------------------------------- report


def environment(device: torch.device) -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    env = {
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "numpy": np.__version__, "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def check_targets(report: dict, device_kind: str) -> dict:
    checks = {}
    values = {
        "train_tokens_per_s_ratio": report.get("train_tokens_per_s_ratio"),
        "train_tokens_per_s_ratio_compiled": report.get("train_tokens_per_s_ratio_compiled"),
        "peak_memory_ratio": report.get("peak_memory_ratio"),
        "peak_memory_ratio_compiled": report.get("peak_memory_ratio_compiled"),
        "train_tokens_per_s_ratio_compiled_vs_plain_fused_loss": report.get("train_tokens_per_s_ratio_compiled_vs_plain_fused_loss"),
        "peak_memory_ratio_compiled_vs_plain_fused_loss": report.get("peak_memory_ratio_compiled_vs_plain_fused_loss"),
        "generate_speedup_cached_vs_recompute": report.get("generate_speedup_cached_vs_recompute"),
        "padding_fraction_grouped": report.get("padding", {}).get("padding_fraction_grouped") if isinstance(report.get("padding"), dict) else None,
    }
    for name, value in values.items():
        spec = TARGETS[next(key for key in TARGETS if name.startswith(key))]
        if value is None:
            continue
        target = spec[device_kind]
        met = value >= target if spec["op"] == ">=" else value <= target
        checks[name] = {"value": value, "target": f"{spec['op']} {target}", "met": bool(met)}
    if device_kind == "cuda":
        compiled = report.get("train_compiled") or {}
        if "vgd_tokens_per_s" in compiled:
            value = compiled["vgd_tokens_per_s"]
            checks["vgd_train_tokens_per_s_compiled"] = {"value": value, "target": f">= {GPU_GOALS['vgd_train_tokens_per_s_compiled']} (H200)", "met": value >= GPU_GOALS["vgd_train_tokens_per_s_compiled"]}
        generation = report.get("generation") or {}
        if "projected_test_set_decode_s_cached" in generation:
            value = generation["projected_test_set_decode_s_cached"]
            checks["test_set_decode_seconds"] = {"value": value, "target": f"<= {GPU_GOALS['test_set_decode_seconds']} (H200)", "met": value <= GPU_GOALS["test_set_decode_seconds"]}
    return checks


def _fmt_bytes(value) -> str:
    return f"{value / 2**20:.1f} MiB" if isinstance(value, (int, float)) else "-"


def format_table(report: dict) -> str:
    lines = []
    env = report["environment"]
    lines.append(
        f"device {env['device']}{' (' + env['gpu'] + ')' if 'gpu' in env else ''} | cpu {env['cpu']} x{env['cpu_count']} | "
        f"torch {env['torch']} | transformers {env['transformers']} | threads {env['torch_threads']}"
    )
    header = f"{'measure':<52} {'VGD-GPT2':>14} {'plain GPT-2':>14} {'ratio':>8}"
    lines += [header, "-" * len(header)]
    for key, label in (("train_eager", "eager"), ("train_compiled", "compiled")):
        train = report.get(key)
        if not isinstance(train, dict) or "vgd_tokens_per_s" not in train:
            if isinstance(train, dict) and "error" in train:
                lines.append(f"{'train ' + label:<52} {'error: ' + train['error'][:60]}")
            continue
        shape = f"B{train['batch_size']} x {train['sequence_length']} ({train['video_tokens']} video + {train['text_tokens']} text), {train['dtype']}"
        lines.append(f"train {label}: {shape}")
        lines.append(f"{'  tokens/s (median step)':<52} {train['vgd_tokens_per_s']:>14.0f} {train['plain_tokens_per_s']:>14.0f} {train['train_tokens_per_s_ratio']:>8.3f}")
        lines.append(f"{'  step s (median wall)':<52} {train['vgd_step_s_median']:>14.4f} {train['plain_step_s_median']:>14.4f} {'':>8}")
        lines.append(f"{'  step s (median process CPU time), plain/VGD':<52} {train['vgd_step_cpu_s_median']:>14.4f} {train['plain_step_cpu_s_median']:>14.4f} {train['train_cpu_time_ratio']:>8.3f}")
        lines.append(f"{'  peak memory':<52} {_fmt_bytes(train['vgd_peak_memory_bytes']):>14} {_fmt_bytes(train['plain_peak_memory_bytes']):>14} {train['peak_memory_ratio']:>8.3f}")
        if train.get("compiled"):
            lines.append(f"{'  compile warm-up s / graph breaks':<52} {train['vgd_warmup_s']:>8.1f} / {train.get('vgd_graph_breaks', -1):<3} {train['plain_warmup_s']:>8.1f} / {train.get('plain_graph_breaks', -1):<3}")
            if "plain_fused_loss_tokens_per_s" in train:
                lines.append("  vs plain GPT-2 with loss_type set (loss compiled with the LM head, as in VGD):")
                lines.append(f"{'    tokens/s':<52} {train['vgd_tokens_per_s']:>14.0f} {train['plain_fused_loss_tokens_per_s']:>14.0f} {train['train_tokens_per_s_ratio_vs_plain_fused_loss']:>8.3f}")
                lines.append(f"{'    peak memory':<52} {_fmt_bytes(train['vgd_peak_memory_bytes']):>14} {_fmt_bytes(train['plain_fused_loss_peak_memory_bytes']):>14} {train['peak_memory_ratio_vs_plain_fused_loss']:>8.3f}")
                lines.append(f"{'    compile warm-up s / graph breaks':<52} {'':>14} {train['plain_fused_loss_warmup_s']:>8.1f} / {train.get('plain_fused_loss_graph_breaks', -1):<3}")
    generation = report.get("generation")
    if isinstance(generation, dict) and "cached_s" in generation:
        lines.append(
            f"generate: {generation['prompts']} prompts ({generation['prompt_video_tokens']} video + ~{generation['prompt_text_tokens_mean']:.0f} text), "
            f"beam {generation['num_beams']}, {generation['new_tokens']} new tokens, {generation['dtype']}"
        )
        lines.append(f"{'  responses/s  KV cache | use_cache=False':<52} {generation['responses_per_s_cached']:>14.2f} {generation['responses_per_s_recompute']:>14.2f} {generation['generate_speedup_cached_vs_recompute']:>8.2f}")
        lines.append(f"{'  projected 1,710-dialogue test set, KV cache (s)':<52} {generation['projected_test_set_decode_s_cached']:>14.1f}")
        lines.append(f"{'  cached and recompute outputs identical':<52} {str(generation['outputs_identical']):>14}")
    caches = report.get("generation_caches")
    if isinstance(caches, dict) and "seconds" in caches:
        rates = caches["responses_per_s"]
        lines.append(f"generate, KV cache kinds (same workload), {caches['dtype']}:         responses/s  vs dynamic eager")
        lines.append(f"{'  dynamic cache, eager':<52} {rates['dynamic_eager']:>14.2f} {1.0:>14.2f}")
        lines.append(f"{'  static cache, eager':<52} {rates['static_eager']:>14.2f} {caches['speedup_static_eager_vs_dynamic_eager']:>14.2f}")
        lines.append(f"{'  static cache, compiled (fullgraph)':<52} {rates['static_compiled']:>14.2f} {caches['speedup_static_compiled_vs_dynamic_eager']:>14.2f}")
        identical = all(caches["outputs_identical"].values())
        lines.append(f"{'  compile time (s) | outputs equal to dynamic eager':<52} {caches['compile_s']:>14.1f} {str(identical):>14}")
    for key, label in (("data_path", "data path examples/s (store+processor+collator)"), ("scoring", "scoring")):
        section = report.get(key)
        if isinstance(section, dict) and "skipped" in section:
            lines.append(f"{label:<52} skipped: {section['skipped'][:70]}")
        elif key == "data_path" and isinstance(section, dict):
            lines.append(f"{label:<52} {section['examples_per_s']:>14.0f}")
            lines.append(f"{'  us/example load | process | collate':<52} {section['load_us_per_example']:>6.0f} | {section['process_us_per_example']:.0f} | {section['collate_us_per_example']:.0f}")
        elif key == "scoring" and isinstance(section, dict):
            lines.append(f"{'scoring ' + str(section['responses']) + ' responses (s)':<52} {section['seconds']:>14.1f}")
    padding = report.get("padding")
    if isinstance(padding, dict) and "fixed64" in padding:
        lines.append(f"padding waste, batches of {padding['batch_size']} ({padding['dialogues']} dialogues x 10 turns): {'grouped':>10} {'random':>10}")
        for video, label in (("fixed64", "video 64 frames"), ("variable", "video 150-250 frames, not in the length estimate"), ("variable_known", "video 150-250 frames, in the length estimate")):
            lines.append(f"{'  ' + label:<52} {padding[video]['padding_fraction_grouped']:>14.1%} {padding[video]['padding_fraction_random']:>14.1%}")
    for name, section in report.items():
        if isinstance(section, dict) and "error" in section and not name.startswith("train"):
            lines.append(f"{name:<52} error: {section['error'][:120]}")
    targets = report.get("targets", {})
    if targets:
        lines.append("targets:")
        for name, check in targets.items():
            value = check["value"]
            lines.append(f"  {name:<56} {value:>12.3f} {check['target']:>16}  {'met' if check['met'] else 'MISSED'}")
    return "\n".join(lines)




def run_benchmark(preset: str = "cpu", device: str = "cpu", compile: bool | None = None, skip=(), overrides=None, log=print) -> dict:
    """Run the sections (all but `skip`) and return the report dict (also what `--output_json` writes)."""
    p = dict(PRESETS[preset])
    p.update(overrides or {})
    if compile is not None:
        p["compile"] = compile
    dev = torch.device(device)
    device_kind = "cuda" if dev.type == "cuda" else "cpu"
    report = {"preset": preset, "shapes": p, "environment": environment(dev)}

    def section(name, skip_key, fn):
        if skip_key in skip:
            report[name] = {"skipped": "--skip"}
            return
        try:
            report[name] = fn()
        except Exception as error:  # one broken section must not lose the others' figures
            if isinstance(error, (ImportError, FileNotFoundError)) or type(error).__name__ == "JavaNotFoundError":
                report[name] = {"skipped": f"{type(error).__name__}: {error}"}
            else:
                report[name] = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
            log(f"  {name}: {report[name].get('skipped') or report[name]['error']}")

    section("train_eager", "train", lambda: bench_training(p, dev, compiled=False, log=log))
    if p["compile"]:
        section("train_compiled", "train", lambda: bench_training(p, dev, compiled=True, log=log))
    section("generation", "generate", lambda: bench_generation(p, dev, log=log))
    if p["gen_static_cache"]:
        section("generation_caches", "generate", lambda: bench_generation_caches(p, dev, log=log))
    section("data_path", "data", lambda: bench_data_path(p, log=log))
    section("scoring", "scoring", lambda: bench_scoring(p, log=log))
    section("padding", "padding", lambda: bench_padding(p, log=log))

    train = report.get("train_eager") or {}
    if "train_tokens_per_s_ratio" in train:
        report["train_tokens_per_s_ratio"] = train["train_tokens_per_s_ratio"]
        report["peak_memory_ratio"] = train["peak_memory_ratio"]
    compiled = report.get("train_compiled") or {}
    if "train_tokens_per_s_ratio" in compiled:
        report["train_tokens_per_s_ratio_compiled"] = compiled["train_tokens_per_s_ratio"]
        report["peak_memory_ratio_compiled"] = compiled["peak_memory_ratio"]
        report["train_tokens_per_s_ratio_compiled_vs_plain_fused_loss"] = compiled["train_tokens_per_s_ratio_vs_plain_fused_loss"]
        report["peak_memory_ratio_compiled_vs_plain_fused_loss"] = compiled["peak_memory_ratio_vs_plain_fused_loss"]
    generation = report.get("generation") or {}
    if "generate_speedup_cached_vs_recompute" in generation:
        report["generate_speedup_cached_vs_recompute"] = generation["generate_speedup_cached_vs_recompute"]
    report["targets"] = check_targets(report, device_kind)
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cpu: small shapes; cuda: gpt2-small, batch 16 x 1,024, bf16")
    parser.add_argument("--preset", default=None, choices=sorted(PRESETS), help="shape preset (default: the device's)")
    compile_group = parser.add_mutually_exclusive_group()
    compile_group.add_argument("--compile", dest="compile", action="store_true", default=None, help="also time torch.compile (default on cuda)")
    compile_group.add_argument("--no_compile", dest="compile", action="store_false", help="eager only")
    parser.add_argument("--skip", nargs="*", default=[], choices=["train", "generate", "data", "scoring", "padding"])
    parser.add_argument("--train_steps", type=int, default=None, help="timed steps per model")
    parser.add_argument(
        "--static_cache", action="store_true",
        help="also time generation with a static KV cache, eager and compiled with fullgraph=True, against the dynamic "
        "cache (default on cuda; same as --set gen_static_cache=true)",
    )
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch.set_num_threads; default 1 on the CPU (the cores are shared: a parallel region waits for its slowest "
        "thread, so a preempted thread stalls both models unevenly), torch's default on CUDA",
    )
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override preset fields, e.g. --set batch_size=8 feature_dim=4224")
    parser.add_argument("--output_json", default=None)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    threads = args.threads or (1 if args.device == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    overrides = {"train_steps": args.train_steps} if args.train_steps else {}
    if args.static_cache:
        overrides["gen_static_cache"] = True
    preset = args.preset or args.device
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in PRESETS[preset]:
            parser.error(f"--set {item}: unknown field {key!r} (fields: {', '.join(PRESETS[preset])})")
        default = PRESETS[preset][key]
        overrides[key] = (value.lower() in ("1", "true", "yes")) if isinstance(default, bool) else type(default)(value)
    start = time.perf_counter()
    report = run_benchmark(preset, args.device, args.compile, set(args.skip), overrides)
    report["total_s"] = time.perf_counter() - start
    report["command"] = "python benchmarks/bench_vgd.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(format_table(report))
    print(f"total {report['total_s']:.1f} s")
    if args.output_json:
        with open(args.output_json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2, default=str)
    return report


if __name__ == "__main__":
    main()
