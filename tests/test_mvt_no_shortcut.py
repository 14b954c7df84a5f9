"""Video-text matching without a shortcut: in batches of DataCollatorForVGD, nothing but the pairing of video and
text tells a negative (another example's video) from a positive. For every statistic of the model's input
(`<mask>` count and positions, masked / zeroed regions, lengths) the best single-threshold rule separating
negatives from positives must have a balanced accuracy near 0.5 (chance)."""

import numpy as np
import pytest
import torch

from avsd_dataset.collator import DataCollatorForVGD

from processing_vgd import VGDProcessor

D = 6
WORDS = "a man woman opens closes the window door cup red blue book table sits walks room kitchen".split()


@pytest.fixture(scope="module")
def processor(tiny_gpt2_dir):
    return VGDProcessor.from_gpt2_pretrained(tiny_gpt2_dir, video_feature_dim=D, max_video_frames=8)


def varied_examples(processor, count, seed=0):
    """Examples of varied caption / history / question / answer lengths and video sizes, each its own video."""
    rng = np.random.default_rng(seed)

    def sentence(low, high):
        return " ".join(rng.choice(WORDS, size=rng.integers(low, high + 1)))

    examples = []
    for _ in range(count):
        video = rng.standard_normal((int(rng.integers(2, 9)), int(rng.integers(1, 4)), D)).astype(np.float32) + 0.1
        history = [(sentence(2, 6) + " ?", sentence(2, 8) + " .") for _ in range(int(rng.integers(0, 3)))]
        examples.append(processor.process_example(video, sentence(3, 12) + " .", history, sentence(2, 6) + " ?", sentence(1, 6) + " ."))
    return examples


def input_statistics(batch, processor):
    """Per example: what the model's input shows of the masking and of the sizes (labels excluded)."""
    input_ids, attention = batch["input_ids"], batch["attention_mask"].bool()
    is_mask = (input_ids == processor.mask_token_id) & attention
    is_text = attention & (input_ids != processor.video_token_id)
    text_position = is_text.long().cumsum(dim=1) - 1
    # the regions the model sees as zero: the ones it zeros (mvm_mask) and any zeroed by the collator
    seen = batch["video_features"].masked_fill(batch["mvm_mask"].unsqueeze(-1), 0.0)
    zero_regions = (seen.abs().sum(-1) == 0) & batch["video_mask"]
    rows = []
    for i in range(len(input_ids)):
        positions = text_position[i][is_mask[i]].float()
        text_length = int(is_text[i].sum())
        regions = int(batch["video_mask"][i].sum())
        rows.append(
            {
                "mask tokens": float(is_mask[i].sum()),
                "mask fraction": float(is_mask[i].sum()) / text_length,
                "first mask position": float(positions.min()) if len(positions) else -1.0,
                "last mask position": float(positions.max()) if len(positions) else -1.0,
                "mean mask position": float(positions.mean()) if len(positions) else -1.0,
                "mean relative mask position": float(positions.mean()) / text_length if len(positions) else -1.0,
                "masked regions": float(zero_regions[i].sum()),
                "masked region fraction": float(zero_regions[i].sum()) / max(regions, 1),
                "first masked frame": float(zero_regions[i].any(dim=1).float().argmax()),
                "video regions": float(regions),
                "text length": float(text_length),
                "sequence length": float(attention[i].sum()),
            }
        )
    return rows


def best_threshold_balanced_accuracy(values, is_negative):
    """Balanced accuracy of the best rule `value > t` or `value <= t` over all thresholds t."""
    values, is_negative = np.asarray(values, float), np.asarray(is_negative, bool)
    order = np.argsort(values, kind="stable")
    values, is_negative = values[order], is_negative[order]
    negatives, positives = is_negative.sum(), (~is_negative).sum()
    # rule "value <= t -> negative" at every distinct cut point
    cut = np.r_[np.flatnonzero(np.diff(values)), len(values) - 1]
    true_negative_rate = np.cumsum(is_negative)[cut] / negatives
    true_positive_rate = 1 - np.cumsum(~is_negative)[cut] / positives
    balanced = (true_negative_rate + true_positive_rate) / 2
    return float(max(balanced.max(), (1 - balanced).max(), 0.5))


def collate_many(processor, collator, examples, batch_size, batches):
    rng = np.random.default_rng(1)
    statistics, negative = [], []
    for _ in range(batches):
        chosen = rng.choice(len(examples), size=batch_size, replace=False)
        batch = collator([examples[i] for i in chosen])
        statistics += input_statistics(batch, processor)
        negative += (batch["mvt_labels"] == 0).tolist()
        # negatives keep no target of the other objectives
        neg = batch["mvt_labels"] == 0
        assert (batch["labels"][neg] == -100).all() and (batch["mlm_labels"][neg] == -100).all()
        assert not batch["mvm_mask"][neg].any()
    return statistics, np.asarray(negative)


@pytest.mark.parametrize("mvt_probability", [0.15, 0.5])
def test_no_masking_statistic_separates_negatives_from_positives(processor, mvt_probability):
    examples = varied_examples(processor, 400)
    collator = DataCollatorForVGD(processor, mlm_probability=0.15, mvm_probability=0.15, mvt_probability=mvt_probability, seed=0)
    statistics, negative = collate_many(processor, collator, examples, batch_size=8, batches=400)  # 3,200 pairs
    assert negative.sum() > 300
    results = {name: best_threshold_balanced_accuracy([row[name] for row in statistics], negative) for name in statistics[0]}
    print({name: round(value, 3) for name, value in results.items()})
    worst = max(results, key=results.get)
    assert results[worst] < 0.56, f"{worst} separates negatives from positives (balanced accuracy {results[worst]:.3f})"


def test_the_check_sees_a_shortcut(processor):
    """The statistic check itself catches the old collator's shortcut (only positives masked)."""
    examples = varied_examples(processor, 100)
    collator = DataCollatorForVGD(processor, mlm_probability=0.15, mvm_probability=0.15, mvt_probability=0.5, seed=0)
    rng = np.random.default_rng(1)
    statistics, negative = [], []
    for _ in range(40):
        batch = collator([examples[i] for i in rng.choice(len(examples), size=8, replace=False)])
        neg = batch["mvt_labels"] == 0
        # what the old collator produced: negatives unmasked (original tokens back, regions not zeroed)
        batch["input_ids"][neg] = torch.where(
            batch["input_ids"][neg] == processor.mask_token_id, processor.tokenizer.convert_tokens_to_ids("a"), batch["input_ids"][neg]
        )
        batch["video_features"][neg] = batch["video_features"][neg] + 1.0
        statistics += input_statistics(batch, processor)
        negative += neg.tolist()
    negative = np.asarray(negative)
    assert best_threshold_balanced_accuracy([row["mask tokens"] for row in statistics], negative) > 0.95
    assert best_threshold_balanced_accuracy([row["masked regions"] for row in statistics], negative) > 0.95


def test_best_threshold_balanced_accuracy_reference_values():
    assert best_threshold_balanced_accuracy([1, 2, 3, 4], [True, True, False, False]) == 1.0
    assert best_threshold_balanced_accuracy([4, 3, 2, 1], [True, True, False, False]) == 1.0
    assert best_threshold_balanced_accuracy([1, 1, 1, 1], [True, False, True, False]) == 0.5
    # one negative of two below the cut, both positives above: (1/2 + 1) / 2
    assert best_threshold_balanced_accuracy([1, 3, 2, 4], [True, True, False, False]) == 0.75
