"""Video files -> features -> model: decoding, clips, backbones, `processor(videos=...)`, the extraction command
and the synthetic videos. Small random-initialised backbones only (nothing is downloaded)."""

import fractions
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")
pytest.importorskip("torchvision")

from video_backbone_vgd import VGDVideoBackbone, resolve_video_backbone  # noqa: E402
from video_processing_vgd import (  # noqa: E402
    KINETICS_MEAN,
    KINETICS_STD,
    VGDVideoProcessor,
    VideoDecodingError,
    clip_frame_indices,
    decode_video,
)


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _keep_global_rng():
    """These tests seed torch for reproducible random backbones; later test files see the RNG state unchanged."""
    with torch.random.fork_rng(devices=[]):
        yield


def write_video(path, frames, rate=10, codec="libx264", pix_fmt="yuv420p", pts_ms=None):
    """Encode `[T, H, W, 3]` uint8 frames (or `[T, H, W]` gray) with PyAV; `pts_ms` gives per-frame times."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        if pts_ms is not None:
            stream.time_base = stream.codec_context.time_base = fractions.Fraction(1, 1000)
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="gray" if image.ndim == 2 else "rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[index], fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def moving_bar_frames(num_frames, height=48, width=64):
    frames = np.full((num_frames, height, width, 3), 40, dtype=np.uint8)
    for t in range(num_frames):
        frames[t, :, (3 * t) % (width - 8) : (3 * t) % (width - 8) + 8] = (220, 120, 30)
    return frames


@pytest.fixture(scope="module")
def video_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    return {
        "long": write_video(folder / "long.mp4", moving_bar_frames(37)),
        "short": write_video(folder / "short.mp4", moving_bar_frames(5)),
        "odd": write_video(folder / "odd.avi", moving_bar_frames(12, 61, 97), codec="mpeg4"),
        "gray": write_video(folder / "gray.mkv", moving_bar_frames(9)[..., 0], codec="ffv1", pix_fmt="gray"),
        "vfr": write_video(folder / "vfr.mp4", moving_bar_frames(20), codec="mpeg4", pts_ms=list(np.cumsum([0] + [40, 120] * 9 + [40]))),
    }


@pytest.fixture(scope="module")
def tiny_videomae_dir(tmp_path_factory):
    from transformers import VideoMAEConfig

    path = str(tmp_path_factory.mktemp("tiny_videomae"))
    VideoMAEConfig(
        image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64,
    ).save_pretrained(path)
    return path


# ------------------------------------------------------------------------------------------------ decoding


def test_decode_video_resizes_and_reports(video_files):
    frames, metadata = decode_video(video_files["long"], shortest_edge=24)
    assert frames.shape == (37, 24, 32, 3) and frames.dtype == np.uint8
    assert metadata.total_num_frames == 37 and metadata.fps == 10.0 and metadata.video_backend == "pyav"
    full, _ = decode_video(video_files["long"])
    assert full.shape == (37, 48, 64, 3)
    # the bar moves 3 pixels per frame: decoding keeps the frame order
    bar_centres = [np.flatnonzero(frame[24, :, 0] > 130).mean() for frame in full[:5]]
    np.testing.assert_allclose(bar_centres, [3.5, 6.5, 9.5, 12.5, 15.5], atol=1.0)


def test_decode_video_odd_size_grayscale_and_variable_frame_rate(video_files):
    odd, _ = decode_video(video_files["odd"])
    assert odd.shape == (12, 61, 97, 3)
    gray, _ = decode_video(video_files["gray"])
    assert gray.shape == (9, 48, 64, 3)
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 0], gray[..., 2])
    vfr, metadata = decode_video(video_files["vfr"])
    assert metadata.video_backend == "pyav+vfr" and metadata.total_num_frames == 20
    # resampled to a constant rate: every kept frame index is non-decreasing and the span is covered
    indices = metadata.frames_indices
    assert indices[0] == 0 and indices[-1] >= 17 and all(b >= a for a, b in zip(indices, indices[1:]))
    assert len(vfr) == len(indices) == int(metadata.duration * metadata.fps + 1e-6) + 1


def test_decode_video_bad_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        decode_video(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoDecodingError, match=r"empty.mp4: the file is empty"):
        decode_video(tmp_path / "empty.mp4")
    (tmp_path / "text.mp4").write_text("not a video\n" * 100)
    with pytest.raises(VideoDecodingError, match=r"text.mp4: not a video container"):
        decode_video(tmp_path / "text.mp4")
    with av.open(str(tmp_path / "audio.wav"), "w") as container:  # a real container without a video stream
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
    with pytest.raises(VideoDecodingError, match=r"audio.wav: the file has no video stream \(streams: audio\)"):
        decode_video(tmp_path / "audio.wav")


def test_clip_frame_indices():
    assert clip_frame_indices(5, 4).tolist() == [[0, 1, 2, 3], [4, 4, 4, 4]]
    assert clip_frame_indices(3, 4).tolist() == [[0, 1, 2, 2]]  # shorter than one clip: padded
    assert clip_frame_indices(8, 4).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # 10 clips capped to 4: first and last kept, uniformly in between
    assert clip_frame_indices(20, 2, max_clips=4)[:, 0].tolist() == [0, 6, 12, 18]
    with pytest.raises(ValueError, match="at least one frame"):
        clip_frame_indices(0, 4)


# ------------------------------------------------------------------------------------------------ video processor


def test_video_processor_clips_and_normalises_exactly(video_files, tmp_path):
    processor = VGDVideoProcessor(clip_length=4, size={"shortest_edge": 8}, crop_size={"height": 8, "width": 8})
    frames = np.random.default_rng(0).integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8)
    out = processor([video_files["long"], frames, video_files["short"]], return_tensors="pt")
    assert tuple(out["pixel_values_videos"].shape) == (3, 10, 4, 3, 8, 8)  # 37 frames -> 10 clips of 4
    assert out["video_clip_mask"].sum(dim=1).tolist() == [10, 2, 2]
    assert out["video_num_frames"].tolist() == [37, 6, 5]
    # an array already at the crop size is only rescaled and normalised: exact values
    mean, std = np.array(KINETICS_MEAN), np.array(KINETICS_STD)
    expected = (frames[[0, 1, 2, 3, 4, 5, 5, 5]] / 255.0 - mean) / std  # the last clip repeats the last frame
    got = out["pixel_values_videos"][1, :2].reshape(8, 3, 8, 8).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert out["pixel_values_videos"][1, 2:].abs().sum() == 0  # padding clips are zeros

    processor.save_pretrained(tmp_path)
    reloaded = VGDVideoProcessor.from_pretrained(tmp_path)
    again = reloaded([frames], return_tensors="pt")
    assert torch.equal(again["pixel_values_videos"][0], out["pixel_values_videos"][1, :2])


def test_video_processor_rejects_bad_arrays():
    processor = VGDVideoProcessor()
    with pytest.raises(ValueError, match=r"video 0: a frames array must have shape \[frames, height, width, 3\]"):
        processor([np.zeros((4, 8, 8, 4), np.uint8)])
    with pytest.raises(ValueError, match="video 0: frames must be uint8"):
        processor([np.zeros((4, 8, 8, 3), np.float32)])
    gray = processor([np.full((4, 120, 130), 128, np.uint8)], return_tensors="pt")  # grayscale is accepted
    assert tuple(gray["pixel_values_videos"].shape[-3:]) == (3, 112, 112)


# ------------------------------------------------------------------------------------------------ backbones


@pytest.mark.parametrize(
    "name, regions, dim",
    [("r3d_18", 49, 512), ("r2plus1d_18", 49, 512), ("mc3_18", 49, 512), ("s3d", 49, 1024), ("mvit_v2_s", 49, 768), ("swin3d_t", 49, 768)],
)
def test_torchvision_backbone_specs(name, regions, dim):
    spec = resolve_video_backbone(name, pretrained=False)  # shapes on the meta device: no weights, no compute
    assert (spec["num_regions"], spec["feature_dim"], spec["clip_length"], spec["weights"]) == (regions, dim, 16, None)
    assert resolve_video_backbone(name)["weights"] in ("KINETICS400_V1", "KINETICS400_V2")


def test_r3d_grid_equals_torchvision_feature_map():
    spec = resolve_video_backbone("r3d_18", pretrained=False, crop_size=32, clip_length=8, layer="layer4")
    torch.manual_seed(0)
    backbone = VGDVideoBackbone(spec)
    from torchvision.models.video import r3d_18

    reference = r3d_18(weights=None).eval()
    missing, unexpected = reference.load_state_dict(backbone.model.state_dict(), strict=False)
    assert missing == ["fc.weight", "fc.bias"] and not unexpected
    captured = {}
    reference.layer4.register_forward_hook(lambda module, inputs, output: captured.setdefault("map", output))
    clips = torch.randn(3, 8, 3, 32, 32)
    with torch.no_grad():
        reference(clips.transpose(1, 2))
        grid = backbone(clips)
    expected = captured["map"].mean(dim=2).flatten(2).transpose(1, 2)  # [N, 512, T', 2, 2] -> [N, 4, 512]
    assert grid.shape == (3, 4, 512)
    torch.testing.assert_close(grid, expected)
    with pytest.raises(ValueError, match="layer must be one of"):
        resolve_video_backbone("r3d_18", layer="layer9")


def test_videomae_grid_equals_last_hidden_state(tiny_videomae_dir):
    spec = resolve_video_backbone(tiny_videomae_dir, pretrained=False)
    assert (spec["library"], spec["num_regions"], spec["feature_dim"], spec["clip_length"]) == ("transformers", 4, 32, 4)
    backbone = VGDVideoBackbone(spec)
    clips = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        tokens = backbone.model(pixel_values=clips).last_hidden_state  # [2, 2 time steps x 4 cells, 32]
        grid = backbone(clips)
    torch.testing.assert_close(grid, tokens.reshape(2, 2, 4, 32).mean(dim=1))
    with pytest.raises(ValueError, match="num_frames=4"):
        resolve_video_backbone(tiny_videomae_dir, clip_length=16)


# ------------------------------------------------------------------------------------------------ the model


@pytest.fixture(scope="module")
def video_model(tiny_gpt2_dir, tiny_videomae_dir):
    from modeling_vgd_gpt2 import VGDGPT2ForDialogue
    from processing_vgd import VGDProcessor

    spec = resolve_video_backbone(tiny_videomae_dir, pretrained=False)
    processor = VGDProcessor.from_gpt2_pretrained(tiny_gpt2_dir, video_backbone=spec, max_video_frames=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = VGDGPT2ForDialogue.from_gpt2_pretrained(tiny_gpt2_dir, processor=processor).eval()
    return processor, model


def _batch(processor, video_files, frames):
    return processor(
        videos=[video_files["long"], frames],
        caption=["a man is in a room .", "a woman sits ."],
        history=[[], [("is he alone ?", "yes he is .")]],
        question=["what does he do next ?", "what color is the cup ?"],
        return_tensors="pt",
    )


def test_processor_videos_and_generate_match_the_feature_path(video_model, video_files):
    processor, model = video_model
    assert model.config.video_backbone["name"] == processor.video_processor.video_backbone["name"]
    assert not any(p.requires_grad for p in model.video_backbone.parameters())
    frames = moving_bar_frames(6, 40, 50)
    inputs = _batch(processor, video_files, frames)
    # 37 frames -> 10 clips, 6 frames -> 2 clips; 4 cells per clip
    num_placeholders = (inputs["input_ids"] == processor.video_token_id).sum(dim=1).tolist()
    assert num_placeholders == [40, 8]
    assert set(inputs) == {"input_ids", "attention_mask", "modality_ids", "turn_ids", "pixel_values_videos", "video_clip_mask"}

    out = model.generate(**inputs, max_new_tokens=6, num_beams=2, do_sample=False)
    # the fast path: features computed first, passed as video_features
    features, video_mask = model.extract_video_features(inputs["pixel_values_videos"], inputs["video_clip_mask"])
    assert tuple(features.shape) == (2, 10, 4, 32) and video_mask.sum(dim=(1, 2)).tolist() == [40, 8]
    text_inputs = {k: v for k, v in inputs.items() if k not in ("pixel_values_videos", "video_clip_mask")}
    out_features = model.generate(**text_inputs, video_features=features, video_mask=video_mask, max_new_tokens=6, num_beams=2, do_sample=False)
    assert torch.equal(out, out_features)
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, model(**text_inputs, video_features=features, video_mask=video_mask).logits)
    # one example without the outer lists
    single = processor(videos=frames, caption="a woman sits .", history=[("is he alone ?", "yes he is .")], question="what color is the cup ?", return_tensors="pt")
    assert torch.equal(single["input_ids"][0], inputs["input_ids"][1][inputs["attention_mask"][1].bool()])


def test_processor_videos_errors(video_model, tiny_gpt2_dir, video_files):
    processor, _ = video_model
    with pytest.raises(ValueError, match="either videos"):
        processor(videos=video_files["long"], video_features=np.zeros((2, 32), np.float32), question="what ?", return_tensors="pt")
    with pytest.raises(ValueError, match="return_tensors"):
        processor(videos=video_files["long"], question="what ?")
    with pytest.raises(FileNotFoundError, match="nowhere.mp4"):
        processor(videos="nowhere.mp4", question="what ?", return_tensors="pt")
    from processing_vgd import VGDProcessor

    plain = VGDProcessor.from_gpt2_pretrained(tiny_gpt2_dir, video_feature_dim=32)
    with pytest.raises(ValueError, match="this processor records none"):
        plain(videos=video_files["long"], question="what ?", return_tensors="pt")


@pytest.mark.parametrize("pooling, expected", [("spatial", [4, 4]), ("temporal", [10, 2]), ("spatial_and_temporal", [4 + 10, 4 + 2])])
def test_pooling_with_videos(tiny_gpt2_dir, tiny_videomae_dir, video_files, pooling, expected):
    from modeling_vgd_gpt2 import VGDGPT2ForDialogue
    from processing_vgd import VGDProcessor

    spec = resolve_video_backbone(tiny_videomae_dir, pretrained=False)
    processor = VGDProcessor.from_gpt2_pretrained(tiny_gpt2_dir, video_backbone=spec, max_video_frames=16, video_pooling=pooling)
    model = VGDGPT2ForDialogue.from_gpt2_pretrained(tiny_gpt2_dir, processor=processor).eval()
    inputs = _batch(processor, video_files, moving_bar_frames(6, 40, 50))
    assert (inputs["input_ids"] == processor.video_token_id).sum(dim=1).tolist() == expected
    with torch.no_grad():
        assert model(**inputs).logits.shape[:2] == inputs["input_ids"].shape


def test_save_load_and_remote_code_round_trip(video_model, video_files, tmp_path):
    processor, model = video_model
    frames = moving_bar_frames(6, 40, 50)
    inputs = _batch(processor, video_files, frames)
    expected = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    assert {"video_processing_vgd.py", "video_backbone_vgd.py"} <= set(os.listdir(folder))
    np.save(tmp_path / "frames.npy", frames)
    np.save(tmp_path / "expected.npy", expected.numpy())
    script = f"""
