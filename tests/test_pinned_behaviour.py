"""Tests that pin behaviour a one-line change used to alter with the whole suite green (issue 22, item 8). Each
test states the values it expects itself (not from the settings under test) and names the mutation it kills."""

import io
import json
import os
import time

import numpy as np
import pytest
import torch

pytest.importorskip("av")  # the extraction tests encode a small video


# ---------------------------------------------------------------- 1. the length-grouped sampler's seed and the epoch


def test_length_grouped_sampler_order_changes_with_the_epoch_and_only_with_seed_and_epoch():
    """Kills: `generator.manual_seed(self.seed * 1_000_003)` (the epoch ignored: every epoch the same order)."""
    from vgd_training.exact_resume import EpochSeededLengthGroupedSampler

    lengths = [int(v) for v in np.random.default_rng(0).integers(5, 200, size=64)]
    sampler = EpochSeededLengthGroupedSampler(batch_size=4, lengths=lengths, seed=3)
    orders = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        torch.manual_seed(epoch + 100)  # the global RNG plays no part
        orders.append(list(sampler))
    assert all(sorted(order) == list(range(64)) for order in orders)
    assert len({tuple(order) for order in orders}) == 4  # a new order every epoch
    again = EpochSeededLengthGroupedSampler(batch_size=4, lengths=lengths, seed=3)
    again.set_epoch(2)
    assert list(again) == orders[2]  # a function of (seed, epoch): a resumed run sees the same order
    other_seed = EpochSeededLengthGroupedSampler(batch_size=4, lengths=lengths, seed=4)
    other_seed.set_epoch(2)
    assert list(other_seed) != orders[2]


# ---------------------------------------------------------------- 2. `last` is the highest step, not the newest file


def test_last_checkpoint_is_the_highest_step_whatever_the_modification_times(tmp_path, monkeypatch):
    """Kills: sorting the candidates by mtime instead of by step in `find_last_complete_checkpoint`."""
    from vgd_training import checkpointing

    monkeypatch.setattr(checkpointing, "checkpoint_problem", lambda path: None)  # every folder complete
    for step in (9, 10, 100, 20):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / checkpointing.CHECKPOINT_INFO_NAME).write_text(json.dumps({"run_id": "run-a", "global_step": step}))
    now = time.time()
    # newest files first in the order 9, 20, 10, 100 (e.g. copied back from a backup in another order)
    for age, step in enumerate((9, 20, 10, 100)):
        os.utime(tmp_path / f"checkpoint-{step}", (now - age * 60, now - age * 60))
    path, skipped = checkpointing.find_last_complete_checkpoint(str(tmp_path), "run-a")
    assert path == str(tmp_path / "checkpoint-100") and skipped == []
    (tmp_path / "checkpoint-100" / checkpointing.CHECKPOINT_INFO_NAME).write_text(json.dumps({"run_id": "other"}))
    path, _ = checkpointing.find_last_complete_checkpoint(str(tmp_path), "run-a")
    assert path == str(tmp_path / "checkpoint-20")  # 20 > 10 > 9 by step (not by name, not by time)


# ---------------------------------------------------------------- 3. the backbone's normalisation: mean and std


KINETICS_MEAN = [0.43216, 0.394666, 0.37645]  # torchvision's Kinetics-400 video presets, written out here
KINETICS_STD = [0.22803, 0.22145, 0.216989]


def test_backbone_normalisation_mean_and_std_are_the_published_values_in_the_right_places():
    """Kills: mean and std swapped in the backbone spec, in `video_processor_settings` or in the processor's
    defaults (the old test built its expectation from the same settings, so a swap stayed green)."""
    from video_backbone_vgd import resolve_video_backbone, video_processor_settings
    from video_processing_vgd import VGDVideoProcessor

    spec = resolve_video_backbone("r3d_18", pretrained=False, crop_size=32, resize_size=36, clip_length=4)
    assert spec["image_mean"] == pytest.approx(KINETICS_MEAN) and spec["image_std"] == pytest.approx(KINETICS_STD)
    for processor in (VGDVideoProcessor(**video_processor_settings(spec)),
                      VGDVideoProcessor(clip_length=4, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})):
        frames = np.zeros((4, 32, 32, 3), dtype=np.uint8)
        frames[:, :, :16] = 255  # left half white, right half black
        out = processor([frames], return_tensors="pt")["pixel_values_videos"][0, 0]  # [T, 3, H, W]
        white, black = out[0, :, 5, 5].tolist(), out[0, :, 5, 25].tolist()
        # written out by hand: (1 - 0.43216) / 0.22803 = 2.49019, (0 - 0.43216) / 0.22803 = -1.89519, ...
        assert white == pytest.approx([2.49019, 2.73354, 2.87359], abs=1e-4)
        assert black == pytest.approx([-1.89519, -1.78218, -1.73488], abs=1e-4)


