"""Throughput of VGD-GPT2's training data path on one CPU thread.

What one training example costs before the model sees it:
1. load: the AVSD feature files of its video, memory-mapped (`VideoFeatureStore` from `avsd_dataset.features`
   when available, otherwise `np.load(mmap_mode="r")` of `<root>/<stream>/<image_id>.npy`);
2. process: `VGDProcessor.process_example` (stream alignment + concatenation, frame capping, tokenisation of a
   ~20-word caption, ten history turns, the question and the answer, truncation, layout);
3. collate: `DataCollatorForVGD` on batches of 16 (right padding, `<cls>`, MLM / MVM / MVT labels, torch tensors).

The script writes AVSD-shaped random features in a temporary folder (i3d_rgb and i3d_flow `[T, 2048]` with T
drawn in [150, 250], vggish `[T', 128]` with T' within 4 frames of T), trains a small byte-level BPE offline (the
real `gpt2` tokenizer cannot be downloaded here), reads every file once so that the page cache is warm (as from the
second epoch on), then times the three stages for each configuration and prints examples/s.

`load` only maps the files: the first touch of their pages (page faults, copies from the page cache) happens
in `process`, which is where the feature bytes are read. Times are CPU time of this process (user + system)
as well as wall clock: on a shared machine CPU time is the steadier figure.

Configurations: the processor defaults (max_video_frames=256: every frame of a ~200-segment AVSD video is kept,
~3.3 MB of float32 features per example), temporal pooling (same size here: the AVSD streams have one region),
a realistic frame cap (`--realistic_max_video_frames`, 64 by default), and the same with the processor's token
cache on dialogues whose examples share their caption and earlier turns, as AVSD's ten examples per dialogue do.

    python benchmarks/bench_data_path.py [--num_videos 64] [--num_examples 512] [--output_json PATH]

Every configuration runs twice: with glibc's allocator defaults, then after `tune_malloc()` (freed memory stays
in the process). The difference is large: with the defaults most of the data path's CPU time goes into page
faults on memory that glibc gave back to the kernel after the previous batch.

Target: >= 1,000 examples/s end to end on one core.
"""

from __future__ import annotations

import os

