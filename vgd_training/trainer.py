"""`VGDTrainer`: the Hugging Face `Trainer` for VGD-GPT2.

- `compute_loss` = `1.5 * response + mlm + mvm + mvt` (weights are `VGDTrainingArguments`), each objective normalised
  by its own item count across gradient-accumulation steps and processes, each logged beside `loss`; a loss that
  stops being finite stops the run (`TrainingDivergedError`); an optimizer step whose gradient is not finite (a bf16
  spike, one bad batch) is skipped with a warning instead of writing NaN weights, up to
  `--max_nonfinite_grad_skips` steps in a row.
- `evaluate()` adds the video-text matching accuracy and the generation metrics of decoded responses (BLEU-1..4,
  METEOR, ROUGE-L, CIDEr), so the best checkpoint is chosen by a generation metric; `generate_responses` and
  `matching_accuracy` share one distributed inference loop.
- Checkpoints are atomic and resumable ([`AtomicCheckpointMixin`], `vgd_training/checkpointing.py`) and hold every
  random state that shapes training ([`ExactResumeMixin`], `vgd_training/exact_resume.py`).
- `create_model_card` extends the Trainer's card with what the model is, how to load it and labelled metrics.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from typing import Callable

import torch
from accelerate.utils import broadcast_object_list, gather_object
from huggingface_hub import ModelCard
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import Trainer
from transformers.trainer_callback import ProgressCallback

from avsd_dataset.collator import DataCollatorForVGD
from avsd_dataset.turns import DialogueTurnDataset, GenerationCollator, held_out_matching_pairs

from .checkpointing import CHECKPOINT_PATTERN, AtomicCheckpointMixin, find_last_complete_checkpoint, read_run_info
from .exact_resume import ExactResumeMixin

logger = logging.getLogger(__name__)

OBJECTIVES = ("response", "mlm", "mvm", "mvt")
CAPTION_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")


def avsd_caption_metrics(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr of `predictions` against `references` (the AVSD scorer)."""
    from avsd_dataset.score import compute_caption_metrics

    return compute_caption_metrics(predictions, references)


