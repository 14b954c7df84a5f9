"""AVSD turns as model inputs: one item per dialogue turn, made model-ready on access.

- `DialogueTurnDataset`: text from an AVSD split + video features from a `VideoFeatureStore` -> processor outputs
  (training) or raw processor inputs (decoding, batched by `GenerationCollator`).
- `CachedTurnDataset`: the same training items, each processed once and kept in memory (`--cache_train_turns`).
- `held_out_matching_pairs`: the video-text pairs of the matching evaluation; `shuffled_videos`: the control split
  whose dialogues see another dialogue's video.
"""

from __future__ import annotations

import random
from typing import Sequence

from torch.utils.data import Dataset


def caption_text(row: dict, caption_fields: Sequence[str]) -> str:
    """The caption input of one AVSD row: the chosen text fields (`caption`, `summary`) joined."""
    return " ".join(row[name].strip() for name in caption_fields if row.get(name))


class DialogueTurnDataset(Dataset):
    """One AVSD turn per item, made model-ready on access: video features from a `VideoFeatureStore`,
    text from an AVSD split (a `datasets.Dataset` of the `avsd_dataset.AVSD` builder).

    `for_generation=False` yields unbatched processor outputs with the answer (for `DataCollatorForVGD`);
    `for_generation=True` yields the raw inputs of `VGDProcessor.__call__` without the answer (for
    `GenerationCollator`). `lengths` estimates each item's sequence length for length-grouped batching.
    `label_history_answers=True` (training only) labels the history answers too (whole-dialogue training: give it the
    last turn of every dialogue, `whole_dialogues(split)`; see `VGDProcessor.process_example`).
    """

    def __init__(
        self, split, feature_store, processor, caption_fields=("caption", "summary"), for_generation=False, video_lengths=None,
        label_history_answers=False,
    ):
        if label_history_answers and for_generation:
            raise ValueError("label_history_answers is for training examples, not for_generation")
        self.split = split
        self.feature_store = feature_store
        self.processor = processor
        self.caption_fields = tuple(caption_fields)
        self.for_generation = for_generation
        self.video_lengths = video_lengths
        self.label_history_answers = label_history_answers
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
        return self.processor.process_example(**inputs, label_history_answers=self.label_history_answers)

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


class CachedTurnDataset(DialogueTurnDataset):
    """A training `DialogueTurnDataset` that processes each turn once and keeps the result in memory, instead of once
    per epoch (run_vgd.py `--cache_train_turns`). Processing a turn (reading and pooling its video features, tokenising
    its caption, history and question) is deterministic and the collator draws all the randomness (MLM / MVM masks,
    mismatched videos), so every epoch gets the very arrays it would have computed again: the same batches, bit for
    bit. The collator gets copies, so nothing it does to a batch can reach the cache.

    Memory: every training turn with its pooled video features (the embedded demo: ~15,000 turns of 4 x 4 regions,
    ~60 MB; the video demo: 9,856 turns of 28 x 512 floats, ~0.6 GB). Not for AVSD-sized features.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._cache: dict[int, dict] = {}

    def __getitem__(self, index):
        index = int(index)
        item = self._cache.get(index)
        if item is None:
            item = self._cache[index] = super().__getitem__(index)
        return {name: value.copy() if hasattr(value, "copy") else value for name, value in item.items()}


def last_turns(split) -> dict[str, int]:
    """`{video id: row index of its dialogue's last turn}` of an AVSD split (one dialogue per video), in video-id order."""
    last = {}  # image_id -> (turn, index) of its last turn
    for index, (image_id, turn) in enumerate(zip(split["image_id"], split["turn"])):
        if image_id not in last or turn > last[image_id][0]:
            last[image_id] = (turn, index)
    return {image_id: last[image_id][1] for image_id in sorted(last)}


def whole_dialogues(split):
    """The rows of `split` that hold whole dialogues: the last turn of every dialogue, whose `history` holds all the
    turns before it (in the split's order). With `label_history_answers=True` each is one training sequence for
    every answer of its dialogue."""
    return split.select(sorted(last_turns(split).values()))


def held_out_matching_pairs(dataset: DialogueTurnDataset) -> list[tuple[int, str, float]]:
    """Held-out video-text pairs: the last turn of every dialogue of `dataset` with its own video (label 1.0), then
    with the video of the next dialogue in sorted video-id order (0.0, a derangement), as `(item index, video id,
    label)`; empty when there are fewer than two dialogues."""
    last = last_turns(dataset.split)
    image_ids = list(last)
    if len(image_ids) < 2:
        return []
    pairs = []
    for k, image_id in enumerate(image_ids):
        pairs.append((last[image_id], image_id, 1.0))
        pairs.append((last[image_id], image_ids[(k + 1) % len(image_ids)], 0.0))
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


def shuffled_videos(split, seed: int):
    """A copy of `split` whose dialogues are each paired with another dialogue's video (a derangement)."""
    ids = list(split["image_id"])
    rng = random.Random(seed)
    order = list(range(len(ids)))
    while len(ids) > 1:
        rng.shuffle(order)
        if all(ids[i] != ids[j] for i, j in enumerate(order)):
            break
    shuffled = [ids[j] for j in order]
    return split.remove_columns("image_id").add_column("image_id", shuffled)