# ---------------------------------------------------------------- 4. and 5. extraction: resume and atomic writes


def _video(folder, name="clip.mp4", num_frames=20):
    import av

    frames = np.full((num_frames, 48, 64, 3), 40, dtype=np.uint8)
    for t in range(num_frames):
        frames[t, :, (3 * t) % 56 : (3 * t) % 56 + 8] = (220, 120, 30)
    path = os.path.join(folder, name)
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.height, stream.width, stream.pix_fmt = 48, 64, "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


EXTRACT = ["--backbone", "r3d_18", "--random_init", "--crop_size", "32", "--resize_size", "36", "--clip_length", "8",
           "--batch_size", "4", "--num_workers", "0"]


def test_is_done_accepts_only_a_complete_array_of_this_backbone(tmp_path):
    """Kills: `is_done` without one of its checks (number of dims, clips >= 1, regions P, feature dim D)."""
    from avsd_dataset.extract_features import is_done

    cases = {
        (3, 4, 512): True,
        (1, 4, 512): True,
        (0, 4, 512): False,  # no clip
        (3, 5, 512): False,  # another number of regions
        (3, 4, 511): False,  # another feature dim
        (3, 512): False,  # pooled [F, D] features of another extractor
        (3, 4, 512, 1): False,
    }
    for shape, expected in cases.items():
        path = tmp_path / ("x".join(map(str, shape)) + ".npy")
        np.save(path, np.zeros(shape, np.float32))
        assert is_done(str(path), num_regions=4, feature_dim=512) is expected, shape
    (tmp_path / "cut.npy").write_bytes(b"\x93NUMPY")  # cut off in the header
    assert is_done(str(tmp_path / "cut.npy"), 4, 512) is False


def test_extraction_resume_redoes_a_feature_file_of_the_wrong_shape(tmp_path):
    """Kills: the resume check accepting a `.npy` of another shape (e.g. from another backbone setting)."""
    from avsd_dataset.extract_features import main

    videos = tmp_path / "videos"
    videos.mkdir()
    _video(str(videos))
    features = tmp_path / "features"
    main([str(videos), str(features), *EXTRACT])
    target = features / "r3d_18" / "clip.npy"
    good = np.load(target)
    assert good.shape == (3, 4, 512)  # 20 frames -> 3 clips of 8, 2 x 2 regions
    np.save(target, np.zeros((3, 4, 256), np.float32))  # wrong D, same name
    totals = main([str(videos), str(features), *EXTRACT])
    assert (totals["done"], totals["skipped"]) == (1, 0)
    np.testing.assert_array_equal(np.load(target), good)


def test_a_feature_file_is_never_left_half_written(tmp_path, monkeypatch):
    """Kills: the feature `.npy` written in place (`np.save(path, ...)`) instead of a temporary file renamed into
    place: a write that fails half-way (disk full, killed) must leave no file under the final name."""
    from avsd_dataset.extract_features import is_done, main

    videos = tmp_path / "videos"
    videos.mkdir()
    _video(str(videos))
    features = tmp_path / "features"
    real_save = np.save

    def save_half_then_fail(file, array, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(buffer, array, *args, **kwargs)
        data = buffer.getvalue()[: len(buffer.getvalue()) // 2]  # the header and half the data
        if hasattr(file, "write"):
            file.write(data)
        else:
            with open(file if str(file).endswith(".npy") else f"{file}.npy", "wb") as f:
                f.write(data)
        raise OSError(28, "No space left on device (simulated)")

    monkeypatch.setattr(np, "save", save_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        main([str(videos), str(features), *EXTRACT])
    monkeypatch.setattr(np, "save", real_save)
    out = features / "r3d_18"
    assert not (out / "clip.npy").exists()  # not a half-written file that a reader or a resume would take
    assert [name for name in os.listdir(out) if name.endswith(".tmp")] == []  # nor a temporary file left over
    main([str(videos), str(features), *EXTRACT])
    assert is_done(str(out / "clip.npy"), 4, 512) and np.load(out / "clip.npy").shape == (3, 4, 512)
