"""Time the AVSD scorer against a direct pycocoevalcap computation on the real DSTC7 test set.

Builds a result file from the real test dialogues whose answers are the first reference of each
scored turn, then, in one process and alternating:

- "direct": what `COCOEvalCap.evaluate()` does without SPICE, on the same stopword-filtered
  hypotheses: two `PTBTokenizer` calls (references, hypotheses), then `Bleu(4)`, `Meteor()`,
  `Rouge()`, `Cider()`, one after the other;
- "ours": `avsd_dataset.score.score_result_file` (reads and checks the files, filters, one PTB call,
  METEOR JVM started first).

Prints the best time of each, their ratio, the largest difference between the two sets of scores
and the official-style summary table.

    python benchmarks/bench_scoring.py [--data_dir ../shared/avsd] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from typing import Dict, List


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from avsd_dataset.score import METRIC_NAMES, format_scores, prepare_dstc7_inputs, score_result_file  # noqa: E402


def direct_pycocoevalcap(hypotheses: List[str], references: List[List[str]]) -> Dict[str, float]:
    """The scorers called directly, as `COCOEvalCap.evaluate()` calls them (SPICE left out)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts = {index + 1: [{"caption": ref} for ref in refs] for index, refs in enumerate(references)}
    res = {index + 1: [{"caption": hypothesis}] for index, hypothesis in enumerate(hypotheses)}
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize(gts)
    res = tokenizer.tokenize(res)
    # COCOEvalCap builds all scorers (starting the METEOR JVM) right after tokenization, then runs them in turn.
    scorers = [(Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]), (Meteor(), "METEOR"), (Rouge(), "ROUGE_L"), (Cider(), "CIDEr")]
    scores = {}
    for scorer, method in scorers:
        if isinstance(method, list):
            score, _ = scorer.compute_score(gts, res, verbose=0)
            scores.update(zip(method, score))
        else:
            scores[method] = scorer.compute_score(gts, res)[0]
    del scorers
    return {name: float(scores[name]) for name in METRIC_NAMES}


def build_result_file(test_json: str, reference_json: str, output_path: str) -> None:
    """Write the test dialogues with each last answer set to the first reference of that turn."""
    with open(test_json, encoding="utf-8") as test_file:
        test = json.load(test_file)
    with open(reference_json, encoding="utf-8") as reference_file:
        multiref = json.load(reference_file)
    first_reference = {}
    for annotation in multiref["annotations"]:
        first_reference.setdefault(annotation["image_id"], annotation["caption"])
    for index, dialog in enumerate(test["dialogs"]):
        dialog["dialog"][-1]["answer"] = first_reference[index + 1]
    with open(output_path, "w", encoding="utf-8") as output_file:
        json.dump(test, output_file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=os.path.join(REPO_ROOT, "..", "shared", "avsd"))
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each; the best is reported")
    args = parser.parse_args()
    test_json = os.path.join(args.data_dir, "test_set4DSTC7-AVSD.json")
    reference_json = os.path.join(args.data_dir, "test_set4DSTC7-AVSD_multiref.json")

    with tempfile.TemporaryDirectory() as tmp_dir:
        result_json = os.path.join(tmp_dir, "result_first_reference.json")
        build_result_file(test_json, reference_json, result_json)
        hypotheses, references = prepare_dstc7_inputs(result_json, reference_json)
        direct_times, our_times = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            direct_scores = direct_pycocoevalcap(hypotheses, references)
            direct_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            our_scores = score_result_file(result_json, reference_json)
            our_times.append(time.perf_counter() - start)

    max_difference = max(abs(direct_scores[name] - our_scores[name]) for name in METRIC_NAMES)
    print(f"turns scored: {len(hypotheses)} ({sum(len(refs) for refs in references)} references)")
    print(f"direct pycocoevalcap (2 PTB calls, scorers in sequence): {min(direct_times):.2f} s  (runs: {', '.join(f'{t:.2f}' for t in direct_times)})")
    print(f"avsd_dataset.score.score_result_file:                    {min(our_times):.2f} s  (runs: {', '.join(f'{t:.2f}' for t in our_times)})")
    print(f"ratio ours / direct: {min(our_times) / min(direct_times):.2f}")
    print(f"largest score difference: {max_difference:.3g}")
    print(format_scores(our_scores))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
