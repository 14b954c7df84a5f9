"""Exact resumption: a run resumed from a checkpoint ends bit-identical to the uninterrupted run.

What shapes training besides the weights and the optimizer is saved and restored: the order of the training batches
(`EpochSeededLengthGroupedSampler`, a function of seed and epoch only), the data collator's random generator (MLM /
MVM masks, MVT negatives; recorded per batch by `CollatorStateRecorder`, since the data loader prefetches) and the
torch / numpy / python RNG states at the start of the step that a checkpoint taken after a failure must replay, and
the loss summed since the last log (the Trainer's `_tr_loss` and the per-objective sums), so that a run resumed
inside a logging window (e.g. after Ctrl-C mid accumulation window) logs the same losses as the uninterrupted run.
[`ExactResumeMixin`] is a base of `VGDTrainer`, before [`AtomicCheckpointMixin`], which stores this state in
`vgd_state.json`.
"""

from __future__ import annotations

import copy
import random
from collections import deque

import numpy as np
import torch
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices


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


def capture_rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.random.set_rng_state(states["cpu"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


class CollatorStateRecorder:
    """Wraps the training data collator: before each batch it records the collator's random state, so the state
    to restore is known for the first batch that training has not consumed yet (the data loader prefetches)."""

    def __init__(self, collator, states: deque):
        self.collator = collator
        self.states = states

    def __call__(self, examples):
        if torch.utils.data.get_worker_info() is None:
            self.states.append(self.collator.state_dict())
        return self.collator(examples)


class ExactResumeMixin:
    """Saves and restores the sampler order, the collator's generator and the RNG states of the current step (see
    the module docstring). Needs a data collator with `state_dict` / `load_state_dict` / `reseed` (as
    `avsd_dataset.collator.DataCollatorForVGD`); other collators are used as they are."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._collator_states: deque = deque()
        self._step_start = None
        self._pending_logging_state = None

    def train(self, *args, **kwargs):
        self._step_start = None
        return super().train(*args, **kwargs)

    def extra_checkpoint_state(self) -> dict:
        return {**super().extra_checkpoint_state(), "collator": self.collator_state_for_resume(), "logging": self.logging_state_for_resume()}

    def load_extra_checkpoint_state(self, info: dict) -> None:
        super().load_extra_checkpoint_state(info)
        if info.get("collator") is not None and hasattr(self.data_collator, "load_state_dict"):
            self.data_collator.load_state_dict(info["collator"])
        # the loss accumulated since the last log: put back at the first step of the resumed run (the Trainer
        # zeroes its accumulators when training starts)
        self._pending_logging_state = info.get("logging")

    # ------------------------------------------------------------------ the logging window's loss accumulators

    def _loss_accumulators(self) -> dict:
        """The Trainer's loss summed since the last log (`_tr_loss`, on the device: no sync), the step of that log,
        and the per-objective sums of `VGDTrainer` (if any)."""
        sums = getattr(self, "_objective_loss_sums", None)
        tr_loss = getattr(self, "_tr_loss", None)
        return {
            "tr_loss": None if tr_loss is None else tr_loss.detach().clone(),
            "globalstep_last_logged": getattr(self, "_globalstep_last_logged", None),
            "objective_loss_sums": None if sums is None else sums.detach().clone(),
            "objective_steps_last_logged": getattr(self, "_objective_steps_last_logged", None),
        }

    def logging_state_for_resume(self) -> dict:
        """The loss accumulators after the last completed optimizer step, JSON-ready (a checkpoint taken after a
        failure inside a step, e.g. Ctrl-C mid accumulation window, holds those of the step's start): a resumed run
        logs the same losses as the uninterrupted one."""
        state = self._step_start["logging"] if self._inside_a_step() else self._loss_accumulators()
        return {
            "tr_loss": None if state["tr_loss"] is None else float(state["tr_loss"].item()),
            "globalstep_last_logged": state["globalstep_last_logged"],
            "objective_loss_sums": None if state["objective_loss_sums"] is None else [float(v) for v in state["objective_loss_sums"].tolist()],
            "objective_steps_last_logged": state["objective_steps_last_logged"],
        }

    def _restore_logging_state(self) -> None:
        state, self._pending_logging_state = getattr(self, "_pending_logging_state", None), None
        if not state:
            return
        if state.get("tr_loss") is not None and hasattr(self, "_tr_loss"):
            self._tr_loss = torch.tensor(state["tr_loss"], dtype=self._tr_loss.dtype, device=self._tr_loss.device)
        if state.get("globalstep_last_logged") is not None:
            self._globalstep_last_logged = int(state["globalstep_last_logged"])
        if state.get("objective_loss_sums") is not None:
            self._objective_loss_sums = torch.tensor(state["objective_loss_sums"], dtype=torch.float64, device=self.args.device)
        if state.get("objective_steps_last_logged") is not None:
            self._objective_steps_last_logged = int(state["objective_steps_last_logged"])

    # Private hook: `Trainer` builds the training sampler here and has no public argument for a custom sampler.
    # (Signature checked by tests/test_trainer_hooks.py.)
    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and hasattr(dataset, "lengths"):
            return EpochSeededLengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps, dataset=dataset, lengths=dataset.lengths,
                seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            )
        return super()._get_train_sampler(train_dataset)

    # Private hook: the only place where the Trainer hands each data loader its collator (training, evaluation,
    # test), by description. (Signature checked by tests/test_trainer_hooks.py.)
    def _get_collator_with_removed_columns(self, data_collator, description=None):
        """Training batches: the collator's random state is recorded per batch (exact resumption). Evaluation and
        test batches: a copy of the collator restarted from its seed, so the evaluation loss does not depend on when
        it is computed and does not move the training collator's random sequence."""
        collator = super()._get_collator_with_removed_columns(data_collator, description=description)
        if not (hasattr(data_collator, "state_dict") and collator is data_collator):
            return collator
        if description == "Training":
            self._collator_states.clear()
            return CollatorStateRecorder(data_collator, self._collator_states)
        fresh = copy.copy(data_collator)
        fresh.reseed()
        return fresh

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        self._restore_logging_state()  # first step after a resume: the logging window goes on where it was
        # the random states and loss accumulators at the start of this optimizer step: what a checkpoint taken before
        # the step completes (after a failure inside it) must hold to replay it exactly
        self._step_start = {
            "global_step": self.state.global_step, "collator": self._next_collator_state(), "rng": capture_rng_states(),
            "logging": self._loss_accumulators(),
        }
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
        return self._step_start is not None and self._step_start["global_step"] == self.state.global_step

    def collator_state_for_resume(self) -> dict | None:
        """The data collator's random state before the first batch of the next optimizer step."""
        return self._step_start["collator"] if self._inside_a_step() else self._next_collator_state()

    # Private hook: `Trainer._save_checkpoint` saves the RNG states through it. (Signature checked by
    # tests/test_trainer_hooks.py.)
    def _save_rng_state(self, output_dir):
        """The RNG states after the last completed optimizer step (also when saving after a failure inside a step)."""
        if not self._inside_a_step():
            return super()._save_rng_state(output_dir)
        now = capture_rng_states()
        restore_rng_states(self._step_start["rng"])
        try:
            return super()._save_rng_state(output_dir)
        finally:
            restore_rng_states(now)