import sys
sys.path = [p for p in sys.path if p not in ("", {REPO_ROOT!r}) and "wt-" not in p]
import numpy as np, torch
from transformers import AutoModelForCausalLM, AutoProcessor
processor = AutoProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
assert "transformers_modules" in type(model).__module__, type(model).__module__
assert not any(p.requires_grad for p in model.video_backbone.parameters())
inputs = processor(videos=[{video_files["long"]!r}, np.load({str(tmp_path / "frames.npy")!r})],
    caption=["a man is in a room .", "a woman sits ."], history=[[], [("is he alone ?", "yes he is .")]],
    question=["what does he do next ?", "what color is the cup ?"], return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
assert np.array_equal(out.numpy(), np.load({str(tmp_path / "expected.npy")!r})), out
print("remote code OK")
"""
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote code OK" in result.stdout


def test_processor_saved_without_video_processor_still_loads(video_model, tmp_path):
    """A processor folder from before video files were supported (no "video_processor" entry) keeps loading."""
    from processing_vgd import VGDProcessor

    processor, _ = video_model
    processor.save_pretrained(tmp_path)
    config_path = tmp_path / "processor_config.json"
    config = json.loads(config_path.read_text())
    del config["video_processor"]
    config_path.write_text(json.dumps(config))
    loaded = VGDProcessor.from_pretrained(tmp_path)
    assert loaded.video_processor.video_backbone is None
    features = np.zeros((3, 4, 32), np.float32)
    assert loaded(video_features=features, question="what ?", return_tensors="pt")["video_features"].shape == (1, 3, 4, 32)


# ------------------------------------------------------------------------------------------------ extraction


EXTRACT_ARGS = ["--backbone", "r3d_18", "--random_init", "--crop_size", "32", "--resize_size", "36", "--clip_length", "16", "--batch_size", "5"]


@pytest.fixture(scope="module")
def synthetic_videos(tmp_path_factory):
    from avsd_dataset.synthetic import generate_synthetic_avsd
    from avsd_dataset.synthetic_video import render_synthetic_videos

    data_dir = str(tmp_path_factory.mktemp("synthetic"))
    generate_synthetic_avsd(data_dir, num_train_dialogs=6, num_valid_dialogs=2, num_test_dialogs=3)
    info = render_synthetic_videos(data_dir, height=48, width=64)
    assert info["rendered"] == 11
    return data_dir, info


def test_synthetic_videos_show_the_facts(synthetic_videos):
    from avsd_dataset.synthetic import load_ground_truth
    from avsd_dataset.synthetic_video import OBJECT_COLORS, render_video_frames

    data_dir, info = synthetic_videos
    ground_truth = load_ground_truth(data_dir)
    for index, (image_id, facts) in enumerate(sorted(ground_truth["videos"].items())[:4]):
        folder = info["test_video_dir"] if facts["split"] == "test" else info["video_dir"]
        frames, metadata = decode_video(os.path.join(folder, image_id + ".mp4"))
        assert frames.shape == (64, 48, 64, 3) and metadata.fps == 8.0  # 4 actions x 16 frames
        rendered = render_video_frames(facts, num_regions=4, height=48, width=64, seed=index)
        assert np.abs(frames.astype(int) - rendered).mean() < 6  # what the file holds is what was drawn
        # the objects' colour sits just above the table, in the object regions only
        row = rendered[0, int(48 * 0.7) - 2].astype(int)
        near = np.abs(row - np.array(OBJECT_COLORS[facts["color"]])).sum(axis=1) < 60
        assert sorted({int(x // 16) for x in np.flatnonzero(near)}) == facts["object_regions"]
        # the person moves differently in the segments of two different actions
        motion = np.abs(np.diff(rendered.astype(int), axis=0)).reshape(4, 16, -1)[:, :-1].mean(axis=(1, 2))
        assert motion.max() > 0 and len(set(np.round(motion, 3))) > 1


def test_the_eight_objects_differ_in_the_video_demos_32_pixel_frames():
    from avsd_dataset.synthetic import FACT_VALUES
    from avsd_dataset.synthetic_video import render_video_frames

    facts = {"place": FACT_VALUES["place"][0], "color": "red", "object_regions": [1], "actions": ["walks"]}
    masks = set()
    for kind in FACT_VALUES["object"]:
        frame = render_video_frames({**facts, "object": kind}, num_regions=4, frames_per_action=1, height=32, width=32)[0]
        red = (frame[..., 0] > 180) & (frame[..., 1] < 80) & (frame[..., 2] < 80)  # the object's pixels (noise is +-6)
        assert red[:, :8].sum() == 0 and red[:, 16:].sum() == 0 and red.sum() >= 12, kind  # in region 1, visible
        masks.add(red.tobytes())
    assert len(masks) == 8  # every shape is drawn differently (at 4 pixels the disc, diamond and cross coincided)
    # the book far from every other shape: at least 16 of the 36 pixels of the demo's 6 x 6 objects (renderer 4's book,
    # a disc, was 4 pixels from the cup's square and from the bottle's ring)
    from avsd_dataset.synthetic_video import MIN_OBJECT_SIZE, _shape_mask

    shapes = [_shape_mask(kind, MIN_OBJECT_SIZE) for kind in range(8)]
    book = FACT_VALUES["object"].index("book")
    assert min(int((shapes[book] ^ other).sum()) for kind, other in enumerate(shapes) if kind != book) >= 16
    with pytest.raises(ValueError, match="20 pixels wide cannot show 4 object regions"):
        render_video_frames({**facts, "object": "cup"}, num_regions=4, frames_per_action=1, height=20, width=20)


def test_swscale_threads_only_where_pyav_takes_them(monkeypatch):
    """PyAV 17 added `threads=` to reformat / to_ndarray (and scales on automatic threads without it); before 17 the
    keyword is a TypeError, and setup.py allows av>=12."""
    import av

    from video_processing_vgd import swscale_threads

    monkeypatch.setattr(av, "__version__", "17.0.0")
    assert swscale_threads(1) == {"threads": 1}
    monkeypatch.setattr(av, "__version__", "16.0.1")
    assert swscale_threads(1) == {}


def test_synthetic_videos_are_the_same_files_in_another_process(tmp_path):
    """Two fresh processes render 300 of the video demo's videos (32 x 32) to the same bytes. The way of renderer 2
    made 21 to 244 of the demo's 1,792 files differ between two processes, but 0 of these 300 in three tries: the
    fault shows when it will, so this test catches its return only sometimes, and
    `benchmarks/check_render_determinism.py` on the 1,792 measures it."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    import check_render_determinism

    from avsd_dataset.synthetic import generate_synthetic_avsd

    data_dir = str(tmp_path / "data")
    generate_synthetic_avsd(data_dir, num_train_dialogs=300, num_valid_dialogs=0, num_test_dialogs=0, seed=0)
    results = check_render_determinism.main([data_dir, "--ways", "write_video", "--max_videos", "300"])
    assert results["write_video"]["videos"] == 300
    assert results["write_video"]["differing"] == 0


def test_extract_features_writes_where_the_store_reads(synthetic_videos, tmp_path, capsys):
    from avsd_dataset import VideoFeatureStore
    from avsd_dataset.extract_features import FAILURES_FILE, main

    data_dir, info = synthetic_videos
    video_dir = tmp_path / "videos"
    video_dir.mkdir()
    for name in sorted(os.listdir(info["video_dir"]))[:3]:
        os.link(os.path.join(info["video_dir"], name), video_dir / name)
    write_video(video_dir / "tiny.mp4", moving_bar_frames(5))  # shorter than one clip: padded
    # corrupt: logged and skipped. Seeded bytes: about one draw of os.urandom in a few hundred probes as a
    # subtitle stream ("no video stream"), which failed CI once.
    (video_dir / "broken.mp4").write_bytes(random.Random(0).randbytes(3000))
    (video_dir / "README.txt").write_text("not a video")  # ignored and counted
    feature_dir = tmp_path / "features"

    totals = main([str(video_dir), str(feature_dir), *EXTRACT_ARGS, "--num_workers", "1"])
    summary = capsys.readouterr().out
    assert "4 done, 0 skipped (already extracted), 1 failed" in summary and "1 shorter than one clip (padded)" in summary
    assert "1 non-video file(s) ignored" in summary
    assert (totals["done"], totals["failed"], totals["padded"], totals["not_videos"]) == (4, 1, 1, 1)
    failures = [json.loads(line) for line in (feature_dir / "r3d_18" / FAILURES_FILE).read_text().splitlines()]
    assert [f["video_id"] for f in failures] == ["broken"] and "not a video container" in failures[0]["reason"]

    store = VideoFeatureStore(str(feature_dir), streams=["r3d_18"])
    ids = store.image_ids()
    assert len(ids) == 4 and "tiny" in ids
    assert store["tiny"]["r3d_18"].shape == (1, 4, 512)
    first = sorted(os.listdir(info["video_dir"]))[0][:-4]
    assert store[first]["r3d_18"].shape == (4, 4, 512)  # 64 frames -> 4 clips of 16, 2 x 2 cells

    # the features are the backbone applied to the processor's clips (same seed -> same random weights)
    spec = resolve_video_backbone("r3d_18", pretrained=False, crop_size=32, resize_size=36, clip_length=16)
    torch.manual_seed(0)
    backbone = VGDVideoBackbone(spec)
    from video_backbone_vgd import video_processor_settings

    clips = VGDVideoProcessor(**video_processor_settings(spec))(str(video_dir / (first + ".mp4")), return_tensors="pt")
    with torch.no_grad():
        expected = backbone(clips["pixel_values_videos"][0]).numpy()
    np.testing.assert_allclose(store[first]["r3d_18"], expected, rtol=1e-4, atol=1e-4)

    # a rerun skips what is done and retries the failure; another backbone setting is refused
    mtime = os.path.getmtime(feature_dir / "r3d_18" / (first + ".npy"))
    totals = main([str(video_dir), str(feature_dir), *EXTRACT_ARGS, "--num_workers", "0"])
    assert (totals["done"], totals["skipped"], totals["failed"]) == (0, 4, 1)
    assert os.path.getmtime(feature_dir / "r3d_18" / (first + ".npy")) == mtime
    with pytest.raises(ValueError, match=r"another backbone \(clip_length: 16 there, 8 now\)"):
        main([str(video_dir), str(feature_dir), *EXTRACT_ARGS, "--clip_length", "8"])
    # a stream folder that this command did not write is refused
    (feature_dir / "i3d_rgb").mkdir()
    np.save(feature_dir / "i3d_rgb" / "x.npy", np.zeros((2, 2048), np.float32))
    with pytest.raises(ValueError, match="not write"):
        main([str(video_dir), str(feature_dir), *EXTRACT_ARGS, "--stream", "i3d_rgb"])


def test_extract_features_test_split_and_command_line(synthetic_videos, tmp_path):
    data_dir, info = synthetic_videos
    feature_dir = tmp_path / "features"
    command = [sys.executable, "-m", "avsd_dataset.extract_features", info["test_video_dir"], str(feature_dir), *EXTRACT_ARGS, "--split", "test", "--num_workers", "0", "--stream", "video"]
    env = {**os.environ, "PYTHONPATH": REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "3 done, 0 skipped (already extracted), 0 failed" in result.stdout
    assert len(os.listdir(feature_dir / "video_testset")) == 3 + 1  # + backbone.json
    from avsd_dataset.extract_features import main

    with pytest.raises(FileNotFoundError, match="VIDEO_DIR .*nowhere.* is not a folder"):
        main([str(tmp_path / "nowhere"), str(feature_dir), *EXTRACT_ARGS])


def test_pretrained_backbone_weights_are_loaded(tiny_gpt2_dir, monkeypatch):
    """The pretrained path (torchvision's weights enum) without the network: the download is replaced by a
    known state dict, which must end up in the model's backbone."""
    from torchvision.models import get_model_weights
    from torchvision.models.video import r3d_18

    from modeling_vgd_gpt2 import VGDGPT2ForDialogue
    from processing_vgd import VGDProcessor

    torch.manual_seed(123)
    published = r3d_18(weights=None).state_dict()
    weights_class = type(get_model_weights("r3d_18").KINETICS400_V1)
    requested = []
    monkeypatch.setattr(weights_class, "get_state_dict", lambda self, *a, **k: requested.append(self.name) or published)
    spec = resolve_video_backbone("r3d_18", crop_size=32, clip_length=8)  # pretrained=True: names the weights
    assert spec["weights"] == "KINETICS400_V1"
    processor = VGDProcessor.from_gpt2_pretrained(tiny_gpt2_dir, video_backbone=spec)
    model = VGDGPT2ForDialogue.from_gpt2_pretrained(tiny_gpt2_dir, processor=processor)
    assert requested == ["KINETICS400_V1"]
    loaded = model.video_backbone.model.state_dict()
    assert torch.equal(loaded["layer4.1.conv2.0.weight"], published["layer4.1.conv2.0.weight"])
    assert torch.equal(loaded["stem.1.running_mean"], published["stem.1.running_mean"])


def test_a_wrong_shape_video_clip_mask_is_named(video_model, video_files):
    """Issue 22, item 5: a video_clip_mask that does not match the clips was an IndexError deep in the backbone pass."""
    processor, model = video_model
    inputs = _batch(processor, video_files, moving_bar_frames(6, 40, 50))
    with pytest.raises(ValueError, match=r"video_clip_mask must have shape \[batch, clips\] = \[2, 10\]"):
        model.extract_video_features(inputs["pixel_values_videos"], inputs["video_clip_mask"][:, :3])


def test_feature_standardisation_is_recorded_and_applied_by_the_backbone(synthetic_videos, tmp_path):
    """Statistics fitted on raw features: an extraction with `--feature_stats` (the backbone standardises) writes the
    standardised copy of the raw stream (`standardize_stream`); backbone.json records them; a folder of raw features
    refuses a standardised extraction."""
    from avsd_dataset.extract_features import fit_feature_statistics, main, standardize_stream
    from video_backbone_vgd import VGDVideoBackbone, with_feature_standardization

    data_dir, info = synthetic_videos
    video_dir = tmp_path / "videos"
    video_dir.mkdir()
    for name in sorted(os.listdir(info["video_dir"]))[:2]:
        os.link(os.path.join(info["video_dir"], name), video_dir / name)
    raw = tmp_path / "raw"
    main([str(video_dir), str(raw), *EXTRACT_ARGS, "--num_workers", "0"])
    stats = fit_feature_statistics(str(raw / "r3d_18"))
    spec = json.loads((raw / "r3d_18" / "backbone.json").read_text())
    standardised = with_feature_standardization(spec, stats["feature_mean"], stats["feature_std"])
    assert standardize_stream(str(raw / "r3d_18"), str(tmp_path / "copy" / "r3d_18"), standardised)["done"] == 2
    (tmp_path / "stats.json").write_text(json.dumps(standardised))
    main([str(video_dir), str(tmp_path / "direct"), *EXTRACT_ARGS, "--num_workers", "0", "--feature_stats", str(tmp_path / "stats.json")])
    recorded = json.loads((tmp_path / "direct" / "r3d_18" / "backbone.json").read_text())
    assert recorded["feature_mean"] == standardised["feature_mean"] and recorded["feature_std"] == standardised["feature_std"]
    rows = []
    for name in sorted(os.listdir(raw / "r3d_18")):
        if name.endswith(".npy"):
            direct, copy = np.load(tmp_path / "direct" / "r3d_18" / name), np.load(tmp_path / "copy" / "r3d_18" / name)
            np.testing.assert_allclose(direct, copy, rtol=1e-4, atol=1e-4)
            rows.append(copy.reshape(-1, copy.shape[-1]))
    rows = np.concatenate(rows)
    np.testing.assert_allclose(rows.mean(0), 0, atol=1e-3)
    assert VGDVideoBackbone(recorded).spec["feature_std"] == standardised["feature_std"]
    with pytest.raises(ValueError, match="feature standardisation"):
        main([str(video_dir), str(raw), *EXTRACT_ARGS, "--num_workers", "0", "--feature_stats", str(tmp_path / "stats.json")])


def test_rgb_difference_appends_the_features_of_frame_differences():
    """`rgb_difference=True`: the same network on each clip's frames, then on their consecutive differences (T - 1
    frames), concatenated (D doubles); recorded in the spec, told apart by `same_backbone`; refused where it cannot work."""
    from video_backbone_vgd import same_backbone

    plain = resolve_video_backbone("r3d_18", pretrained=False, crop_size=32, clip_length=4, layer="layer3")
    spec = resolve_video_backbone("r3d_18", pretrained=False, crop_size=32, clip_length=4, layer="layer3", rgb_difference=True)
    assert spec["rgb_difference"] is True and "rgb_difference" not in plain
    assert (spec["num_regions"], spec["feature_dim"]) == (plain["num_regions"], 2 * plain["feature_dim"]) == (16, 512)
    assert not same_backbone(plain, spec) and same_backbone(spec, dict(spec))
    torch.manual_seed(0)
    backbone = VGDVideoBackbone(spec)
    frames_only = VGDVideoBackbone(plain)
    frames_only.model.load_state_dict(backbone.model.state_dict())
    clips = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        grid = backbone(clips)
        expected = torch.cat([frames_only(clips), frames_only(clips[:, 1:] - clips[:, :-1])], dim=-1)
    assert grid.shape == (2, 16, 512)
    torch.testing.assert_close(grid, expected)
    static = clips[:, :1].expand(-1, 4, -1, -1, -1)  # a still clip: its differences are zero, so is their motion part
    with torch.no_grad():
        torch.testing.assert_close(backbone(static)[..., 256:], frames_only(torch.zeros(2, 3, 3, 32, 32)))
    with pytest.raises(ValueError, match="at least 2 frames"):
        resolve_video_backbone("r3d_18", pretrained=False, clip_length=1, rgb_difference=True)


def test_extract_features_rgb_difference_matches_the_models_backbone(synthetic_videos, tmp_path):
    """`--rgb_difference` writes [F, P, 2D] features, records the option in backbone.json, and a backbone rebuilt from
    that record computes the same features from the processor's clips of the .mp4 (what a trained model does)."""
    from avsd_dataset.extract_features import main
    from video_backbone_vgd import video_processor_settings
    from video_processing_vgd import VGDVideoProcessor

    data_dir, info = synthetic_videos
    video_dir = tmp_path / "videos"
    video_dir.mkdir()
    name = sorted(os.listdir(info["video_dir"]))[0]
    os.link(os.path.join(info["video_dir"], name), video_dir / name)
    main([str(video_dir), str(tmp_path / "features"), *EXTRACT_ARGS, "--num_workers", "0", "--rgb_difference"])
    recorded = json.loads((tmp_path / "features" / "r3d_18" / "backbone.json").read_text())
    features = np.load(tmp_path / "features" / "r3d_18" / (os.path.splitext(name)[0] + ".npy"))
    assert recorded["rgb_difference"] is True and features.shape[-1] == recorded["feature_dim"] == 1024
    processor = VGDVideoProcessor(**video_processor_settings(recorded))
    clips = processor(videos=[str(video_dir / name)], return_tensors="pt")
    backbone = VGDVideoBackbone(recorded)
    with torch.no_grad():
        grid = backbone(clips["pixel_values_videos"][0][clips["video_clip_mask"][0]])
    np.testing.assert_allclose(grid.numpy(), features, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"another backbone \(rgb_difference: True there, None now\)"):
        main([str(video_dir), str(tmp_path / "features"), *EXTRACT_ARGS, "--num_workers", "0"])
