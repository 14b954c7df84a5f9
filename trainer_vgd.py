"""Training and evaluation of VGD-GPT2 with the Hugging Face `Trainer`.

- `VGDTrainingArguments`: `TrainingArguments` with the paper's defaults, the loss weights and the decoding
  settings used in evaluation.
- `VGDTrainer`: `compute_loss` = `1.5 * response + mlm + mvm + mvt` (weights are arguments; the response on an
  unmasked copy of each matching pair by default, `response_context`), each objective
  normalised by its own item count across gradient-accumulation steps and processes, each logged with the
  Trainer's logging; `evaluate()` decodes responses with beam search and scores them (BLEU-1..4, METEOR,
  ROUGE-L, CIDEr by default), so the best checkpoint is chosen by a generation metric.
- `DialogueTurnDataset` / `GenerationCollator`: AVSD rows + video features -> processor inputs.
- Checkpoints are written atomically (`tmp-checkpoint-N` renamed to `checkpoint-N` when complete) and hold every
  random state that shapes training (sampler epoch seed, data collator generator, torch / numpy / python RNGs), so
  a resumed run ends bit-identical to an uninterrupted one; `train(resume_from_checkpoint="last")` takes the newest
  complete checkpoint of this run (see `checkpointing_vgd.py`).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import shutil
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from accelerate.utils import broadcast_object_list, gather_object
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import Trainer, TrainingArguments
from transformers.trainer_callback import ExportableState, ProgressCallback
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from checkpointing_vgd import (
    CHECKPOINT_INFO_NAME,
    CHECKPOINT_PATTERN,
    STAGING_PREFIX,
    checkpoint_problem,
    find_last_complete_checkpoint,
    fix_file_modes,
    fsync_dir,
    fsync_tree,
    read_checkpoint_info,
    read_run_info,
    rescue_dir,
    write_json_atomic,
)

from data_collator_vgd import DataCollatorForVGD

logger = logging.getLogger(__name__)

OBJECTIVES = ("response", "mlm", "mvm", "mvt")


@dataclass
class VGDTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the paper's defaults (Adam lr 5e-5, inverse-square-root schedule with warm-up,
    batch 16, best checkpoint by CIDEr) and the VGD-GPT2 loss weights and decoding settings."""

    response_loss_weight: float = field(default=1.5, metadata={"help": "Weight of the response-generation loss (paper: 1.5)."})
    mlm_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the masked language modelling loss."})
    mvm_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the masked visual modelling loss."})
    mvt_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the video-text matching loss."})
    generation_num_beams: int = field(default=5, metadata={"help": "Beam size when decoding responses for evaluation / prediction."})
    generation_max_new_tokens: int = field(default=20, metadata={"help": "Longest generated response, in tokens."})
    generation_min_new_tokens: int = field(default=1, metadata={"help": "Shortest generated response, in tokens."})
    generation_length_penalty: float = field(default=1.0, metadata={"help": "Beam-search length penalty."})
    response_context: str = field(
        default="masked",
        metadata={
            "help": "Context of the response loss: 'clean' (an unmasked copy of every matching pair, in the same forward "
            "pass as the masked batch of MLM / MVM / MVT; as at decoding time) or 'masked' (the MLM / MVM-masked input)."
        },
    )
    eval_max_generation_examples: int | None = field(
        default=None, metadata={"help": "Decode only the first N evaluation turns (the full AVSD validation split has 35k)."}
    )

    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate of AdamW (paper: 5e-5)."})
    lr_scheduler_type: str = field(default="inverse_sqrt", metadata={"help": "Learning-rate schedule (paper: Noam, i.e. inverse_sqrt with warm-up)."})
    warmup_steps: float = field(default=0.05, metadata={"help": "Warm-up steps (an int) or fraction of the run (a float < 1)."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Batch size per device for training (paper: 16)."})
    total_train_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Global batch per optimizer step (paper: 16), whatever the number of processes: run_vgd.py then "
            "derives the per-device batch (at most --per_device_train_batch_size) and the gradient accumulation "
            "from the world size, and logs them."
        },
    )
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Batch size per device for evaluation and decoding."})
    metric_for_best_model: str | None = field(default="CIDEr", metadata={"help": "Metric that picks the best checkpoint."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept False: the datasets hand processor outputs already."})
    train_sampling_strategy: str = field(
        default="group_by_length", metadata={"help": "group_by_length batches sequences of similar length (less padding)."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace the results of an earlier run in --output_dir (its model, metrics, predictions and "
                  "checkpoints are deleted first). Without it, run_vgd.py refuses a folder holding another run's results."},
    )
    cpu_threads: int | None = field(
        default=None,
        metadata={"help": "torch intra-op threads on the CPU (run_vgd.py). Default: $OMP_NUM_THREADS when set, else torch's "
                  "default (one per core); the demo uses 1 (fast for its small model, robust on a busy machine, the same "
                  "numbers on every machine)."},
    )


# ---------------------------------------------------------------------------------------------- data


def caption_text(row: dict, caption_fields: Sequence[str]) -> str:
    """The caption input of one AVSD row: the chosen text fields (`caption`, `summary`) joined."""
    return " ".join(row[name].strip() for name in caption_fields if row.get(name))


class DialogueTurnDataset(Dataset):
    """One AVSD turn per item, made model-ready on access: video features from a `VideoFeatureStore`,
    text from an AVSD split (a `datasets.Dataset` of the `avsd_dataset.AVSD` builder).

    `for_generation=False` yields unbatched processor outputs with the answer (for `DataCollatorForVGD`);
    `for_generation=True` yields the raw inputs of `VGDProcessor.__call__` without the answer (for
    `GenerationCollator`). `lengths` estimates each item's sequence length for length-grouped batching.
    """

    def __init__(self, split, feature_store, processor, caption_fields=("caption", "summary"), for_generation=False, video_lengths=None):
        self.split = split
        self.feature_store = feature_store
        self.processor = processor
        self.caption_fields = tuple(caption_fields)
        self.for_generation = for_generation
        self.video_lengths = video_lengths
        self._lengths = None

    def __len__(self):
        return len(self.split)

    def raw_inputs(self, index: int) -> dict:
        row = self.split[int(index)]
        video = self.feature_store[row["image_id"]] if self.feature_store is not None else None
        return {
            "video_features": video,
            "caption": caption_text(row, self.caption_fields),
            "history": [(turn["question"], turn["answer"]) for turn in row["history"]],
            "question": row["question"],
            "answer": row["answer"],
        }

    @property
    def references(self) -> list[list[str]]:
        """Reference responses per item: the multi-reference strings when the split has them (AVSD test),
        otherwise the ground-truth answer."""
        return [refs if refs else [answer] for refs, answer in zip(self.split["references"], self.split["answer"])]

    def __getitem__(self, index):
        inputs = self.raw_inputs(index)
        if self.for_generation:
            inputs.pop("answer")
            return inputs
        return self.processor.process_example(**inputs)

    @property
    def lengths(self) -> list[int]:
        """Estimated tokens per item (words x 1.3 plus the video tokens when known), computed once from the
        text columns without loading any feature file."""
        if self._lengths is None:
            columns = self.split.select_columns(["image_id", "caption", "summary", "history", "question", "answer"])
            lengths = []
            for row in columns:
                words = len(caption_text(row, self.caption_fields).split()) + len(row["question"].split()) + len(row["answer"].split())
                words += sum(len(turn["question"].split()) + len(turn["answer"].split()) for turn in row["history"])
                video = self.video_lengths.get(row["image_id"], 0) if self.video_lengths else 0
                lengths.append(int(words * 1.3) + 2 * len(row["history"]) + 4 + video)
            self._lengths = lengths
        return self._lengths


def held_out_matching_pairs(dataset: DialogueTurnDataset) -> list[tuple[int, str, float]]:
    """Held-out video-text pairs: the last turn of every dialogue of `dataset` with its own video (label 1.0), then
    with the video of the next dialogue in sorted video-id order (0.0, a derangement), as `(item index, video id,
    label)`; empty when there are fewer than two dialogues."""
    last = {}  # image_id -> (turn, index) of its last turn
    for index, (image_id, turn) in enumerate(zip(dataset.split["image_id"], dataset.split["turn"])):
        if image_id not in last or turn > last[image_id][0]:
            last[image_id] = (turn, index)
    image_ids = sorted(last)
    if len(image_ids) < 2:
        return []
    pairs = []
    for k, image_id in enumerate(image_ids):
        pairs.append((last[image_id][1], image_id, 1.0))
        pairs.append((last[image_id][1], image_ids[(k + 1) % len(image_ids)], 0.0))
    return pairs


class GenerationCollator:
    """Batches raw inputs with the processor (left padding, no answer) for `generate()`, keeping
    `max_new_tokens` text positions free in every prompt for the generated tokens."""

    def __init__(self, processor, max_new_tokens: int | None = None):
        self.processor = processor
        self.max_new_tokens = max_new_tokens

    def __call__(self, items: list[dict]):
        return self.processor(
            video_features=[item["video_features"] for item in items],
            caption=[item["caption"] for item in items],
            history=[item["history"] for item in items],
            question=[item["question"] for item in items],
            return_tensors="pt",
            max_new_tokens=self.max_new_tokens,
        )


def avsd_caption_metrics(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr of `predictions` against `references` (the AVSD scorer)."""
    from avsd_dataset.score import compute_caption_metrics

    return compute_caption_metrics(predictions, references)


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """`LengthGroupedSampler` whose order is a function of `(seed, epoch)` only, not of the global torch RNG: a run
    resumed mid-epoch sees the same order as the uninterrupted run, and every process of a distributed run the same."""

    def __init__(self, batch_size: int, dataset=None, lengths=None, seed: int = 0):
        super().__init__(batch_size, dataset=dataset, lengths=lengths)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        generator = torch.Generator()
        generator.manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


def _capture_rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.random.set_rng_state(states["cpu"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


class _CollatorStateRecorder:
    """Wraps the training data collator: before each batch it records the collator's random state, so the state
    to restore is known for the first batch that training has not consumed yet (the data loader prefetches)."""

    def __init__(self, collator, states: deque):
        self.collator = collator
        self.states = states

    def __call__(self, examples):
        if torch.utils.data.get_worker_info() is None:
            self.states.append(self.collator.state_dict())
        return self.collator(examples)


class TrainingDivergedError(RuntimeError):
    """A training loss stopped being finite (NaN / inf): the weights are no longer usable. Raised by
    [`VGDTrainer`] at the first logging step that sees it (every `logging_steps`, where the losses are read anyway),
    on every process; `run_vgd.py` then saves no rescue checkpoint of the diverged state."""


class LabelledProgressCallback(ProgressCallback):
    """The Trainer's progress bars, labelled: "Training" (continuing from the resumed step) and "Evaluation loss"."""

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.training_bar = tqdm(total=state.max_steps, initial=state.global_step, desc="Training", dynamic_ncols=True)
        self.current_step = state.global_step

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if state.is_world_process_zero and self.prediction_bar is None and eval_dataloader is not None and hasattr(eval_dataloader, "__len__"):
            self.prediction_bar = tqdm(total=len(eval_dataloader), desc="Evaluation loss", leave=self.training_bar is None, dynamic_ncols=True)
        super().on_prediction_step(args, state, control, eval_dataloader=eval_dataloader, **kwargs)

    def close_prediction_bar(self):
        if self.prediction_bar is not None:
            self.prediction_bar.close()
            self.prediction_bar = None


# ---------------------------------------------------------------------------------------------- trainer


class VGDTrainer(Trainer):
    """`Trainer` for VGD-GPT2.

    Args (besides the `Trainer`'s own):
        eval_generation_dataset (`DialogueTurnDataset` with `for_generation=True`, *optional*):
            Turns decoded during `evaluate()`; its `references` attribute (one list of strings per turn) is
            what the responses are scored against.
        compute_generation_metrics (`Callable[[list[str], Dataset], dict]`, *optional*):
            Scores decoded responses; defaults to the AVSD captioning metrics against
            `eval_generation_dataset.references`.
        run_id (`str`, *optional*):
            The run this trainer continues: recorded in every checkpoint, and `resume_from_checkpoint="last"` only
            takes checkpoints of this run. Default: the run named in the output folder's `_run_vgd.json`, if any.
    """

    def __init__(self, *args, eval_generation_dataset=None, compute_generation_metrics: Callable | None = None, run_id: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_generation_dataset = eval_generation_dataset
        self.compute_generation_metrics = compute_generation_metrics
        if run_id is None:
            run_id = (read_run_info(self.args.output_dir) or {}).get("run_id")
        self.run_id = run_id
        self._collator_states: deque = deque()
        if self.pop_callback(ProgressCallback) is not None:
            self.add_callback(LabelledProgressCallback)
        # compute_loss normalises every objective by its item count over all accumulation steps and processes.
        self.loss_is_scaled_for_ga = True
        self._objective_totals: dict[str, torch.Tensor] | None = None
        self._objective_loss_sums = None
        self._objective_steps_last_logged = 0

    # ------------------------------------------------------------------ loss

    @staticmethod
    def count_objective_items(inputs: dict) -> torch.Tensor:
        """Items each objective averages over in this batch, as a float tensor [4] in `OBJECTIVES` order:
        answer tokens (shifted labels), masked tokens, masked region x feature values, matching pairs."""
        device = inputs["input_ids"].device
        counts = torch.zeros(len(OBJECTIVES), dtype=torch.float64, device=device)
        if inputs.get("labels") is not None:
            counts[0] = inputs["labels"][:, 1:].ne(-100).sum()
        if inputs.get("mlm_labels") is not None:
            counts[1] = inputs["mlm_labels"].ne(-100).sum()
        if inputs.get("mvm_mask") is not None:
            mvm_mask = inputs["mvm_mask"].bool()
            if inputs.get("video_mask") is not None:
                mvm_mask = mvm_mask & inputs["video_mask"].bool()
            counts[2] = mvm_mask.sum() * inputs["video_features"].shape[-1]
        if inputs.get("mvt_labels") is not None:
            counts[3] = inputs["mvt_labels"].ne(-100).sum()
        return counts

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device):
        """Count every objective's items over the accumulated batches (summed over processes); the
        per-objective totals are kept for `compute_loss`, the response count is returned as usual."""
        if not batch_samples:
            return None
        totals = sum(self.count_objective_items(batch).to(device) for batch in batch_samples)
        if self.args.world_size > 1:
            totals = self.accelerator.gather(totals.unsqueeze(0)).sum(dim=0)
        self._objective_totals = totals
        return totals[0]

    def weighted_objective_losses(self, outputs, inputs: dict, normalise_globally: bool) -> dict[str, torch.Tensor]:
        """Each objective's loss times its weight. With `normalise_globally`, a loss is rescaled from the mean
        over this batch to (sum over this batch) / (items over all accumulation steps and processes) x
        processes, so gradients do not depend on how the same data is split into batches and processes."""
        weights = {
            "response": self.args.response_loss_weight,
            "mlm": self.args.mlm_loss_weight,
            "mvm": self.args.mvm_loss_weight,
            "mvt": self.args.mvt_loss_weight,
        }
        local = self.count_objective_items(inputs) if normalise_globally else None
        losses = {}
        for index, name in enumerate(OBJECTIVES):
            loss = outputs[f"{name}_loss"] if f"{name}_loss" in outputs else None
            if loss is None or weights[name] == 0:
                continue
            if normalise_globally:
                total = self._objective_totals[index].to(loss.device)
                scale = (local[index] / total.clamp(min=1)) * self.accelerator.num_processes
                loss = loss * scale.to(loss.dtype)
            losses[name] = weights[name] * loss
        return losses

    @staticmethod
    def with_clean_response_rows(inputs: dict) -> dict:
        """The batch for `response_context="clean"`: the collated (masked) rows without their response labels,
        followed by an unmasked copy of every row that has response labels (original tokens back at the
        `<mask>` positions, no masked region, MLM targets -100, MVT label -100 = no matching target). One forward
        pass then gives the response loss on clean context and the MLM / MVM / MVT losses on the masked rows."""
        labels = inputs.get("labels")
        if labels is None or (inputs.get("mlm_labels") is None and inputs.get("mvm_mask") is None):
            return inputs
        rows = (labels != -100).any(dim=1)
        clean_ids = inputs["input_ids"][rows]
        if inputs.get("mlm_labels") is not None:
            mlm_labels = inputs["mlm_labels"][rows]
            clean_ids = torch.where(mlm_labels != -100, mlm_labels, clean_ids)
        clean = {"input_ids": clean_ids, "labels": labels[rows]}
        ignored = {"labels": -100, "mlm_labels": -100, "mvt_labels": -100}
        combined = {}
        for key, value in inputs.items():
            if not isinstance(value, torch.Tensor) or value.ndim == 0 or value.shape[0] != labels.shape[0]:
                combined[key] = value
                continue
            if key in clean:
                copy = clean[key]
            elif key in ignored:
                copy = torch.full_like(value[rows], ignored[key])
            elif key == "mvm_mask":
                copy = torch.zeros_like(value[rows])
            else:
                copy = value[rows]
            masked = torch.full_like(value, -100) if key == "labels" else value
            combined[key] = torch.cat([masked, copy])
        return combined

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # in training the LM head runs on the answer positions only (the logits are not used; same losses)
        extra = {"skip_logits": True} if model.training else {}
        if self.args.response_context == "clean":
            outputs = model(**self.with_clean_response_rows(inputs), **extra)
        elif self.args.response_context == "masked":
            outputs = model(**inputs, **extra)
        else:
            raise ValueError(f"response_context must be 'clean' or 'masked', got {self.args.response_context!r}")
        normalise_globally = model.training and num_items_in_batch is not None and self._objective_totals is not None
        losses = self.weighted_objective_losses(outputs, inputs, normalise_globally)
        if not losses:
            raise ValueError(f"the batch produced no loss: it holds none of labels / mlm_labels / mvm_mask / mvt_labels (keys: {sorted(inputs)})")
        loss = sum(losses.values())
        if model.training:
            self._record_objective_losses(losses)
        return (loss, outputs) if return_outputs else loss

    # ------------------------------------------------------------------ logging of the components

    def _record_objective_losses(self, losses: dict[str, torch.Tensor]):
        if self._objective_loss_sums is None:
            self._objective_loss_sums = torch.zeros(len(OBJECTIVES), dtype=torch.float64, device=self.args.device)
        for index, name in enumerate(OBJECTIVES):
            if name in losses:
                self._objective_loss_sums[index] += losses[name].detach().to(torch.float64)

    def _maybe_log_save_evaluate(self, *args, **kwargs):
        # the Trainer moves `_globalstep_last_logged` before calling `log`; the components average over the same steps
        self._objective_steps_last_logged = self._globalstep_last_logged
        return super()._maybe_log_save_evaluate(*args, **kwargs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds the weighted objective losses, averaged over the logging interval like `loss`, to training logs."""
        if "loss" in logs and self._objective_loss_sums is not None:
            sums = self._objective_loss_sums
            if self.args.world_size > 1:
                sums = self.accelerator.gather(sums.unsqueeze(0)).mean(dim=0)
            steps = max(self.state.global_step - self._objective_steps_last_logged, 1)
            for index, name in enumerate(OBJECTIVES):
                logs[f"{name}_loss"] = round(float(sums[index]) / steps, 6)
            not_finite = [name for name in OBJECTIVES if not math.isfinite(logs[f"{name}_loss"])]
            if not_finite:
                raise TrainingDivergedError(self._divergence_message(not_finite, logs))
            self._objective_loss_sums.zero_()
            self._objective_steps_last_logged = self.state.global_step
        super().log(logs, start_time)

    def _divergence_message(self, not_finite: list[str], logs: dict) -> str:
        first = self._objective_steps_last_logged + 1
        losses = ", ".join(f"{name}_loss {logs[f'{name}_loss']}" for name in OBJECTIVES)
        checkpoint, _ = find_last_complete_checkpoint(self.args.output_dir, self.run_id)
        if checkpoint is None:
            kept = "no checkpoint of this run was saved before it"
        elif int(CHECKPOINT_PATTERN.match(os.path.basename(checkpoint)).group(1)) < first:
            kept = f"the newest checkpoint before it is {checkpoint} (--resume_from_checkpoint {checkpoint})"
        else:
            kept = f"checkpoints from step {first} on (the newest: {checkpoint}) may already hold non-finite weights"
        return (
            f"Training diverged: the {' / '.join(not_finite)} loss stopped being finite between steps {first} and "
            f"{self.state.global_step} ({losses}; learning rate {logs.get('learning_rate')}). The weights are no longer "
            f"usable, so this state is not saved; {kept}. Try a lower --learning_rate, a longer --warmup_steps or "
            "training in float32 (without --bf16 / --fp16)."
        )

    # ------------------------------------------------------------------ length-grouped batches

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and hasattr(dataset, "lengths"):
            return EpochSeededLengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps, dataset=dataset, lengths=dataset.lengths,
                seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            )
        return super()._get_train_sampler(train_dataset)

    def _get_collator_with_removed_columns(self, data_collator, description=None):
        """Training batches: the collator's random state is recorded per batch (exact resumption). Evaluation and
        test batches: a copy of the collator restarted from its seed, so the evaluation loss does not depend on when
        it is computed and does not move the training collator's random sequence."""
        collator = super()._get_collator_with_removed_columns(data_collator, description=description)
        if not (hasattr(data_collator, "state_dict") and collator is data_collator):
            return collator
        if description == "Training":
            self._collator_states.clear()
            return _CollatorStateRecorder(data_collator, self._collator_states)
        fresh = copy.copy(data_collator)
        fresh.reseed()
        return fresh

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        # the random states at the start of this optimizer step: what a checkpoint taken before the step completes
        # (after a failure inside it) must hold to replay it exactly
        self._step_start = {"global_step": self.state.global_step, "collator": self._next_collator_state(), "rng": _capture_rng_states()}
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        for _ in range(min(len(batch_samples), len(self._collator_states))):
            self._collator_states.popleft()
        return batch_samples, num_items_in_batch

    def _next_collator_state(self) -> dict | None:
        if not hasattr(self.data_collator, "state_dict"):
            return None
        return self._collator_states[0] if self._collator_states else self.data_collator.state_dict()

    def _inside_a_step(self) -> bool:
        """True after a failure between fetching an optimizer step's batches and completing the step."""
        return getattr(self, "_step_start", None) is not None and self._step_start["global_step"] == self.state.global_step

    def collator_state_for_resume(self) -> dict | None:
        """The data collator's random state before the first batch of the next optimizer step."""
        return self._step_start["collator"] if self._inside_a_step() else self._next_collator_state()

    def _save_rng_state(self, output_dir):
        """The RNG states after the last completed optimizer step (also when saving after a failure inside a step)."""
        if not self._inside_a_step():
            return super()._save_rng_state(output_dir)
        now = _capture_rng_states()
        _restore_rng_states(self._step_start["rng"])
        try:
            return super()._save_rng_state(output_dir)
        finally:
            _restore_rng_states(now)

    # ------------------------------------------------------------------ checkpoints

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """`Trainer.train`; `resume_from_checkpoint` may also be `"last"` (or `True`): the newest complete checkpoint
        of this run in `output_dir`, chosen as `find_last_complete_checkpoint` explains (logged)."""
        if resume_from_checkpoint is True or (isinstance(resume_from_checkpoint, str) and resume_from_checkpoint.lower() in ("true", "last")):
            resume_from_checkpoint = self.last_complete_checkpoint()
        elif isinstance(resume_from_checkpoint, str):
            problem = checkpoint_problem(resume_from_checkpoint) if os.path.isdir(resume_from_checkpoint) else "no such folder"
            if problem:
                raise ValueError(f"cannot resume from {resume_from_checkpoint}: {problem}")
        self._step_start = None
        if resume_from_checkpoint:
            info = read_checkpoint_info(resume_from_checkpoint) or {}
            if info.get("collator") is not None and hasattr(self.data_collator, "load_state_dict"):
                self.data_collator.load_state_dict(info["collator"])
            if self.run_id is None:
                self.run_id = info.get("run_id")
        return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, ignore_keys_for_eval=ignore_keys_for_eval, **kwargs)

    def last_complete_checkpoint(self) -> str:
        """The newest complete checkpoint of this run in `output_dir`; says which, and why newer folders were skipped."""
        path, skipped = find_last_complete_checkpoint(self.args.output_dir, self.run_id)
        for folder, reason in skipped:
            logger.info("Skipping %s: %s", folder, reason)
        if path is None:
            reasons = "; ".join(f"{os.path.basename(folder)}: {reason}" for folder, reason in skipped) or "there is no checkpoint-* folder"
            raise ValueError(f"no complete checkpoint of this run to resume from in {self.args.output_dir} ({reasons})")
        logger.info("Resuming from %s, the newest complete checkpoint of this run", path)
        return path

    def _save_checkpoint(self, model, trial) -> None:
        """The base class's checkpoint (model, optimizer, scheduler, RNG states, trainer state) plus
        `vgd_state.json` (run id, data collator state), written into `tmp-checkpoint-N` and renamed to
        `checkpoint-N` only once every file is on disk: an interrupted save never leaves a folder that looks complete."""
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        run_dir = self._get_output_dir(trial=trial)
        final_dir = os.path.join(run_dir, name)
        staging_dir = os.path.join(run_dir, STAGING_PREFIX + name)
        if self.args.should_save and os.path.isdir(staging_dir):
            shutil.rmtree(staging_dir)
        self.accelerator.wait_for_everyone()
        if self.hp_search_backend is None and trial is None:
            self.store_flos()
        self.save_model(staging_dir, _internal_call=True)
        if self.args.save_strategy in ("steps", "epoch", "best") and self.state.best_global_step:
            best_dir = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.best_global_step}")
            if self.state.best_global_step == self.state.global_step or os.path.exists(best_dir):
                self.state.best_model_checkpoint = best_dir
        if not self.args.save_only_model:
            self._save_optimizer_and_scheduler(staging_dir)
            self._save_scaler(staging_dir)
            self._save_rng_state(staging_dir)
        self.accelerator.wait_for_everyone()  # every process has written its part (RNG states, shards)
        if self.args.should_save:
            for callback in self.callback_handler.callbacks + [self.control]:
                if isinstance(callback, ExportableState):
                    callback_name = callback.__class__.__name__
                    if isinstance(self.state.stateful_callbacks.get(callback_name), list):
                        self.state.stateful_callbacks[callback_name].append(callback.state())
                    else:
                        self.state.stateful_callbacks[callback_name] = callback.state()
            self.state.save_to_json(os.path.join(staging_dir, "trainer_state.json"))
            write_json_atomic(
                os.path.join(staging_dir, CHECKPOINT_INFO_NAME),
                {"run_id": self.run_id, "global_step": self.state.global_step, "collator": self.collator_state_for_resume()},
            )
            fix_file_modes(staging_dir)
            fsync_tree(staging_dir)
            replaced = None
            if os.path.isdir(final_dir):  # an older save of the same step (e.g. before a resume): moved aside first
                replaced = os.path.join(run_dir, f"{STAGING_PREFIX}replaced-{name}")
                if os.path.isdir(replaced):
                    shutil.rmtree(replaced)
                os.replace(final_dir, replaced)
            os.replace(staging_dir, final_dir)
            fsync_dir(run_dir)
            if replaced:
                shutil.rmtree(replaced)
        self.accelerator.wait_for_everyone()
        if self.args.push_to_hub:
            self._push_from_checkpoint(final_dir)
        if self.args.should_save:
            from transformers.trainer_utils import rotate_checkpoints

            rotate_checkpoints(
                output_dir=run_dir, save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True,
            )

    def _issue_warnings_after_load(self, load_result) -> None:
        """No warning for the tied output embedding, which a checkpoint does not store (it is the input embedding)."""
        tied = set(getattr(self.model, "_tied_weights_keys", None) or {})
        if load_result.missing_keys and set(load_result.missing_keys) <= tied and not load_result.unexpected_keys:
            self.model.tie_weights()
            return
        super()._issue_warnings_after_load(load_result)

    def save_emergency_checkpoint(self) -> str | None:
        """After a failure: the newest trained state as a checkpoint in `output_dir`, or, if that folder cannot take
        it, in the first writable rescue folder (`checkpointing_vgd.rescue_dir`). Returns where, None if nowhere."""
        if self.state.global_step == 0:
            return None
        existing = os.path.join(self.args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        if os.path.isdir(existing) and checkpoint_problem(existing) is None and (read_checkpoint_info(existing) or {}).get("run_id") == self.run_id:
            return existing  # this step's checkpoint is already on disk
        try:
            self._save_checkpoint(self.model, trial=None)
            return os.path.join(self.args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        except Exception as error:
            logger.error("Could not write a checkpoint into %s (%s)", self.args.output_dir, error)
        return self._save_into_rescue_dir(self._save_checkpoint_into)

    def save_model_or_rescue(self, output_dir: str | None = None) -> str:
        """`save_model(output_dir)`; when that fails, the model is saved into a rescue folder and the error names it."""
        output_dir = output_dir or self.args.output_dir
        try:
            self.save_model(output_dir)
            return output_dir
        except Exception as error:
            if self.args.world_size == 1:
                where = self._save_into_rescue_dir(self._save_checkpoint_into)
            else:  # only this process is here: the model alone, without the collective checkpoint steps
                where = self._save_into_rescue_dir(lambda folder: self._save(os.path.join(folder, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")))
            raise OSError(
                f"saving the trained model into {output_dir} failed ({error}); "
                + (f"the trained state (model, optimizer, trainer state) was saved into {where}" if where else "no rescue folder was writable either")
            ) from error

    def _save_checkpoint_into(self, folder: str) -> None:
        original = self.args.output_dir
        self.args.output_dir = folder
        try:
            self._save_checkpoint(self.model, trial=None)
        finally:
            self.args.output_dir = original

    def _save_into_rescue_dir(self, save) -> str | None:
        for folder in rescue_dir(self.args.output_dir, self.run_id):
            try:
                os.makedirs(folder, exist_ok=True)
                save(folder)
            except Exception as error:
                logger.error("Could not save into the rescue folder %s either (%s)", folder, error)
                continue
            return os.path.join(folder, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        return None

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """`Trainer.save_model`, then every file gets the usual mode (safetensors writes the weights 0600)."""
        super().save_model(output_dir, _internal_call=_internal_call)
        folder = output_dir or self.args.output_dir
        if self.args.should_save and os.path.isdir(folder):
            fix_file_modes(folder)

    # ------------------------------------------------------------------ generation

    def generate_responses(self, dataset: DialogueTurnDataset, description: str = "Decoding", max_examples: int | None = None) -> list[str]:
        """Decode one response per item of `dataset` (beam search with the `generation_*` arguments), split
        over processes and gathered in dataset order. Items are batched by similar length."""
        count = len(dataset) if max_examples is None else min(len(dataset), max_examples)
        order = list(range(count))
        if hasattr(dataset, "lengths"):
            lengths = dataset.lengths
            order.sort(key=lambda i: lengths[i])
        batch_size = self.args.per_device_eval_batch_size
        batches = [order[i : i + batch_size] for i in range(0, count, batch_size)]
        mine = batches[self.args.process_index :: self.args.world_size]

        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        collator = GenerationCollator(self.processing_class, max_new_tokens=self.args.generation_max_new_tokens)
        loader = DataLoader(
            mine,
            batch_size=None,
            collate_fn=lambda indices: (indices, collator([dataset[i] for i in indices])),
            num_workers=self.args.dataloader_num_workers,
        )
        config = model.config
        generation_kwargs = dict(
            num_beams=self.args.generation_num_beams,
            max_new_tokens=self.args.generation_max_new_tokens,
            min_new_tokens=self.args.generation_min_new_tokens,
            length_penalty=self.args.generation_length_penalty,
            do_sample=False,
            pad_token_id=config.pad_token_id,
            eos_token_id=config.eos_token_id,
        )
        results = []
        progress = tqdm(loader, desc=description, total=len(mine), disable=not self.is_local_process_zero() or self.args.disable_tqdm)
        with torch.no_grad(), self.autocast_smart_context_manager():
            for indices, batch in progress:
                batch = batch.to(self.args.device)
                output = model.generate(**batch, **generation_kwargs)
                texts = self.processing_class.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
                results.extend(zip(indices, (text.strip() for text in texts)))
        if was_training:
            model.train()
        if self.args.world_size > 1:
            results = gather_object(results)
        predictions = [""] * count
        for index, text in results:
            predictions[index] = text
        return predictions

    def matching_accuracy(self, dataset: DialogueTurnDataset, description: str = "Video-text matching") -> dict[str, float]:
        """Video-text matching on held-out pairs: the last turn of every dialogue of `dataset` (training layout,
        with its answer and `<cls>`) once with its own video and once with the video of the next dialogue (a
        derangement). Returns `matching_accuracy` (the sign of `mvt_logits` right, over both pairs of every
        dialogue), `matching_ranking_accuracy` (own video scored above the other one) and `matching_dialogs`."""
        pairs = held_out_matching_pairs(dataset)
        if not pairs:
            return {}
        collator = DataCollatorForVGD(self.processing_class, mlm_probability=0, mvm_probability=0, mvt_probability=0, append_cls=True)

        def collate(chunk):
            examples = []
            for index, video_id, _ in chunk:
                inputs = dataset.raw_inputs(index)
                inputs["video_features"] = dataset.feature_store[video_id] if dataset.feature_store is not None else None
                examples.append(self.processing_class.process_example(**inputs))
            return chunk, collator(examples)

        batch_size = self.args.per_device_eval_batch_size
        chunks = [pairs[i : i + batch_size] for i in range(0, len(pairs), batch_size)]
        mine = chunks[self.args.process_index :: self.args.world_size]
        loader = DataLoader(mine, batch_size=None, collate_fn=collate, num_workers=self.args.dataloader_num_workers)
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        scores = []
        with torch.no_grad(), self.autocast_smart_context_manager():
            for chunk, batch in tqdm(loader, desc=description, total=len(mine), disable=not self.is_local_process_zero() or self.args.disable_tqdm):
                batch = {key: value.to(self.args.device) for key, value in batch.items() if key != "labels"}
                logits = model(**batch).mvt_logits.float().cpu().tolist()
                scores.extend((index, label, logit) for (index, _, label), logit in zip(chunk, logits))
        if was_training:
            model.train()
        if self.args.world_size > 1:
            scores = gather_object(scores)
        by_dialog = {}
        for index, label, logit in scores:
            by_dialog.setdefault(index, {})[label] = logit
        correct = sum((logit > 0) == (label == 1.0) for _, label, logit in scores)
        return {
            "matching_accuracy": correct / len(scores),
            "matching_ranking_accuracy": sum(s[1.0] > s[0.0] for s in by_dialog.values()) / len(by_dialog),
            "matching_dialogs": len(by_dialog),
        }

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Loss on `eval_dataset` (when there is one) and, for a model trained with MVT, the video-text matching
        accuracy on its dialogues (`eval_matching_accuracy`, see `matching_accuracy`), plus, when
        `eval_generation_dataset` was given, the generation metrics of decoded responses (`eval_CIDEr`, ...),
        logged once."""
        start = time.time()
        metrics: dict[str, float] = {}
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is not None:
            output = self.evaluation_loop(
                self.get_eval_dataloader(dataset), description="Evaluation loss", prediction_loss_only=True,
                ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix,
            )
            metrics.update({k: v for k, v in output.metrics.items() if not k.endswith(("_runtime", "_per_second"))})
            if getattr(self.model.config, "use_mvt", False) and isinstance(dataset, DialogueTurnDataset):
                matching = self.matching_accuracy(dataset)
                metrics.update({f"{metric_key_prefix}_{name}": value for name, value in matching.items()})
            for callback in self.callback_handler.callbacks:
                if isinstance(callback, LabelledProgressCallback):
                    callback.close_prediction_bar()  # before the decoding bar starts
        if self.eval_generation_dataset is not None:
            predictions = self.generate_responses(
                self.eval_generation_dataset, description="Decoding for evaluation", max_examples=self.args.eval_max_generation_examples
            )
            scores = [None]
            if self.is_world_process_zero():
                scores = [self.score_predictions(predictions, self.eval_generation_dataset)]
            if self.args.world_size > 1:
                scores = broadcast_object_list(scores)
            metrics.update({f"{metric_key_prefix}_{name}": value for name, value in scores[0].items()})
        metrics[f"{metric_key_prefix}_runtime"] = round(time.time() - start, 4)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # ------------------------------------------------------------------ model card

    def create_model_card(self, model_name: str | None = None, test_metrics: dict | None = None, **kwargs) -> None:
        """Writes the model card (`README.md` of the output folder, pushed with the model): what the model is,
        its metrics, the data (`dataset`, a description) and training setup, and how to load it."""
        if not self.is_world_process_zero():
            return
        config = self.model.config
        repo_id = self.hub_model_id or model_name or os.path.abspath(self.args.output_dir)
        dataset = kwargs.get("dataset")
        eval_metrics = next((log for log in reversed(self.state.log_history) if "eval_CIDEr" in log), {})
        rows = []
        for name in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"):
            test_value = (test_metrics or {}).get(name)
            eval_value = eval_metrics.get(f"eval_{name}")
            rows.append(f"| {name} | {'-' if eval_value is None else f'{eval_value:.3f}'} | {'-' if test_value is None else f'{test_value:.3f}'} |")
        extra = {k: v for k, v in (test_metrics or {}).items() if k.startswith("answer_accuracy")}
        objectives = [name for name, on in (("MLM", config.use_mlm), ("MVM", config.use_mvm), ("MVT", config.use_mvt)) if on]
        args = self.args
        card = f"""---
library_name: transformers
pipeline_tag: text-generation
tags:
- video-grounded-dialogue
- avsd
- vgd-gpt2
- custom_code
---

# {model_name or os.path.basename(repo_id.rstrip("/"))}

VGD-GPT2 (Le & Hoi, ACL 2020): GPT-2 fine-tuned on pre-extracted video features plus the caption and dialogue
history, to answer questions about a video. Video features ({config.video_pooling}, D = {config.video_feature_dim})
are projected to the model width and given modality, temporal and spatial-position encodings; text tokens get
modality (cap / usr / sys), turn and position encodings; both form one GPT-2 sequence.

## Metrics

| metric | validation | test |
|---|---|---|
{chr(10).join(rows)}
{"".join(f"| {k} | - | {v:.3f} |{chr(10)}" for k, v in extra.items())}
Test scores follow the official DSTC7 AVSD protocol (last turn of each dialogue, 6 references, the official
stopword filter, PTB tokenisation, pycocoevalcap scorers).

## Data

{dataset or "AVSD (DSTC7): pre-extracted video features, captions and dialogues"}; {self.state.global_step} optimizer steps
({self.state.epoch or 0:.2f} epochs).

## Training

- backbone: {config.n_layer} layers, width {config.n_embd}, {config.n_head} heads; vocabulary {config.vocab_size}
- objectives: response generation (weight {args.response_loss_weight}){"".join(f", {o}" for o in objectives)}
  (weights MLM {args.mlm_loss_weight}, MVM {args.mvm_loss_weight}, MVT {args.mvt_loss_weight})
- optimiser: AdamW, learning rate {args.learning_rate}, schedule {args.lr_scheduler_type}, warm-up {args.warmup_steps}
- batch {args.per_device_train_batch_size} per device x {args.world_size} processes x {args.gradient_accumulation_steps} accumulation; {self.state.global_step} steps
- decoding: beam {args.generation_num_beams}, at most {args.generation_max_new_tokens} new tokens, length penalty {args.generation_length_penalty}

## Usage

```python
from transformers import AutoModelForCausalLM, AutoProcessor

processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained("{repo_id}", trust_remote_code=True)

inputs = processor(
    video_features=[features],  # per video: [F, D], [F, P, D] or a dict of streams (see processor.feature_extractor)
    caption=["a man opens a window ..."],
    history=[[("is he alone ?", "yes he is .")]],
    question=["what does he do next ?"],
    return_tensors="pt",
)
out = model.generate(**inputs, num_beams=5, max_new_tokens=20)
print(processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```
"""
        with open(os.path.join(args.output_dir, "README.md"), "w", encoding="utf-8") as f:
            f.write(card)

    def score_predictions(self, predictions: list[str], dataset) -> dict[str, float]:
        """Scores `predictions` for the first len(predictions) items of `dataset`."""
        if self.compute_generation_metrics is not None:
            return self.compute_generation_metrics(predictions, dataset)
        references = [list(refs) for refs in dataset.references[: len(predictions)]]
        return avsd_caption_metrics(predictions, references)


__all__ = [
    "DialogueTurnDataset",
    "GenerationCollator",
    "OBJECTIVES",
    "TrainingDivergedError",
    "VGDTrainer",
    "VGDTrainingArguments",
    "avsd_caption_metrics",
    "caption_text",
    "held_out_matching_pairs",
]
