"""Time the preparation of a DSTC7-train-sized AVSD split, and the cache hit that follows.

Generates (in a temporary folder, deleted afterwards) a `train_set4DSTC7-AVSD.json` with the size of the official
one: 7,659 dialogues x 10 turns = 76,590 examples, each with its full history. Then it times
`AVSD(...).download_and_prepare()` + `as_dataset()` on a fresh cache, the same again (a cache hit), and the same
after the file is rewritten (the cache must be invalidated).

    python benchmarks/bench_avsd_prepare.py [--num_dialogues 7659] [--num_turns 10] [--keep_dir DIR]
"""

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from avsd_dataset import AVSD  # noqa: E402


WORDS = (
    "a man woman person is are the in on of and he she it to with room kitchen door table chair couch book cup "
    "phone laptop window video sound anyone else there yes no one two does do what how many where walks sits "
    "opens closes picks up puts down looks at holds drinks eats talks smiles turns leaves enters bed floor"
).split()


def sentence(rng: random.Random, low: int, high: int, end: str = ".") -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))) + " " + end


def write_train_file(path: str, num_dialogues: int, num_turns: int, seed: int = 0) -> None:
    """Write an AVSD-format dialogue file with realistic text lengths (caption ~30 words, QA ~8-10 words)."""
    rng = random.Random(seed)
    dialogs = []
    for index in range(num_dialogues):
        dialogs.append(
            {
                "image_id": f"V{index:05d}",
                "caption": sentence(rng, 20, 40),
                "summary": sentence(rng, 15, 35),
                "dialog": [
                    {"question": sentence(rng, 5, 10, "?"), "answer": sentence(rng, 5, 14)} for _ in range(num_turns)
                ],
            }
        )
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"type": "scene_aware_dialog", "version": "0.1", "dialogs": dialogs}, handle)


def timed_load(data_dir: str, cache_dir: str):
    start = time.perf_counter()
    builder = AVSD(data_dir=data_dir, cache_dir=cache_dir)
    builder.download_and_prepare()
    dataset = builder.as_dataset(split="train")
    return time.perf_counter() - start, dataset, builder.cache_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_dialogues", type=int, default=7659)
    parser.add_argument("--num_turns", type=int, default=10)
    parser.add_argument("--keep_dir", default=None, help="work in this folder and keep it (default: a temp dir)")
    args = parser.parse_args()

    work_dir = args.keep_dir or tempfile.mkdtemp(prefix="bench_avsd_")
    os.makedirs(work_dir, exist_ok=True)
    data_dir, cache_dir = os.path.join(work_dir, "data"), os.path.join(work_dir, "cache")
    os.makedirs(data_dir, exist_ok=True)
    train_path = os.path.join(data_dir, "train_set4DSTC7-AVSD.json")
    try:
        start = time.perf_counter()
        write_train_file(train_path, args.num_dialogues, args.num_turns)
        generate_s = time.perf_counter() - start
        size_mb = os.path.getsize(train_path) / 2**20

        first_s, dataset, first_cache = timed_load(data_dir, cache_dir)
        expected = args.num_dialogues * args.num_turns
        assert len(dataset) == expected, (len(dataset), expected)
        assert len(dataset[expected - 1]["history"]) == args.num_turns - 1
        hit_s, dataset, hit_cache = timed_load(data_dir, cache_dir)
        assert hit_cache == first_cache, "the second prepare was not a cache hit"

        write_train_file(train_path, args.num_dialogues, args.num_turns, seed=1)
        changed_s, _, changed_cache = timed_load(data_dir, cache_dir)
        assert changed_cache != first_cache, "a rewritten file reused the old cache"

        print(f"train file: {args.num_dialogues} dialogues x {args.num_turns} turns = {expected} examples, "
              f"{size_mb:.1f} MB (generated in {generate_s:.1f} s)")
        print(f"{'first prepare + as_dataset':<34} {first_s:7.2f} s")
        print(f"{'second (cache hit)':<34} {hit_s:7.2f} s")
        print(f"{'after rewriting the file':<34} {changed_s:7.2f} s (new cache dir)")
    finally:
        if not args.keep_dir:
            shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
