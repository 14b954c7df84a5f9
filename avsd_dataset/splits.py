"""The AVSD splits of a run: loading (the `AVSD` builder, cached), feature stores checked up front, the video-token
counts of length-grouped batching, the video backbone recorded with the features, and the official result file."""

from __future__ import annotations

import json
import logging
import os

from .features import VideoFeatureStore, VideoFeatureValidationError, parse_feature_streams

logger = logging.getLogger(__name__)


def load_splits(data_args):
    """The AVSD splits (prepared once, then read from the datasets cache) and the path of the test JSON."""
    from .avsd import AVSD

    overrides = {
        key: getattr(data_args, key)
        for key in ("train_file", "validation_file", "test_file", "test_reference_file")
        if getattr(data_args, key) is not None
    }
    builder = AVSD(data_dir=data_args.data_dir, cache_dir=data_args.cache_dir, config_name=data_args.dataset_config, **overrides)
    builder.download_and_prepare()
    splits = builder.as_dataset()
    for name, limit in (("train", data_args.max_train_samples), ("validation", data_args.max_eval_samples), ("test", data_args.max_predict_samples)):
        if name in splits and limit is not None:
            splits[name] = splits[name].select(range(min(limit, len(splits[name]))))
    # the JSON file of each split, for messages that point into it (see check_examples)
    splits.source_files = {name: builder.config.resolve_file(getattr(builder.config, f"{field}_file")) for name, field in (("train", "train"), ("validation", "validation"), ("test", "test"))}
    return splits, builder.config.resolve_file(builder.config.test_file)


def check_test_keys_unique(test_json_path: str) -> None:
    """Refuse a test file with two dialogues of the same video and length: `write_result_file` matches answers to
    dialogues by (image_id, turn), so one would silently get the other's answer."""
    with open(test_json_path, encoding="utf-8") as f:
        dialogues = json.load(f)["dialogs"]
    seen = {}
    for index, dialogue in enumerate(dialogues):
        key = (dialogue["image_id"], len(dialogue["dialog"]) - 1)
        if key in seen:
            raise ValueError(
                f"{test_json_path}: dialogues {seen[key]} and {index} have the same video id '{key[0]}' and the same "
                f"scored turn ({key[1]}): test_result.json matches answers to dialogues by (video id, turn), so one "
                "would get the other's answer. Remove or correct one of them."
            )
        seen[key] = index


def locate_turn(source_file: str | None, image_id: str, turn: int, question: str) -> str:
    """'file F, dialogue D (video id V), turn T' for one turn of a split (the dialogue index read from the file)."""
    dialogue_index = "?"
    if source_file and os.path.isfile(source_file):
        with open(source_file, encoding="utf-8") as f:
            for index, dialogue in enumerate(json.load(f)["dialogs"]):
                turns = dialogue.get("dialog") or []
                if dialogue.get("image_id") == image_id and turn < len(turns) and (turns[turn].get("question") or "").strip() == question.strip():
                    dialogue_index = index
                    break
    return f"file {source_file}, dialogue {dialogue_index} (video id '{image_id}'), turn {turn}"


def check_examples(split, processor, caption_fields, for_generation: bool = False, max_new_tokens: int | None = None):
    """Run the processor's text side over every turn of `split` before training (no feature file is read: the
    features are checked by `feature_stores`), so that an example the processor refuses (a question longer than the
    text budget, no room for the answer, ...) is found up front rather than at the step that draws it. Returns
    `(row index, message)` per refused turn; the processor's truncation counters are left as they were."""
    import copy

    from .turns import caption_text

    saved = copy.deepcopy(processor.truncation_stats)
    problems = []
    try:
        for index, row in enumerate(split.select_columns(["caption", "summary", "history", "question", "answer"])):
            inputs = {
                "video_features": None,
                "caption": caption_text(row, caption_fields),
                "history": [(turn["question"], turn["answer"]) for turn in row["history"]],
                "question": row["question"],
            }
            try:
                if for_generation:
                    processor(**inputs, max_new_tokens=max_new_tokens)
                else:
                    processor.process_example(**inputs, answer=row["answer"])
            except ValueError as error:
                problems.append((index, str(error).removeprefix("example 0: ")))
    finally:
        processor.truncation_stats = saved
    return problems


def drop_bad_examples(name: str, splits, processor, caption_fields, skip: bool, for_generation: bool = False, max_new_tokens: int | None = None) -> None:
    """`check_examples` on `splits[name]`: refuse the split naming each bad turn (file, dialogue, video id, turn), or
    with `skip` drop those turns and count them in a warning."""
    problems = check_examples(splits[name], processor, caption_fields, for_generation, max_new_tokens)
    if not problems:
        return
    split = splits[name]
    source = getattr(splits, "source_files", {}).get(name)
    described = [
        f"{locate_turn(source, split[index]['image_id'], split[index]['turn'], split[index]['question'])}: {message}"
        for index, message in problems[:5]
    ]
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    if not skip:
        raise ValueError(
            f"{len(problems)} of the {len(split)} turns of the {name} split cannot be made into model inputs{more}:\n  "
            + "\n  ".join(described)
            + "\nCorrect them, or pass --skip_bad_examples to drop such turns (counted in a warning)."
        )
    bad = {index for index, _ in problems}
    logger.warning("%s: dropping %d of %d turns that cannot be made into model inputs, e.g. %s", name, len(bad), len(split), "; ".join(described))
    splits[name] = split.select([index for index in range(len(split)) if index not in bad])