# One thread everywhere (tokenizers' Rayon pool, BLAS / OpenMP), before numpy / torch / tokenizers start.
for _variable in ("RAYON_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse
import json
import sys
import tempfile
import time

import numpy as np
import torch


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from avsd_dataset.offline_gpt2 import train_gpt2_tokenizer  # noqa: E402
from avsd_dataset.collator import DataCollatorForVGD  # noqa: E402
from processing_vgd import AVSD_STREAM_ORDER, VGDProcessor  # noqa: E402


STREAM_DIMS = {"i3d_rgb": 2048, "i3d_flow": 2048, "vggish": 128}
WORDS = (
    "a the man woman person boy girl he she they it is are was were does do what who where when how why which "
    "color room kitchen table chair door window couch bed book cup phone bag box floor wall light sits stands walks "
    "opens closes picks puts holds looks talks drinks eats reads turns leaves enters smiles laughs yes no not one two "
    "three there here then after before while with on in at to from of and or but red blue green white black small "
    "big old young loud quiet video camera sound music speak say anything else end start begin seems appears maybe"
).split()


def write_features(root: str, num_videos: int, rng: np.random.Generator) -> list[str]:
    """AVSD-shaped `.npy` files `<root>/<stream>/<image_id>.npy`; returns the image ids."""
    for stream in STREAM_DIMS:
        os.makedirs(os.path.join(root, stream), exist_ok=True)
    image_ids = []
    for index in range(num_videos):
        image_id = f"VID{index:04d}"
        frames = int(rng.integers(150, 251))
        for stream, dim in STREAM_DIMS.items():
            length = frames if stream != "vggish" else max(1, frames + int(rng.integers(-4, 5)))
            array = rng.standard_normal((length, dim), dtype=np.float32)
            np.save(os.path.join(root, stream, f"{image_id}.npy"), array)
        image_ids.append(image_id)
    return image_ids


def make_loader(root: str):
    """The loading stage: `image_id -> {stream: memory-mapped array}`."""
    try:
        from avsd_dataset.features import VideoFeatureStore
    except ImportError:
        VideoFeatureStore = None
    if VideoFeatureStore is not None:
        store = VideoFeatureStore(root, streams=list(AVSD_STREAM_ORDER), split="train")
        return store.__getitem__, "VideoFeatureStore"

    def load(image_id: str) -> dict[str, np.ndarray]:
        return {s: np.load(os.path.join(root, s, f"{image_id}.npy"), mmap_mode="r") for s in AVSD_STREAM_ORDER}

    return load, "np.load(mmap_mode='r')"


def tune_malloc() -> bool:
    """Keep freed memory in the process instead of returning it to the OS (glibc only; returns False elsewhere).

    With glibc's defaults, the ~3 MB feature arrays of every example and the tens-of-MB video batches are given
    back to the kernel (heap trimming, one `mmap` per large block) and page-faulted in again, zero-filled, for the
    next batch: on this data path that costs more CPU than the feature copies themselves. Equivalent to starting
    the process with `MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_MMAP_MAX_=0`; DataLoader workers forked afterwards
    inherit the setting.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(mallopt(m_trim_threshold, 2**31 - 1)) and bool(mallopt(m_mmap_max, 0))


def sentence(rng: np.random.Generator, num_words: int) -> str:
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), num_words))


def make_dialogues(
    image_ids: list[str], num_examples: int, rng: np.random.Generator, shared: bool = False
) -> list[dict]:
    """One example per entry: a video, a ~20-word caption, ten history turns, a question and an answer.

    `shared=False`: every example has its own text (the worst case for the processor's token cache).
    `shared=True`: like AVSD, where the ten training examples of one dialogue repeat its caption and earlier turns:
    the examples of one video are windows of ten history turns + question / answer over that video's dialogue,
    in shuffled order.
    """

    def turn():
        return (sentence(rng, int(rng.integers(5, 10))) + " ?", sentence(rng, int(rng.integers(6, 14))) + " .")

    examples = []
    if not shared:
        for index in range(num_examples):
            question, answer = turn()
            examples.append(
                {
                    "image_id": image_ids[index % len(image_ids)],
                    "caption": sentence(rng, int(rng.integers(16, 25))),
                    "history": [turn() for _ in range(10)],
                    "question": question,
                    "answer": answer,
                }
            )
        return examples
    per_video = -(-num_examples // len(image_ids))
    for image_id in image_ids:
        caption = sentence(rng, int(rng.integers(16, 25)))
        dialogue = [turn() for _ in range(10 + per_video)]
        for k in range(per_video):
            question, answer = dialogue[k + 10]
            examples.append(
                {
                    "image_id": image_id,
                    "caption": caption,
                    "history": dialogue[k : k + 10],
                    "question": question,
                    "answer": answer,
                }
            )
    order = rng.permutation(len(examples))[:num_examples]
    return [examples[i] for i in order]


class _Timer:
    """Wall-clock and CPU time (this process: user + system, so page faults count) of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def time_pipeline(load, processor, collator, dialogues, batch_size: int, repeats: int) -> dict[str, dict[str, float]]:
    """Best-of-`repeats` seconds per example (wall and CPU) of each stage timed alone, and of the whole pipeline
    with the stages interleaved batch by batch as a DataLoader worker runs them."""
    best = {key: {"wall": float("inf"), "cpu": float("inf")} for key in ("load", "process", "collate", "total")}
    num = len(dialogues)
    for _ in range(repeats):
        timers = {}
        with _Timer() as timers["load"]:
            loaded = [load(d["image_id"]) for d in dialogues[:batch_size]]
        with _Timer() as timers["process"]:
            processed = [
                processor.process_example(v, d["caption"], d["history"], d["question"], d["answer"])
                for v, d in zip(loaded, dialogues[:batch_size])
            ]
        with _Timer() as timers["collate"]:
            collator(processed)
        del loaded, processed
        with _Timer() as timers["total"]:
            for i in range(0, num, batch_size):
                chunk = dialogues[i : i + batch_size]
                collator(
                    [
                        processor.process_example(
                            load(d["image_id"]), d["caption"], d["history"], d["question"], d["answer"]
                        )
                        for d in chunk
                    ]
                )
        for key, timer in timers.items():
            count = num if key == "total" else batch_size
            best[key]["wall"] = min(best[key]["wall"], timer.wall / count)
            best[key]["cpu"] = min(best[key]["cpu"], timer.cpu / count)
    return best


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_videos", type=int, default=64)
    parser.add_argument("--num_examples", type=int, default=512, help="examples per timed pass")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per configuration (best is kept)")
    parser.add_argument("--realistic_max_video_frames", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_json", type=str, default=None)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        feature_root = os.path.join(tmp, "features")
        image_ids = write_features(feature_root, args.num_videos, rng)
        tokenizer_dir = os.path.join(tmp, "gpt2")
        corpus = [sentence(rng, 12) for _ in range(5000)]
        train_gpt2_tokenizer(corpus, tokenizer_dir, vocab_size=2000, model_max_length=1024)
        dialogues = make_dialogues(image_ids, args.num_examples, rng)
        shared_dialogues = make_dialogues(image_ids, args.num_examples, rng, shared=True)
        load, loader_name = make_loader(feature_root)
        for image_id in image_ids:  # warm the page cache
            for array in load(image_id).values():
                np.asarray(array).sum()

        realistic = {"max_video_frames": args.realistic_max_video_frames}
        configs = {
            "default (256 frames, spatiotemporal)": ({"max_video_frames": 256}, dialogues),
            "temporal pooling (256 frames)": ({"max_video_frames": 256, "video_pooling": "temporal"}, dialogues),
            f"realistic ({args.realistic_max_video_frames} frames)": (realistic, dialogues),
            "realistic + token cache, AVSD-like text": ({**realistic, "token_cache_size": 100_000}, shared_dialogues),
        }
        results = {}
        for allocator in ("glibc defaults", "tuned malloc"):
            if allocator == "tuned malloc" and not tune_malloc():
                print("tuned malloc: mallopt is not available (not glibc), skipped")
                break
            for name, (options, texts) in configs.items():
                processor = VGDProcessor.from_gpt2_pretrained(
                    tokenizer_dir,
                    video_feature_dim=sum(STREAM_DIMS.values()),
                    stream_order=list(AVSD_STREAM_ORDER),
                    **options,
                )
                collator = DataCollatorForVGD(processor, seed=args.seed)
                seconds = time_pipeline(load, processor, collator, texts, args.batch_size, args.repeats)
                results[f"{name} | {allocator}"] = {
                    "configuration": name,
                    "allocator": allocator,
                    "load_us_per_example": seconds["load"]["cpu"] * 1e6,
                    "process_us_per_example": seconds["process"]["cpu"] * 1e6,
                    "collate_us_per_example": seconds["collate"]["cpu"] * 1e6,
                    "examples_per_second_cpu": 1.0 / seconds["total"]["cpu"],
                    "examples_per_second_wall": 1.0 / seconds["total"]["wall"],
                    "options": options,
                }

    print(
        f"loader: {loader_name}; {args.num_examples} examples per pass, batches of {args.batch_size}, one thread; "
        "stage costs in CPU microseconds per example (one batch, stages timed alone); examples/s of the whole "
        "pipeline by CPU time (robust on a shared machine) and by wall clock"
    )
    header = (
        f"{'configuration':<40} {'allocator':<15} {'load us':>8} {'process us':>11} {'collate us':>11} "
        f"{'ex/s (cpu)':>11} {'ex/s (wall)':>12}"
    )
    print(header)
    print("-" * len(header))
    for row in results.values():
        print(
            f"{row['configuration']:<40} {row['allocator']:<15} {row['load_us_per_example']:>8.0f} "
            f"{row['process_us_per_example']:>11.0f} {row['collate_us_per_example']:>11.0f} "
            f"{row['examples_per_second_cpu']:>11.0f} {row['examples_per_second_wall']:>12.0f}"
        )
    print("target: >= 1,000 examples/s")
    report = {
        "loader": loader_name,
        "num_examples": args.num_examples,
        "batch_size": args.batch_size,
        "target_examples_per_second": 1000,
        "results": results,
    }
    if args.output_json:
        with open(args.output_json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
