"""Training data collator of VGD-GPT2 (Le & Hoi, ACL 2020).

[`DataCollatorForVGD`] pads unbatched [`VGDProcessor`] outputs on the right and adds the labels of the auxiliary
objectives: masked language modelling (`mlm_labels`), masked visual modelling (`mvm_mask`) and video-text matching
(`mvt_labels`, with the `<cls>` token appended to every sequence). Training code: a saved model does not ship it
(the padding it shares with the processor is `processing_vgd.pad_examples`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch


from configuration_vgd_gpt2 import MODALITY_SYS, MODALITY_VIS
from processing_vgd import IGNORE_INDEX, TEXT_KEYS, VGDProcessor, as_1d, example_video, pad_examples


@dataclasses.dataclass
class DataCollatorForVGD:
    r"""
    Pads unbatched [`VGDProcessor`] outputs on the right and adds the labels of VGD-GPT2's auxiliary objectives.

    Returns a dict of torch tensors: `input_ids`, `attention_mask`, `modality_ids`, `turn_ids`, `labels` (if the
    examples have them) `[B, L]` int64; `video_features` `[B, F, P, D]` float32 and `video_mask` `[B, F, P]` bool
    (absent when no example has a video); and, for each objective whose probability is > 0:

    - `mvt_labels` `[B]` float32 (video-text matching): every sequence gets a `<cls>` token appended (modality
      SYS, turn = the sequence's last turn, attention 1, label -100). With probability `mvt_probability` an example
      becomes a negative (label 0.0): its text is recombined with the video of another example of the batch whose
      video differs (chosen uniformly; the `<video>` placeholders are rebuilt for that video). An example without
      a video, or without a partner with a different video (e.g. batch size 1), stays positive (1.0), and at least
      one example of every batch stays positive.
    - `mlm_labels` `[B, L]` int64 (masked language modelling): each context text token (caption, history
      questions and answers, current question; never markers, `<video>`, the target answer, its
      `<|endoftext|>`, `<cls>` or padding) is replaced by `<mask>` in `input_ids` with probability
      `mlm_probability`; `mlm_labels` holds its original id there (positives only) and -100 elsewhere (no shift).
    - `mvm_mask` `[B, F, P]` bool (masked visual modelling): each real region (`video_mask` True) with probability
      `mvm_probability`. For a positive the collator leaves `video_features` unchanged and marks the region in
      `mvm_mask`; the model zeros the masked regions' inputs and reconstructs them.

    No shortcut for MVT: negatives are masked exactly like positives (same draws, same "at least one" rule), so
    the number and positions of `<mask>` tokens and of zeroed regions, and every length, have the same
    distribution in both; a negative then loses its targets: `labels` and `mlm_labels` all -100, `mvm_mask` all
    False, and its masked regions are zeroed in `video_features` by the collator (what the model would have done).
    It only feeds the matching loss.

    At least one: an example with something maskable gets at least one masked token (MLM) and one masked region
    (MVM) even if the random draws chose none, so a batch has masked items unless none of its positive examples
    has context text / video. The key is present whenever its probability is > 0 (stable batch keys); when
    nothing could be masked it is all -100 / all False, and the model then returns a zero loss for it.
    A probability of 0 removes the key (and, for MVT, the `<cls>` token).

    Randomness: a `numpy.random.Generator` owned by the collator. In the main process it is seeded with `seed`,
    so the sequence of batches is deterministic given the seed and the order of calls. Inside a DataLoader worker
    it is re-seeded on first use from `(seed, worker_info.seed)`: distinct per worker and per epoch, and
    deterministic when the main process's torch seed is fixed (the DataLoader derives `worker_info.seed` from it,
    e.g. via `transformers.set_seed`). `reseed(seed)` restarts the sequence.

    Args:
        processor ([`VGDProcessor`]): gives the special-token ids and the feature dim.
        mlm_probability, mvm_probability, mvt_probability (`float`, default 0.15 each): in [0, 1].
        seed (`int`, default 0).
        pad_to_multiple_of (`int`, *optional*): pad the text length L to a multiple of this.
        append_cls (`bool`, *optional*): append `<cls>` to every sequence; default: when `mvt_probability > 0`
            (True with `mvt_probability=0` scores given pairs with the matching head, e.g. in evaluation).
    """

    processor: VGDProcessor
    mlm_probability: float = 0.15
    mvm_probability: float = 0.15
    mvt_probability: float = 0.15
    seed: int = 0
    pad_to_multiple_of: int | None = None
    append_cls: bool | None = None

    def __post_init__(self):
        for name in ("mlm_probability", "mvm_probability", "mvt_probability"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.pad_to_multiple_of is not None and int(self.pad_to_multiple_of) < 1:
            raise ValueError(f"pad_to_multiple_of must be a positive integer, got {self.pad_to_multiple_of}")
        self._rng: np.random.Generator | None = None
        self._rng_owner: tuple | None = None

    # ------------------------------------------------------------------ randomness

    def reseed(self, seed: int | None = None) -> None:
        """Restart the random sequence (from `seed`, or from the collator's `seed`)."""
        if seed is not None:
            self.seed = seed
        self._rng = None
        self._rng_owner = None

    def state_dict(self) -> dict[str, Any]:
        """The collator's random state in the main process (JSON-serialisable), for exact resumption: `seed` and the
        generator's bit-generator state (`None` before the first batch)."""
        return {"seed": int(self.seed), "generator": None if self._rng is None or self._rng_owner is not None else self._rng.bit_generator.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the random sequence saved by `state_dict()`."""
        self.reseed(int(state["seed"]))
        if state.get("generator") is not None:
            self._rng = np.random.default_rng(np.random.SeedSequence([int(self.seed)]))
            self._rng.bit_generator.state = state["generator"]

    def _generator(self) -> np.random.Generator:
        info = torch.utils.data.get_worker_info()
        owner = None if info is None else (info.id, info.seed)
        if self._rng is None or owner != self._rng_owner:
            entropy = [int(self.seed)] if info is None else [int(self.seed), int(info.seed) % (2**63)]
            self._rng = np.random.default_rng(np.random.SeedSequence(entropy))
            self._rng_owner = owner
        return self._rng

    # ------------------------------------------------------------------ collation

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if len(examples) == 0:
            raise ValueError("DataCollatorForVGD got an empty list of examples")
        rng = self._generator()
        processor = self.processor
        dim = processor.feature_extractor.video_feature_dim
        examples = [self._normalize(example, index, dim) for index, example in enumerate(examples)]
        batch_size = len(examples)
        has_labels = "labels" in examples[0]

        positive = np.ones(batch_size, dtype=bool)
        if self.mvt_probability > 0:
            examples, positive = self._make_negatives(examples, rng)
        if self.append_cls or (self.append_cls is None and self.mvt_probability > 0):
            examples = [self._append_cls(example) for example in examples]

        shared = {}
        if torch.utils.data.get_worker_info() is not None:
            # In a DataLoader worker, write the (large) video batch straight into shared memory, as torch's
            # default_collate does: sending the batch to the main process then needs no extra copy.
            def allocate_video(shape):
                storage = torch.UntypedStorage._new_shared(int(np.prod(shape)) * 4)
                shared["video_features"] = torch.empty(0, dtype=torch.float32).set_(storage).view(shape)
                return shared["video_features"].numpy()

        else:
            allocate_video = None
        batch = pad_examples(
            examples,
            pad_token_id=processor.pad_token_id,
            padding_side="right",
            video_feature_dim=dim,
            pad_to_multiple_of=self.pad_to_multiple_of,
            allocate_video=allocate_video,
        )

        if self.mlm_probability > 0:
            input_ids = batch["input_ids"]
            candidates = (batch["modality_ids"] != MODALITY_VIS) & (batch["attention_mask"] == 1)
            candidates &= ~np.isin(input_ids, self._special_ids())
            if has_labels:
                candidates &= batch["labels"] == IGNORE_INDEX
            # Negatives are masked exactly like positives (no masking statistic tells them apart); only
            # the positives keep the targets.
            chosen = self._draw(rng, candidates, self.mlm_probability)
            mlm_labels = np.full_like(input_ids, IGNORE_INDEX)
            mlm_labels[chosen] = input_ids[chosen]
            mlm_labels[~positive] = IGNORE_INDEX
            input_ids[chosen] = processor.mask_token_id
            batch["mlm_labels"] = mlm_labels

        if self.mvm_probability > 0 and "video_mask" in batch:
            chosen = self._draw(rng, batch["video_mask"], self.mvm_probability)
            # A negative's masked regions are zeroed here (what the model does for `mvm_mask`), so its input
            # looks like a positive's; they are not reconstruction targets.
            batch["video_features"][~positive[:, None, None] & chosen] = 0.0
            chosen[~positive] = False
            batch["mvm_mask"] = chosen

        if has_labels:
            batch["labels"][~positive] = IGNORE_INDEX  # a negative feeds the matching loss only
        if self.mvt_probability > 0:
            batch["mvt_labels"] = positive.astype(np.float32)

        return {key: shared[key] if key in shared else torch.from_numpy(value) for key, value in batch.items()}

    def _special_ids(self) -> np.ndarray:
        """Ids never masked for MLM: every special token of the processor (SPECIAL_TOKENS, eos / bos)."""
        return np.asarray(sorted(set(self.processor.special_token_ids().values())), dtype=np.int64)

    @staticmethod
    def _draw(rng: np.random.Generator, candidates: np.ndarray, probability: float) -> np.ndarray:
        """Bernoulli(probability) over the True entries of `candidates` `[B, ...]`, at least one per row that has
        candidates."""
        chosen = (rng.random(candidates.shape) < probability) & candidates
        flat_candidates = candidates.reshape(len(candidates), -1)
        flat_chosen = chosen.reshape(len(chosen), -1)
        for row in np.flatnonzero(flat_candidates.any(axis=1) & ~flat_chosen.any(axis=1)):
            positions = np.flatnonzero(flat_candidates[row])
            flat_chosen[row, positions[rng.integers(len(positions))]] = True
        return chosen

    def _normalize(self, example: Mapping[str, Any], index: int, dim: int) -> dict[str, np.ndarray]:
        missing = [key for key in TEXT_KEYS if key not in example]
        if missing:
            raise ValueError(
                f"example {index} lacks {missing}: DataCollatorForVGD takes unbatched VGDProcessor outputs "
                "(processor.process_example(...))"
            )
        out = {key: as_1d(example[key], key, index).astype(np.int64, copy=False) for key in TEXT_KEYS}
        if "labels" in example:
            out["labels"] = as_1d(example["labels"], "labels", index).astype(np.int64, copy=False)
        out["video_features"], out["video_mask"] = example_video(example, index, dim)
        num_video = int(out["video_mask"].sum())
        if num_video and not (out["input_ids"][:num_video] == self.processor.video_token_id).all():
            raise ValueError(
                f"example {index}: its video has {num_video} regions but its input_ids do not start with "
                f"{num_video} <video> placeholders"
            )
        return out

    def _make_negatives(self, examples: list[dict], rng: np.random.Generator) -> tuple[list[dict], np.ndarray]:
        """Turn about `mvt_probability` of the examples into negatives (the video of another example)."""
        batch_size = len(examples)
        draws = rng.random(batch_size) < self.mvt_probability
        positive = np.ones(batch_size, dtype=bool)
        if batch_size < 2 or not draws.any():
            return examples, positive
        has_video = [bool(example["video_mask"].any()) for example in examples]
        signatures = [_video_signature(example["video_features"]) for example in examples]

        def differs(i: int, j: int) -> bool:
            a, b = examples[i]["video_features"], examples[j]["video_features"]
            if signatures[i] != signatures[j]:
                return True
            return not (a is b or np.array_equal(a, b))

        out = list(examples)
        for i in np.flatnonzero(draws):
            if not has_video[i]:
                continue
            if positive.sum() == 1:  # keep at least one positive example (a response loss over no tokens is NaN)
                break
            partners = [j for j in range(batch_size) if j != i and has_video[j] and differs(i, j)]
            if not partners:
                continue
            j = partners[rng.integers(len(partners))]
            out[i] = self._recombine(examples[i], examples[j])
            positive[i] = False
        return out, positive

    def _recombine(self, text_example: dict, video_example: dict) -> dict:
        """The text of `text_example` after the video of `video_example` (its labels are dropped by `__call__`)."""
        num_old = int(text_example["video_mask"].sum())
        num_new = int(video_example["video_mask"].sum())
        new = {
            "input_ids": np.concatenate(
                [np.full(num_new, self.processor.video_token_id, np.int64), text_example["input_ids"][num_old:]]
            ),
            "attention_mask": np.concatenate([np.ones(num_new, np.int64), text_example["attention_mask"][num_old:]]),
            "modality_ids": np.concatenate(
                [np.full(num_new, MODALITY_VIS, np.int64), text_example["modality_ids"][num_old:]]
            ),
            "turn_ids": np.concatenate([np.zeros(num_new, np.int64), text_example["turn_ids"][num_old:]]),
            "video_features": video_example["video_features"],
            "video_mask": video_example["video_mask"],
        }
        if "labels" in text_example:
            # kept until masking (the answer is never masked, in negatives too), then set to -100
            new["labels"] = np.concatenate([np.full(num_new, IGNORE_INDEX, np.int64), text_example["labels"][num_old:]])
        return new

    def _append_cls(self, example: dict) -> dict:
        example = dict(example)
        last_turn = example["turn_ids"][-1] if len(example["turn_ids"]) else 0
        example["input_ids"] = np.append(example["input_ids"], self.processor.cls_token_id)
        example["attention_mask"] = np.append(example["attention_mask"], 1)
        example["modality_ids"] = np.append(example["modality_ids"], MODALITY_SYS)
        example["turn_ids"] = np.append(example["turn_ids"], last_turn)
        if "labels" in example:
            example["labels"] = np.append(example["labels"], IGNORE_INDEX)
        return example


def _video_signature(features: np.ndarray) -> tuple:
    """A cheap fingerprint of a video (shape and a few values): different fingerprints mean different videos."""
    flat = features.reshape(-1)
    if flat.size == 0:
        return (features.shape,)
    picks = np.linspace(0, flat.size - 1, num=min(16, flat.size)).astype(np.intp)
    return (features.shape, flat[picks].tobytes())


__all__ = ["DataCollatorForVGD"]