def _local_part(tensor: torch.Tensor) -> torch.Tensor:
    """What this process holds of a tensor: the local shard of a `DTensor` (FSDP2), the tensor itself otherwise."""
    tensor = tensor.detach()
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def local_nonfinite_gradient_flag(optimizer: torch.optim.Optimizer) -> torch.Tensor | None:
    """1.0 if a gradient this process holds (its shard, for a sharded `DTensor` parameter) has an inf / NaN element,
    else 0.0, as a float32 tensor on the gradients' device; None when no parameter has a gradient. No host sync."""
    grads = [_local_part(p.grad) for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return None
    # An inf / NaN element makes its tensor's sum inf / NaN. A sum, not a norm: squares overflow float32 from finite
    # elements of ~1e19 on (seen at 2 x 128 / lr 1e-1), a sum only past ~1e38; and one reduction per tensor, cheaper
    # than an element-wise isfinite (0.2 against 3 ms per step on the demo's model).
    sums = torch.stack([grad.sum(dtype=torch.float32) for grad in grads])  # 0 for an empty shard
    return (~torch.isfinite(sums).all()).to(torch.float32)


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


class VGDTrainer(ExactResumeMixin, AtomicCheckpointMixin, Trainer):
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
        if self.pop_callback(ProgressCallback) is not None:
            self.add_callback(LabelledProgressCallback)
        # compute_loss normalises every objective by its item count over all accumulation steps and processes.
        self.loss_is_scaled_for_ga = True
        self._objective_totals: dict[str, torch.Tensor] | None = None
        self._objective_loss_sums = None
        self._objective_steps_last_logged = 0
        self.nonfinite_grad_skipped_steps: list[int] = []  # optimizer steps whose update was dropped (see create_optimizer)
        self._nonfinite_skips_in_a_row = 0

    # ------------------------------------------------------------------ optimizer

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """The Trainer's optimizer, with a step pre-hook that skips an update whose gradient is not finite."""
        optimizer = super().create_optimizer(model)
        # (not under DeepSpeed: its engine steps the optimizer over flattened partitions of its own)
        guard = self.args.max_nonfinite_grad_skips >= 0 and not self.is_deepspeed_enabled
        if guard and not getattr(optimizer, "_vgd_nonfinite_guard", False):
            optimizer.register_step_pre_hook(self._skip_nonfinite_update)
            optimizer._vgd_nonfinite_guard = True
        return optimizer

    def _skip_nonfinite_update(self, optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        """Optimizer step pre-hook. An inf / NaN gradient element becomes NaN in the weights (`clip_grad_norm_` scales by
        max_norm / inf = 0, and inf x 0 = NaN), and NaN weights end the run. Like fp16's `GradScaler`, drop the update
        instead (`grad = None`: the optimizer leaves those weights and their moments alone), warn, and stop with
        `TrainingDivergedError` after `max_nonfinite_grad_skips` such steps in a row. Every process takes the same
        decision (each checks its own gradients or shards, and the flag is summed over processes)."""
        not_finite = local_nonfinite_gradient_flag(optimizer)
        if not_finite is None:
            if self.args.world_size == 1:
                return
            not_finite = torch.zeros((), device=self.args.device)  # the other processes reduce: take part
        if self.args.world_size > 1:
            not_finite = self.accelerator.reduce(not_finite, reduction="sum")
        if not bool(not_finite):  # one host sync per optimizer step
            self._nonfinite_skips_in_a_row = 0
            return
        step = self.state.global_step + 1
        self._nonfinite_skips_in_a_row += 1
        self.nonfinite_grad_skipped_steps.append(step)
        if self._nonfinite_skips_in_a_row > self.args.max_nonfinite_grad_skips:
            raise TrainingDivergedError(
                f"Training diverged: the gradient was not finite at {self._nonfinite_skips_in_a_row} optimizer steps in a "
                f"row (steps {step - self._nonfinite_skips_in_a_row + 1} to {step}; --max_nonfinite_grad_skips "
                f"{self.args.max_nonfinite_grad_skips}). The weights are still finite (those updates were skipped) but "
                "training no longer makes progress. Try a lower --learning_rate, a longer --warmup_steps or training in "
                "float32 (without --bf16 / --fp16)."
            )
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
        logger.warning(
            "Optimizer step %d: the gradient is not finite; this update is skipped (the weights are unchanged; %d such "
            "step(s) in a row, the run stops after %d). A lower --learning_rate avoids it.",
            step, self._nonfinite_skips_in_a_row, self.args.max_nonfinite_grad_skips,
        )

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

    # Private hook: the Trainer counts the items of the accumulated batches here (for `num_items_in_batch`) and has no
    # public hook for it; ours counts all four objectives. (Signature checked by tests/test_trainer_hooks.py.)
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

    # Private hook: the only point that sees where the Trainer's logging interval starts (`_globalstep_last_logged`
    # moves before `log` is called). (Signature checked by tests/test_trainer_hooks.py.)
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
            if not_finite and not self._weights_are_finite():
                raise TrainingDivergedError(self._divergence_message(not_finite, logs))
            if not_finite:  # a non-finite forward whose update was skipped (_skip_nonfinite_update): the run is sound
                logger.warning(
                    "The %s loss was not finite at some step between %d and %d, but the weights are finite: the update "
                    "of every step whose gradient was not finite was skipped (steps %s). Training goes on.",
                    " / ".join(not_finite), self._objective_steps_last_logged + 1, self.state.global_step,
                    self.nonfinite_grad_skipped_steps[-10:],
                )
            self._objective_loss_sums.zero_()
            self._objective_steps_last_logged = self.state.global_step
        super().log(logs, start_time)

    def _weights_are_finite(self) -> bool:
        """Every trainable weight is finite, on every process (read only when a logged loss is not finite)."""
        finite = torch.tensor(
            float(all(bool(torch.isfinite(_local_part(p)).all()) for p in self.model.parameters() if p.requires_grad)),
            device=self.args.device,
        )
        if self.args.world_size > 1:
            finite = self.accelerator.reduce(finite, reduction="sum") / self.args.world_size
        return bool(finite == 1)

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

    # ------------------------------------------------------------------ loading

    # Private hook: the Trainer reports load results here only. (Signature checked by tests/test_trainer_hooks.py.)
    def _issue_warnings_after_load(self, load_result) -> None:
        """No warning for the tied output embedding, which a checkpoint does not store (it is the input embedding)."""
        tied = set(getattr(self.model, "_tied_weights_keys", None) or {})
        if load_result.missing_keys and set(load_result.missing_keys) <= tied and not load_result.unexpected_keys:
            self.model.tie_weights()
            return
        super()._issue_warnings_after_load(load_result)

    # ------------------------------------------------------------------ inference (decoding, matching)

    def _inference_loop(self, batches: list[list], collate: Callable, predict: Callable, description: str) -> list[tuple]:
        """Runs `predict(model, collate(batch))` -> one output per item over `batches` (lists of items), split over
        processes (batch k on process k mod N), in eval mode without gradients; returns `(item, output)` pairs of
        all processes."""
        mine = batches[self.args.process_index :: self.args.world_size]
        loader = DataLoader(mine, batch_size=None, collate_fn=lambda chunk: (chunk, collate(chunk)), num_workers=self.args.dataloader_num_workers)
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        results = []
        progress = tqdm(loader, desc=description, total=len(mine), disable=not self.is_local_process_zero() or self.args.disable_tqdm)
        with torch.no_grad(), self.autocast_smart_context_manager():
            for chunk, batch in progress:
                results.extend(zip(chunk, predict(model, batch)))
        if was_training:
            model.train()
        if self.args.world_size > 1:
            results = gather_object(results)
        return results

    def generate_responses(self, dataset: DialogueTurnDataset, description: str = "Decoding", max_examples: int | None = None) -> list[str]:
        """Decode one response per item of `dataset` (beam search with the `generation_*` arguments), split
        over processes and gathered in dataset order. Items are batched by similar length."""
        count = len(dataset) if max_examples is None else min(len(dataset), max_examples)
        order = list(range(count))
        if hasattr(dataset, "lengths"):
            lengths = dataset.lengths
            order.sort(key=lambda i: lengths[i])
        batch_size = self.args.per_device_eval_batch_size
        collator = GenerationCollator(self.processing_class, max_new_tokens=self.args.generation_max_new_tokens)
        config = self.accelerator.unwrap_model(self.model).config
        generation_kwargs = dict(
            num_beams=self.args.generation_num_beams,
            max_new_tokens=self.args.generation_max_new_tokens,
            min_new_tokens=self.args.generation_min_new_tokens,
            length_penalty=self.args.generation_length_penalty,
            do_sample=False,
            pad_token_id=config.pad_token_id,
            eos_token_id=config.eos_token_id,
        )

        def decode(model, batch):
            batch = batch.to(self.args.device)
            output = model.generate(**batch, **generation_kwargs)
            texts = self.processing_class.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
            return [text.strip() for text in texts]

        results = self._inference_loop(
            [order[i : i + batch_size] for i in range(0, count, batch_size)],
            collate=lambda indices: collator([dataset[i] for i in indices]),
            predict=decode,
            description=description,
        )
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
            return collator(examples)

        def score(model, batch):
            batch = {key: value.to(self.args.device) for key, value in batch.items() if key != "labels"}
            return model(**batch).mvt_logits.float().cpu().tolist()

        batch_size = self.args.per_device_eval_batch_size
        results = self._inference_loop([pairs[i : i + batch_size] for i in range(0, len(pairs), batch_size)], collate, score, description)
        scores = [(index, label, logit) for (index, _, label), logit in results]
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

    def score_predictions(self, predictions: list[str], dataset) -> dict[str, float]:
        """Scores `predictions` for the first len(predictions) items of `dataset`."""
        if self.compute_generation_metrics is not None:
            return self.compute_generation_metrics(predictions, dataset)
        references = [list(refs) for refs in dataset.references[: len(predictions)]]
        return avsd_caption_metrics(predictions, references)

    # ------------------------------------------------------------------ model card

    def create_model_card(self, model_name: str | None = None, test_metrics: dict | None = None, dataset: str | None = None, **kwargs) -> None:
        """`Trainer.create_model_card` (metadata, hyperparameters, training results, framework versions), with
        VGD-GPT2's sections filled in: what the model is, what it needs, how to load it, and its test metrics
        labelled with what they measure."""
        if not self.is_world_process_zero():
            return
        tags = ["video-grounded-dialogue", "avsd", "vgd-gpt2", "custom_code"]
        super().create_model_card(model_name=model_name, dataset=dataset, tags=tags, tasks="text-generation", **kwargs)
        path = os.path.join(self.args.output_dir, "README.md")
        card = ModelCard.load(path)
        card.data.library_name = "transformers"
        card.data.pipeline_tag = "text-generation"
        repo_id = self.hub_model_id or "path/to/" + os.path.basename(os.path.abspath(self.args.output_dir))
        text = card.text
        text = _fill_section(text, "Model description", self._card_description())
        text = _fill_section(text, "Intended uses & limitations", self._card_usage(repo_id))
        text = _fill_section(text, "Training and evaluation data", self._card_data(dataset, test_metrics or {}))
        card.text = text
        card.save(path)

    def _card_description(self) -> str:
        config = self.model.config
        objectives = ", ".join(name for name, on in (("MLM", config.use_mlm), ("MVM", config.use_mvm), ("MVT", config.use_mvt)) if on) or "none"
        args = self.args
        backbone = getattr(config, "video_backbone", None)
        needs = "torch and transformers (with safetensors, tokenizers, numpy)"
        if backbone:
            needs += f"; answering from video files also needs torchvision and av (`pip install torchvision av`): the model records the video backbone {backbone.get('name')}"
        return (
            "VGD-GPT2 (Le & Hoi, ACL 2020): GPT-2 fine-tuned on video features plus the caption and dialogue history, to "
            f"answer questions about a video. Video features ({config.video_pooling}, D = {config.video_feature_dim}) are "
            "projected to the model width and given modality, temporal and spatial-position encodings; text tokens get "
            "modality (cap / usr / sys), turn and position encodings; both form one GPT-2 sequence.\n\n"
            f"- backbone: {config.n_layer} layers, width {config.n_embd}, {config.n_head} heads; vocabulary {config.vocab_size}\n"
            f"- objectives: response generation (weight {args.response_loss_weight}); auxiliary: {objectives} "
            f"(weights MLM {args.mlm_loss_weight}, MVM {args.mvm_loss_weight}, MVT {args.mvt_loss_weight})\n"
            f"- decoding used for the metrics: beam {args.generation_num_beams}, at most {args.generation_max_new_tokens} new tokens, "
            f"length penalty {args.generation_length_penalty}\n"
            f"- loading needs: {needs}"
        )

    def _card_usage(self, repo_id: str) -> str:
        config = self.model.config
        return f"""Load it with `trust_remote_code=True` (the model's code travels with it):

```python
import numpy as np
from transformers import AutoModelForCausalLM, AutoProcessor

processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained("{repo_id}", trust_remote_code=True)

# the video's features, extracted as the training data's were: an array [F, D], [F, P, D] (D = {config.video_feature_dim})
# or a dict of streams; e.g. `python -m avsd_dataset.extract_features` writes one .npy per video
features = np.load("video.npy")
inputs = processor(
    video_features=[features],
    caption=["a man opens a window ..."],
    history=[[("is he alone ?", "yes he is .")]],
    question=["what does he do next ?"],
    return_tensors="pt",
)
out = model.generate(**inputs, num_beams=5, max_new_tokens=20)
print(processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```

The model answers from the video features it is given; features from another extractor than the training data's
give meaningless answers."""

    def _card_data(self, dataset: str | None, test_metrics: dict) -> str:
        lines = [f"{dataset or 'AVSD (DSTC7): pre-extracted video features, captions and dialogues'}; "
                 f"{self.state.global_step} optimizer steps ({self.state.epoch or 0:.2f} epochs)."]
        decoded = [name for name in CAPTION_METRICS if name in test_metrics]
        if decoded:
            lines.append("\nTest split, decoded responses (beam search as above), scored with the official DSTC7 AVSD protocol "
                         "(last turn of each dialogue, the official stopword filter, PTB tokenisation, pycocoevalcap scorers, "
                         "against each turn's references):\n")
            lines.append("| metric | test |\n|---|---|")
            lines += [f"| {name} | {test_metrics[name]:.3f} |" for name in decoded]
        extra = {name: value for name, value in test_metrics.items() if name.startswith(("answer_accuracy", "matching_"))}
        if extra:
            lines.append("\nSynthetic-task checks (test split): `answer_accuracy*` = decoded answers that state the true fact "
                         "(with the dialogue's own video, with another dialogue's video, and chance); `matching_*` = the "
                         "video-text matching head on held-out validation pairs:\n")
            lines += [f"- {name}: {value:.3f}" for name, value in extra.items()]
        lines.append("\nThe evaluation-set figures of the Trainer (below and in the header) are computed on the validation split "
                     "during training: decoded responses scored against the single ground-truth answer of each turn, with "
                     "`eval_max_generation_examples` turns at most, so they are not comparable with the test figures.")
        return "\n".join(lines)


def _fill_section(text: str, heading: str, body: str) -> str:
    """`text` with the body of its `## heading` section (the Trainer writes "More information needed") replaced."""
    pattern = re.compile(rf"(## {re.escape(heading)}\n\n)(.*?)(\n(?=## )|\Z)", re.S)
    if not pattern.search(text):
        return text + f"\n## {heading}\n\n{body}\n"
    return pattern.sub(lambda match: match.group(1) + body + "\n" + match.group(3), text, count=1)


__all__ = ["OBJECTIVES", "TrainingDivergedError", "VGDTrainer", "avsd_caption_metrics", "local_nonfinite_gradient_flag"]
