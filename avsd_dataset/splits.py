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
    return splits, builder.config.resolve_file(builder.config.test_file)


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