def feature_stores(data_args, splits, names: list[str]) -> dict[str, VideoFeatureStore]:
    """One feature store per split, every needed file checked up front (headers, dtypes, values), so a long run never
    dies on a missing or malformed file. With --skip_missing_features the turns of videos without features
    are dropped (and counted) instead."""
    streams = parse_feature_streams(data_args.feature_streams)
    root = data_args.feature_dir or os.path.join(data_args.data_dir, "features")
    stores = {}
    for name in names:
        store = VideoFeatureStore(root, streams=streams, split=name, skip_missing_features=data_args.skip_missing_features)
        ids = sorted(set(splits[name]["image_id"]))
        problems = store.check(ids)  # one pass: headers, dtypes and values
        if problems and not data_args.skip_missing_features:
            raise VideoFeatureValidationError(problems, len(ids), root)
        missing = {problem.image_id for problem in problems}
        if missing:
            logger.warning("%s: dropping the turns of %d videos whose features are missing or unreadable", name, len(missing))
            splits[name] = splits[name].filter(lambda image_id: image_id not in missing, input_columns="image_id")
        stores[name] = store
    return stores


def check_video_regions(stores: dict, splits, num_regions: int) -> None:
    """For `--video_pooling spatial_and_temporal`, whose first `num_regions` video tokens are the regions': every
    video of every split has that many regions per frame, from the .npy headers, before step 1. Raises a
    ValueError naming up to 5 files and their shapes."""
    from .features import read_npy_header

    wrong = []
    for name, store in stores.items():
        for image_id in sorted(set(splits[name]["image_id"])):
            for stream in store.streams:
                path = store.feature_path(image_id, stream)
                shape = read_npy_header(path)[0]
                if len(shape) == 3 and shape[1] != num_regions:
                    wrong.append(f"{path} {tuple(shape)}")
    if wrong:
        more = f" (and {len(wrong) - 5} more)" if len(wrong) > 5 else ""
        raise ValueError(
            f"--video_pooling spatial_and_temporal reads {num_regions} regions per frame (its first {num_regions} video "
            f"tokens are the regions'), but {len(wrong)} feature files have another number{more}:\n  "
            + "\n  ".join(wrong[:5])
            + "\nExtract every video with the same backbone, layer and crop size."
        )


def video_token_counts(store: VideoFeatureStore, image_ids, processor) -> dict[str, int]:
    """Video tokens per video (frames x regions after alignment, frame cap and pooling), from the .npy
    headers only: the length estimate of length-grouped batching."""
    from .features import read_npy_header

    extractor = processor.feature_extractor
    counts = {}
    for image_id in set(image_ids):
        shapes = [read_npy_header(store.feature_path(image_id, stream))[0] for stream in store.streams]
        frames, regions = extractor.pooled_video_shape(
            min(shape[0] for shape in shapes), max((shape[1] for shape in shapes if len(shape) == 3), default=1)
        )
        counts[image_id] = frames * regions
    return counts


def recorded_video_backbone(data_args) -> dict | None:
    """The backbone that wrote the features (the `backbone.json` of `python -m avsd_dataset.extract_features`), when
    the model reads one such stream alone: the model and processor then record it, so that the trained model answers
    from video files (`processor(videos=...)`, the pipeline, the chat) with the features it was trained on."""
    from .extract_features import BACKBONE_FILE
    from video_backbone_vgd import same_backbone

    root = data_args.feature_dir or os.path.join(data_args.data_dir, "features")
    streams = parse_feature_streams(data_args.feature_streams)
    specs = {}
    for stream in streams:
        for folder in (stream, stream + "_testset"):
            path = os.path.join(root, folder, BACKBONE_FILE)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    specs.setdefault(stream, []).append((path, json.load(f)))
    if not specs:
        return None
    if len(streams) > 1:
        logger.warning("features of %s come from a video backbone but are combined with other streams: the model "
                       "takes pre-extracted features only (train on the backbone's stream alone to answer from video files)", ", ".join(specs))
        return None
    (first_path, spec), *others = specs[streams[0]]
    for path, other in others:
        if not same_backbone(spec, other):
            raise ValueError(f"{first_path} and {path} record different video backbones: extract both splits with the same settings")
    return spec


def write_result_file(test_json_path: str, test_split, predictions: list[str], output_path: str):
    """The official DSTC7 result format: the test JSON with the last (undisclosed) answer of each predicted
    dialogue filled in; dialogues are matched by image_id and turn."""
    with open(test_json_path, encoding="utf-8") as f:
        result = json.load(f)
    predicted = {(image_id, turn): text for image_id, turn, text in zip(test_split["image_id"], test_split["turn"], predictions)}
    dialogs = []
    for dialog in result["dialogs"]:
        key = (dialog["image_id"], len(dialog["dialog"]) - 1)
        if key in predicted:
            dialog["dialog"][-1]["answer"] = predicted[key]
            dialogs.append(dialog)
    result["dialogs"] = dialogs
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    with open(output_path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    return output_path
