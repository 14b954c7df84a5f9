"""Video processor of VGD-GPT2: video files or frame arrays -> clips of pixels for the model's video backbone.

[`VGDVideoProcessor`] (a transformers [`BaseVideoProcessor`]) decodes a video with PyAV (FFmpeg, bundled in the
`av` wheels), resizes its shorter side while decoding, cuts the frames into non-overlapping clips of `clip_length`
frames (the paper's one feature map per 16 frames), center-crops and normalises them. The video backbone inside
[`VGDGPT2ForDialogue`] turns each clip into one `[P, D]` grid of features.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers.processing_utils import VideosKwargs
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata


# torchvision's Kinetics-400 video models (r3d_18, mc3_18, r2plus1d_18) normalise with these statistics.
KINETICS_MEAN = [0.43216, 0.394666, 0.37645]
KINETICS_STD = [0.22803, 0.22145, 0.216989]

# File name endings treated as videos when a folder is scanned (anything else is reported as "not a video").
VIDEO_FILE_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv", ".ts",
)

# Relative spread of the frame durations above which a stream counts as variable frame rate.
_VFR_TOLERANCE = 0.05


class VideoDecodingError(ValueError):
    """A video file exists but cannot be used: not a video container, no video stream, an unsupported codec,
    corrupt data or no frames at all.

    Attributes:
        path (`str`): the file.
        reason (`str`): what is wrong with it.
    """

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot decode video {path}: {reason}")
        self.path = path
        self.reason = reason


def swscale_threads(threads: int) -> dict[str, int]:
    """The `threads=` keyword for PyAV's `VideoFrame.reformat` / `to_ndarray`: `{"threads": threads}` from PyAV 17,
    which scales on swscale's threads (automatic unless told), and `{}` before it, whose scaling runs on one thread
    and takes no such keyword (`av>=12` is allowed)."""
    import av

    return {"threads": int(threads)} if int(av.__version__.split(".")[0]) >= 17 else {}


def decode_video(
    path: str | os.PathLike,
    shortest_edge: int | None = None,
    fps: float | None = None,
    threads: int = 0,
    scale_threads: int = 1,
) -> tuple[np.ndarray, VideoMetadata]:
    """Decode every frame of a video file with PyAV, as RGB, optionally resized while decoding.

    Args:
        path: the video file (any container and codec FFmpeg reads: mp4 / h264, webm / vp9, avi / mpeg4, ...).
        shortest_edge (`int`, *optional*): resize (FFmpeg's swscale, bilinear) so that the shorter side has this
            many pixels, keeping the aspect ratio. Much cheaper than decoding at full size and resizing later.
        fps (`float`, *optional*): keep frames at this rate (by timestamp). `None` keeps the native rate; a
            variable-frame-rate stream is then resampled to its average rate, so that every clip spans the same
            time (reported in the metadata's `video_backend` field as `"pyav+vfr"`).
        threads (`int`): FFmpeg decoding threads; 0 lets FFmpeg choose, 1 suits many decoding processes.
        scale_threads (`int`): swscale threads of the resize and RGB conversion (PyAV >= 17; before it, always one);
            0 lets swscale choose (one per CPU). 1 (default) gives the same pixels, faster
            (`benchmarks/bench_decode_threads.py`).

    Returns:
        `(frames, metadata)`: `frames` a `np.uint8` array `[T, H, W, 3]`; `metadata` a `VideoMetadata` with the
        source frame count, frame rate, size and duration.

    Raises:
        FileNotFoundError: the file does not exist.
        VideoDecodingError: the file is not a readable video (the message names the file and the reason).
    """
    path = os.fspath(path)
    try:
        import av
    except ImportError:
        raise ImportError("decoding video files needs PyAV: pip install av") from None
    if not os.path.exists(path):
        raise FileNotFoundError(f"video file not found: {path}")
    if os.path.isdir(path):
        raise VideoDecodingError(path, "is a folder, expected a video file")
    if os.path.getsize(path) == 0:
        raise VideoDecodingError(path, "the file is empty (0 bytes)")
    try:
        container = av.open(path)
    except av.FFmpegError as error:
        raise VideoDecodingError(path, f"not a video container FFmpeg can read ({error})") from None
    with container:
        if not container.streams.video:
            kinds = sorted({stream.type for stream in container.streams}) or ["none"]
            raise VideoDecodingError(path, f"the file has no video stream (streams: {', '.join(kinds)})")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.thread_count = int(threads)
        codec = stream.codec_context
        if codec.width <= 0 or codec.height <= 0:
            raise VideoDecodingError(path, f"the video stream has no frame size ({codec.width}x{codec.height})")
        width, height = codec.width, codec.height
        if shortest_edge is not None:
            scale = shortest_edge / min(width, height)
            width, height = max(1, round(width * scale)), max(1, round(height * scale))
        frames, times = [], []
        scaling = swscale_threads(scale_threads)
        try:
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24", width=width, height=height, **scaling))
                times.append(frame.time)
        except av.FFmpegError as error:
            raise VideoDecodingError(path, f"corrupt or unsupported video data after {len(frames)} frame(s) ({error})") from None
        native_rate = float(stream.average_rate) if stream.average_rate else None
        declared_frames = int(stream.frames or 0)  # the container's frame count (0: not recorded)
    if not frames:
        raise VideoDecodingError(path, "no video frames could be decoded (zero-length video)")

    backend = "pyav"
    target_rate = fps
    known_times = None if any(t is None for t in times) else np.asarray(times, dtype=np.float64)
    if target_rate is None and known_times is not None and len(known_times) > 2:
        steps = np.diff(known_times)
        if steps.min() <= 0 or (steps.max() - steps.min()) > _VFR_TOLERANCE * np.median(steps):
            backend = "pyav+vfr"
            if native_rate:
                target_rate = native_rate
            elif (steps > 0).any():
                target_rate = 1.0 / float(np.median(steps[steps > 0]))
    indices = np.arange(len(frames))
    if target_rate is not None and known_times is not None:
        indices = _indices_at_rate(known_times, float(target_rate))
    array = np.stack([frames[i] for i in indices]) if len(indices) != len(frames) else np.stack(frames)
    duration = float(known_times[-1] - known_times[0]) if known_times is not None and len(known_times) > 1 else None
    metadata = VideoMetadata(
        total_num_frames=len(frames),
        fps=float(target_rate) if target_rate is not None else native_rate,
        width=int(array.shape[2]),
        height=int(array.shape[1]),
        duration=duration,
        video_backend=backend,
        frames_indices=[int(i) for i in indices],
    )
    # The container's frame count and the frames decoded at the native rate (before any resampling to `fps`):
    # extract_features compares the two to warn about truncated files.
    metadata.declared_num_frames = declared_frames
    metadata.decoded_num_frames = len(frames)
    return array, metadata


def _indices_at_rate(times: np.ndarray, rate: float) -> np.ndarray:
    """Indices of the frames shown at times `t0 + k / rate` (the last frame whose timestamp is <= that time)."""
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {rate}")
    start, end = float(times[0]), float(times[-1])
    targets = start + np.arange(int(math.floor((end - start) * rate + 1e-6)) + 1) / rate
    order = np.argsort(times, kind="stable")
    sorted_times = times[order]
    positions = np.searchsorted(sorted_times, targets + 1e-9, side="right") - 1
    return order[np.clip(positions, 0, len(times) - 1)]


def pad_clip_batch(
    clips: Sequence[torch.Tensor], masks: Sequence[torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch from per-video clips: `pixel_values_videos` `[B, C, T, 3, H, W]` (zero clips appended to the videos
    with fewer than C) and `video_clip_mask` `[B, C]` (False there).

    Args:
        clips: per video, `[C_i, T, 3, H, W]` clips, all of one clip shape (the caller checks it).
        masks: per video, a `[C_i]` bool mask of its real clips (default: every clip is real).
    """
    num_clips = max(clip.shape[0] for clip in clips)
    pixel_values = clips[0].new_zeros((len(clips), num_clips, *clips[0].shape[1:]))
    clip_mask = torch.zeros((len(clips), num_clips), dtype=torch.bool)
    for i, clip in enumerate(clips):
        pixel_values[i, : clip.shape[0]] = clip
        clip_mask[i, : clip.shape[0]] = True if masks is None else masks[i]
    return pixel_values, clip_mask


def clip_frame_indices(num_frames: int, clip_length: int, max_clips: int | None = None) -> np.ndarray:
    """Frame indices of the non-overlapping clips of a video of `num_frames` frames, `[num_clips, clip_length]`.

    Clip k covers frames `k * clip_length ... (k + 1) * clip_length - 1`. The last clip, when the video does not
    fill it (in particular a video shorter than one clip), repeats the last frame. With more than `max_clips`
    clips, `max_clips` clips are kept, spread uniformly over the whole video (first and last kept).
    """
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    if clip_length < 1:
        raise ValueError(f"clip_length must be >= 1, got {clip_length}")
    num_clips = math.ceil(num_frames / clip_length)
    starts = np.arange(num_clips) * clip_length
    if max_clips is not None and num_clips > max_clips:
        keep = np.round(np.linspace(0, num_clips - 1, max_clips)).astype(np.int64) if max_clips > 1 else np.zeros(1, np.int64)
        starts = starts[keep]
    indices = starts[:, None] + np.arange(clip_length)[None, :]
    return np.minimum(indices, num_frames - 1)


def as_frames_array(video: Any, where: str) -> np.ndarray:
    """Validate an in-memory video: `[T, H, W, 3]` (or grayscale `[T, H, W]` / `[T, H, W, 1]`) `uint8` frames.

    Returns a `uint8` `[T, H, W, 3]` array (grayscale repeated over the 3 channels).
    """
    if isinstance(video, torch.Tensor):
        video = video.detach().cpu().numpy()
    array = np.asarray(video)
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise ValueError(
            f"{where}: a frames array must have shape [frames, height, width, 3] (RGB) or [frames, height, width] "
            f"(grayscale), got shape {tuple(array.shape)}"
        )
    if 0 in array.shape:
        raise ValueError(f"{where}: the frames array is empty, shape {tuple(array.shape)}")
    if array.dtype != np.uint8:
        raise ValueError(f"{where}: frames must be uint8 RGB values in 0..255, got dtype {array.dtype}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return array


class VGDVideoProcessorKwargs(VideosKwargs, total=False):
    """The video settings of [`VGDVideoProcessor`] on top of transformers' `VideosKwargs`.

    clip_length (`int`): frames per clip (one feature map of the backbone per clip; the paper uses 16).
    max_clips (`int`): the most clips per video (the model's `max_video_frames`); longer videos keep this many
        clips spread uniformly over the whole video.
    num_regions (`int`): P, the cells of the backbone's feature map per clip (placeholders per clip).
    video_backbone (`dict`): the spec of the backbone these settings belong to (`video_backbone_vgd.py`; `None`: no
        backbone recorded, `videos=` is refused).
    decoder_threads (`int`): FFmpeg threads per decoded file (0: FFmpeg decides).
    """

    clip_length: int
    max_clips: int
    num_regions: int
    video_backbone: dict | None
    decoder_threads: int


class VGDVideoProcessor(BaseVideoProcessor):
    r"""
    Turns videos (file paths, or frames arrays `[T, H, W, 3]` uint8) into clips for the video backbone.

    Steps: decode with PyAV (files; the shorter side is resized to `size["shortest_edge"]` while decoding; a
    variable frame rate is resampled to the average rate; `fps` resamples to a fixed rate), cut into
    non-overlapping clips of `clip_length` frames (the last clip padded by repeating the last frame, so a video
    shorter than one clip gives one padded clip), keep at most `max_clips` clips (uniformly), then resize,
    center-crop, rescale and normalise like any transformers video processor.

    Returns a [`BatchFeature`] with
    - `pixel_values_videos` `[B, F, clip_length, 3, H, W]` float (F = the most clips in the batch; zeros in padding),
    - `video_clip_mask` `[B, F]` bool (True = a real clip),
    - `video_num_frames` `[B]` int (frames decoded before clipping: fewer than `clip_length` means padded).

    The defaults are those of torchvision's Kinetics-400 3D ResNets (`r3d_18`, `mc3_18`, `r2plus1d_18`): shorter
    side 128, center crop 112 x 112, Kinetics mean / std. A processor built for another backbone
    (`VGDProcessor.from_gpt2_pretrained(..., video_backbone=...)`) takes that backbone's settings.
    """

    resample = 2  # PILImageResampling.BILINEAR (as an int: importing this file does not need Pillow)
    image_mean = KINETICS_MEAN
    image_std = KINETICS_STD
    size = {"shortest_edge": 128}
    default_to_square = False
    crop_size = {"height": 112, "width": 112}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    do_sample_frames = False
    clip_length = 16
    max_clips = 256
    num_regions = 49
    video_backbone = None
    decoder_threads = 0
    valid_kwargs = VGDVideoProcessorKwargs
    model_input_names = ["pixel_values_videos", "video_clip_mask"]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if int(self.clip_length) < 1:
            raise ValueError(f"clip_length must be >= 1, got {self.clip_length}")
        if int(self.max_clips) < 1:
            raise ValueError(f"max_clips must be >= 1, got {self.max_clips}")
        if int(self.num_regions) < 1:
            raise ValueError(f"num_regions must be >= 1, got {self.num_regions}")

    # ------------------------------------------------------------------ decoding and clip sampling

    def load_frames(self, video: Any, index: int | None = None, fps: float | None = None) -> tuple[np.ndarray, VideoMetadata]:
        """One video as `uint8` frames `[T, H, W, 3]` and its metadata: a path is decoded, an array validated."""
        where = "video" if index is None else f"video {index}"
        if isinstance(video, (str, os.PathLike)):
            shortest_edge = self.size.get("shortest_edge") if self.do_resize and self.size else None
            return decode_video(video, shortest_edge=shortest_edge, fps=fps, threads=self.decoder_threads)
        if video is None:
            raise ValueError(f"{where} is None: expected a video file path or a frames array [T, H, W, 3]")
        frames = as_frames_array(video, where)
        metadata = VideoMetadata(
            total_num_frames=len(frames), fps=fps, width=frames.shape[2], height=frames.shape[1],
            video_backend="array", frames_indices=list(range(len(frames))),
        )
        return frames, metadata

    def _decode_and_sample_videos(self, videos, video_metadata=None, do_sample_frames=None, sample_indices_fn=None):
        """Decode / validate every video and select the frames of its clips (`clip_frame_indices`)."""
        if isinstance(videos, (str, os.PathLike, np.ndarray, torch.Tensor)):
            videos = [videos]
        fps = getattr(sample_indices_fn, "keywords", {}).get("fps") if sample_indices_fn is not None else None
        clip_length = getattr(sample_indices_fn, "keywords", {}).get("clip_length") or self.clip_length
        max_clips = getattr(sample_indices_fn, "keywords", {}).get("max_clips") or self.max_clips
        fps = fps if fps is not None else self.fps
        sampled, metadata = [], []
        for index, video in enumerate(videos):
            frames, meta = self.load_frames(video, index, fps=fps)
            selected = clip_frame_indices(len(frames), int(clip_length), int(max_clips)).reshape(-1)
            meta.frames_indices = [int(meta.frames_indices[i]) for i in selected]
            meta.total_num_frames = len(frames)
            sampled.append(frames[selected])
            metadata.append(meta)
        return sampled, metadata

    def preprocess(self, videos, **kwargs):
        """See the class docstring. `videos`: one path / frames array, or a list of them."""
        # Clip settings reach `_decode_and_sample_videos` through the frame-sampling hook of the base class.
        kwargs["do_sample_frames"] = True
        return super().preprocess(videos, **kwargs)

    def sample_frames(self, metadata, **kwargs):  # the base class's hook; clips are chosen in _decode_and_sample_videos
        raise NotImplementedError("VGDVideoProcessor samples clips in _decode_and_sample_videos")

    def _preprocess(self, videos: list[torch.Tensor], clip_length: int | None = None, return_tensors=None, **kwargs):
        clip_length = int(clip_length or self.clip_length)
        processed = super()._preprocess(videos, return_tensors=None, **kwargs)["pixel_values_videos"]
        clips = [video.reshape(-1, clip_length, *video.shape[1:]) for video in processed]
        shapes = {tuple(clip.shape[1:]) for clip in clips}
        if len(shapes) > 1:
            raise ValueError(f"videos of one batch were processed to different clip shapes {sorted(shapes)}")
        pixel_values, clip_mask = pad_clip_batch(clips)
        from transformers.feature_extraction_utils import BatchFeature

        return BatchFeature(
            {"pixel_values_videos": pixel_values, "video_clip_mask": clip_mask},
            tensor_type=return_tensors,
        )

    def __call__(self, videos, **kwargs):
        return_metadata = kwargs.get("return_metadata", False)
        kwargs["return_metadata"] = True
        output = self.preprocess(videos, **kwargs)
        metadata = output["video_metadata"]
        num_frames = [int(meta.total_num_frames) for meta in metadata]
        output["video_num_frames"] = (
            torch.tensor(num_frames) if isinstance(output["pixel_values_videos"], torch.Tensor) else np.asarray(num_frames)
        )
        if not return_metadata:
            del output["video_metadata"]
        return output

    def video_tokens(self, num_clips: int) -> tuple[int, int]:
        """`(frames, regions)` of the features of a video of `num_clips` clips: `(num_clips, num_regions)`."""
        return num_clips, int(self.num_regions)


VGDVideoProcessor.register_for_auto_class("AutoVideoProcessor")


__all__ = [
    "KINETICS_MEAN",
    "KINETICS_STD",
    "VIDEO_FILE_EXTENSIONS",
    "VGDVideoProcessor",
    "VideoDecodingError",
    "as_frames_array",
    "clip_frame_indices",
    "decode_video",
]
