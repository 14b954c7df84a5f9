"""Bad inputs a user can produce, across features, processor, data, scorer, checkpoints and run_vgd.py: each
gives a clear error naming the file / video id / field and what was expected, or works correctly."""

import json
import logging
import os

import numpy as np
import pytest

import run_vgd
from avsd_dataset.features import BAD_VALUES, VideoFeatureStore, VideoFeatureValidationError, UnreadableVideoFeatureError
from test_avsd_dataset import TRAIN_DIALOGUES, VALID_DIALOGUES, TEST_DIALOGUES, avsd_dir, feature_root, write_features  # noqa: F401 (fixtures)


# ------------------------------------------------------------------------------------------- feature files

def bad_array(kind):
    """A [frames, 128] vggish-sized array of the given kind of bad."""
    if kind == "nan":
        array = np.zeros((3, 128), dtype=np.float32)
        array[:, 1] = np.nan
    elif kind == "inf":
        array = np.zeros((2, 128), dtype=np.float32)
        array[1, 0] = -np.inf
    elif kind == "str":
        array = np.full((3, 128), "a")
    elif kind == "bool":
        array = np.ones((3, 128), dtype=bool)
    else:
        array = np.ones((3, 128), dtype=np.complex64)
    return array


BAD_MESSAGES = {
    "nan": "3 non-finite values \\(NaN or inf\\), the first in frame 0",
    "inf": "1 non-finite values \\(NaN or inf\\), the first in frame 1",
    "str": "expected floating-point features, got dtype <U1",
    "bool": "expected floating-point features, got dtype bool",
    "complex": "expected floating-point features, got dtype complex64",
}


def corrupt(feature_root, image_id, kind, split_dir="vggish"):
    path = os.path.join(feature_root, split_dir, image_id + ".npy")
    np.save(path, bad_array(kind))
    return path


@pytest.mark.parametrize("kind", sorted(BAD_MESSAGES))
def test_feature_check_catches_non_finite_and_non_float_files_with_id_and_path(feature_root, kind):
    path = corrupt(feature_root, "TR002", kind)
    store = VideoFeatureStore(feature_root)
    ids = [image_id for image_id, _ in TRAIN_DIALOGUES]
    problems = store.check(ids)
    assert [(p.image_id, p.stream, p.path, p.kind) for p in problems] == [("TR002", "vggish", path, BAD_VALUES)]
    with pytest.raises(VideoFeatureValidationError, match=BAD_MESSAGES[kind]) as error:
        store.validate(ids)
    assert "TR002 [vggish]" in str(error.value) and path in str(error.value)
    if kind in ("str", "bool", "complex"):  # a dtype problem: reading the file says so too
        with pytest.raises(UnreadableVideoFeatureError, match=BAD_MESSAGES[kind]):
            store["TR002"]


def test_header_only_check_skips_the_values(feature_root):
    corrupt(feature_root, "TR002", "nan")
    assert VideoFeatureStore(feature_root).check(["TR002"], check_values=False) == []


@pytest.mark.parametrize("kind", ["nan", "complex"])
def test_skip_missing_features_drops_the_videos_with_bad_values(avsd_dir, feature_root, kind, tmp_path):
    bad_id = TEST_DIALOGUES[0][0]
    corrupt(feature_root, bad_id, kind, split_dir="vggish_testset")
    data_args = run_vgd.DataArguments(data_dir=avsd_dir, feature_dir=feature_root, cache_dir=str(tmp_path / "cache"))
    splits, _ = run_vgd.load_splits(data_args)
    with pytest.raises(VideoFeatureValidationError, match=f"{bad_id} \\[vggish\\] bad_values"):
        run_vgd.feature_stores(data_args, splits, ["test"])
    data_args.skip_missing_features = True
    stores = run_vgd.feature_stores(data_args, splits, ["test"])
    kept = set(splits["test"]["image_id"])
    assert bad_id not in kept and kept == {image_id for image_id, _ in TEST_DIALOGUES} - {bad_id}
    assert stores["test"].split == "test"
