"""Extraction settings that cannot work are refused where they are given, naming the flag (issue 22, item 5): no
silent defaults for 0, no crop that is mostly black padding, no Hub lookup for a misspelt torchvision backbone."""

import pytest

from avsd_dataset.extract_features import parse_args
from video_backbone_vgd import resolve_video_backbone


@pytest.mark.parametrize("flag", ["--clip_length", "--crop_size", "--resize_size", "--max_clips", "--batch_size"])
def test_zero_is_refused_naming_the_flag(flag, capsys):
    with pytest.raises(SystemExit):
        parse_args(["videos", "features", "--backbone", "r3d_18", flag, "0"])
    assert f"{flag} must be at least 1, got 0" in capsys.readouterr().err


def test_a_crop_larger_than_the_resized_frame_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args(["videos", "features", "--backbone", "r3d_18", "--crop_size", "112", "--resize_size", "36"])
    assert "--crop_size 112 is larger than --resize_size 36" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"crop_size 112 is larger than resize_size 36"):
        resolve_video_backbone("r3d_18", pretrained=False, resize_size=36)  # the backbone's default crop of 112


@pytest.mark.parametrize("value", [0, -3])
def test_the_backbone_spec_refuses_non_positive_sizes(value):
    with pytest.raises(ValueError, match=rf"clip_length must be a positive number of frames, got {value}"):
        resolve_video_backbone("r3d_18", pretrained=False, clip_length=value)


def test_a_misspelt_backbone_is_named_without_a_hub_lookup(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a lookup would fail differently (and slowly)
    with pytest.raises(ValueError, match=r"unknown video backbone 'r3d_19' \(did you mean 'r3d_18'\?\)"):
        resolve_video_backbone("r3d_19", pretrained=False)


def _write_noise_mp4(path, num_frames=64, size=32):
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:  # frame count in the header
        stream = container.add_stream("mpeg4", rate=24)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(num_frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_a_truncated_video_is_extracted_with_a_warning_naming_it(tmp_path, caplog):
    from avsd_dataset.extract_features import main

    videos = tmp_path / "videos"
    videos.mkdir()
    _write_noise_mp4(videos / "whole.mp4")
    _write_noise_mp4(tmp_path / "full.mp4")
    data = (tmp_path / "full.mp4").read_bytes()
    (videos / "cut.mp4").write_bytes(data[: len(data) // 2])  # the header still says 64 frames; ~23 decode
    with caplog.at_level("WARNING"):
        totals = main([str(videos), str(tmp_path / "features"), "--backbone", "r3d_18", "--random_init", "--clip_length", "8",
                       "--crop_size", "16", "--resize_size", "16", "--layer", "layer2", "--num_workers", "0"])
    assert totals["done"] == 2 and totals["truncated"] == 1
    warnings = [record.getMessage() for record in caplog.records if "container declares" in record.getMessage()]
    assert len(warnings) == 1 and "cut.mp4" in warnings[0] and "declares 64 frames" in warnings[0]


def test_resampling_to_fewer_frames_per_second_is_not_taken_for_truncation(tmp_path, caplog):
    """`--fps 8` on whole 24-fps videos keeps a third of the frames: no "container declares" warning (the check
    compares the container's count with the frames decoded at its own rate, not with the resampled ones)."""
    from avsd_dataset.extract_features import main

    videos = tmp_path / "videos"
    videos.mkdir()
    _write_noise_mp4(videos / "a.mp4")
    _write_noise_mp4(videos / "b.mp4", num_frames=48)
    with caplog.at_level("WARNING"):
        totals = main([str(videos), str(tmp_path / "features"), "--backbone", "r3d_18", "--random_init", "--clip_length", "8",
                       "--crop_size", "16", "--resize_size", "16", "--layer", "layer2", "--num_workers", "0", "--fps", "8"])
    assert totals["done"] == 2 and totals["truncated"] == 0
    assert not [record for record in caplog.records if "container declares" in record.getMessage()]


def test_a_full_disk_names_the_file_and_folder(tmp_path, monkeypatch):
    import errno

    import numpy as np

    from avsd_dataset import extract_features

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(extract_features.np, "save", full)
    with pytest.raises(OSError, match=r"could not write the features of VID01\.npy into .*: No space left on device"):
        extract_features.save_features_atomic(str(tmp_path / "VID01.npy"), np.zeros((2, 1, 4), np.float32))
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind
