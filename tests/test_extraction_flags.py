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
