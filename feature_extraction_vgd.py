"""Video feature extractor of VGD-GPT2 (Le & Hoi, ACL 2020).

[`VGDVideoFeatureExtractor`] turns pre-extracted video features (one array, or a dict of named streams such as
AVSD's `i3d_rgb` / `i3d_flow` / `vggish`) into one `[F, P, D]` float32 array per video: stream alignment,
spatial / temporal average pooling, uniform frame capping and validation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature, FeatureExtractionMixin


try:  # package layout (Hub / `trust_remote_code`): the configuration file sits next to this one
    from .configuration_vgd_gpt2 import VIDEO_POOLING_MODES, check_num_video_regions
except ImportError:  # top-level module layout (the repository root on sys.path)
    from configuration_vgd_gpt2 import VIDEO_POOLING_MODES, check_num_video_regions


# The AVSD feature streams in their customary concatenation order (I3D rgb, I3D flow, VGGish audio).
AVSD_STREAM_ORDER = ("i3d_rgb", "i3d_flow", "vggish")

def uniform_frame_indices(num_frames: int, num_samples: int) -> np.ndarray:
    """Indices of `num_samples` frames spread uniformly over a video of `num_frames` frames.

    `round(linspace(0, num_frames - 1, num_samples))` (halves rounded up), computed exactly in integers: the first
    and the last frame are always kept, so the samples span the whole video (capping never just cuts the end).
    Returns `arange(num_frames)` when `num_samples >= num_frames`.

    Returns:
        `np.ndarray` of shape `(min(num_frames, num_samples),)`, dtype `np.intp`, increasing, read-only (cached).
    """
    return _uniform_frame_indices(int(num_frames), int(num_samples))


@functools.lru_cache(maxsize=4096)
def _uniform_frame_indices(num_frames: int, num_samples: int) -> np.ndarray:
    if num_frames < 1 or num_samples < 1:
        raise ValueError(
            f"need at least one frame and one sample, got num_frames={num_frames}, num_samples={num_samples}"
        )
    if num_samples >= num_frames:
        indices = np.arange(num_frames, dtype=np.intp)
    elif num_samples == 1:
        indices = np.zeros(1, dtype=np.intp)
    else:
        # floor(i * (F - 1) / (n - 1) + 1/2) for i = 0 .. n - 1
        steps = np.arange(num_samples, dtype=np.int64) * (2 * (num_frames - 1)) + (num_samples - 1)
        indices = (steps // (2 * (num_samples - 1))).astype(np.intp)
    indices.flags.writeable = False
    return indices


def _copy_frames(target: np.ndarray, array: np.ndarray, num_frames: int) -> None:
    """`target[...] = array[uniform_frame_indices(len(array), num_frames)]` without a temporary copy when the
    selected frames form a few contiguous runs (e.g. 200 -> 196 frames). A region-less `array` `[F, 1, D]`
    broadcasts over the regions of `target` `[num_frames, P, D]`."""
    if array.shape[0] == num_frames:
        target[...] = array
        return
    indices = uniform_frame_indices(array.shape[0], num_frames)
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    if len(breaks) > 16:
        target[...] = array[indices]
        return
    bounds = [0, *breaks.tolist(), num_frames]
    for start, end in zip(bounds[:-1], bounds[1:]):
        source = int(indices[start])
        target[start:end] = array[source : source + end - start]


class VGDVideoFeatureExtractor(FeatureExtractionMixin):
    r"""
    Prepares pre-extracted video features for [`VGDGPT2ForDialogue`].

    One video is given as
    - an array (numpy array, memory map or CPU torch tensor) of shape `[F, D]` (treated as `[F, 1, D]`: one
      region per frame) or `[F, P, D]` (P spatial regions per frame), or
    - a dict of named streams `{name: [F_i, D_i] or [F_i, P, D_i]}`, e.g. AVSD's
      `{"i3d_rgb": [T, 2048], "i3d_flow": [T, 2048], "vggish": [T', 128]}`.

    Dict inputs are processed as follows:
    1. The streams are taken in `stream_order` (when `stream_order` is `None`: in sorted name order). With a
       `stream_order`, a missing or an unexpected stream is a `ValueError` naming it and the expected streams.
    2. Streams of different lengths are aligned by **uniformly resampling every stream to the length of the
       shortest one** (frame indices `round(linspace(0, F_i - 1, F_min))`). Like the usual AVSD practice of
       truncating to the shortest stream it gives every stream the same number of frames, but each stream still
       covers the whole video instead of losing its end. Frame capping (below) is folded into the same index
       selection: every stream is sampled directly to `min(F_min, max_video_frames)` frames.
    3. The streams are concatenated along the feature dimension; their total size must be `video_feature_dim`.
       A stream without regions (`[F_i, D_i]`) next to streams with P regions is repeated over the P regions;
       two different region counts > 1 are an error.

    Pooling (`video_pooling`, paper section 4.3):
    - `"spatiotemporal"`: all regions are kept, `[F, P, D]`.
    - `"spatial"`: average over time, `[1, P, D]` (each stream is averaged over all its own frames; frame capping
      does not apply since the result has one frame).
    - `"temporal"`: average over regions, `[F, 1, D]`.
    - `"spatial_and_temporal"`: both, `[P + F, 1, D]`: the P region tokens of `"spatial"` (each region averaged over
      the frames kept), then the F clip tokens of `"temporal"`; the features must have `num_video_regions` regions,
      and at most `max_video_frames - P` frames are kept, so that the `P + F` rows fit the temporal encoding.

    Frame capping: a video longer than `max_video_frames` keeps `max_video_frames` frames sampled uniformly over
    its whole length (see [`uniform_frame_indices`]), never by cutting the end.

    Validation: wrong number of dimensions, no frames / regions / features, a non-numeric dtype, a feature size
    different from `video_feature_dim`, or NaN / inf values (in the frames that are used) raise a `ValueError`
    naming the example index, the stream and the sizes.

    Args:
        video_feature_dim (`int`, defaults to 2048):
            D, the size of one feature vector after concatenating the streams (4224 for AVSD I3D rgb + flow + VGGish).
        max_video_frames (`int`, defaults to 256):
            The most frames kept per video (must not exceed the model's `max_video_frames`).
        video_pooling (`str`, defaults to `"spatiotemporal"`):
            One of `"spatiotemporal"`, `"spatial"`, `"temporal"`, `"spatial_and_temporal"`.
        num_video_regions (`int`, *optional*):
            P, the regions per frame every video must have, for `"spatial_and_temporal"` only (required there).
        stream_order (`list[str]`, *optional*):
            The names and order of the streams of dict inputs, e.g. `["i3d_rgb", "i3d_flow", "vggish"]`. `None`
            accepts any streams and concatenates them in sorted name order (no missing-stream check: set it for
            real data so that training and inference agree).
    """

    model_input_names = ["video_features", "video_mask"]

    def __init__(
        self,
        video_feature_dim: int = 2048,
        max_video_frames: int = 256,
        video_pooling: str = "spatiotemporal",
        stream_order: Sequence[str] | None = None,
        num_video_regions: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if video_pooling not in VIDEO_POOLING_MODES:
            raise ValueError(f"video_pooling must be one of {VIDEO_POOLING_MODES}, got {video_pooling!r}")
        if int(video_feature_dim) < 1:
            raise ValueError(f"video_feature_dim must be a positive integer, got {video_feature_dim!r}")
        if int(max_video_frames) < 1:
            raise ValueError(f"max_video_frames must be a positive integer, got {max_video_frames!r}")
        check_num_video_regions(video_pooling, num_video_regions, int(max_video_frames), "VGDVideoFeatureExtractor")
        if stream_order is not None:
            if isinstance(stream_order, str) or len(stream_order) == 0:
                raise ValueError(f"stream_order must be a non-empty list of stream names, got {stream_order!r}")
            if len(set(stream_order)) != len(stream_order):
                raise ValueError(f"stream_order names a stream twice: {list(stream_order)}")
            stream_order = [str(name) for name in stream_order]
        self.video_feature_dim = int(video_feature_dim)
        self.max_video_frames = int(max_video_frames)
        self.video_pooling = video_pooling
        self.num_video_regions = num_video_regions
        self.stream_order = stream_order

    # ------------------------------------------------------------------ one video


    def pooled_video_shape(self, num_frames: int, num_regions: int) -> tuple[int, int]:
        """`(frames, regions)` of the video tokens for a video of `num_frames` x `num_regions` feature maps after this
        extractor's frame cap and pooling: the one rule behind every count of video tokens (processor, length-grouped
        batching, chat). `"spatial_and_temporal"` gives `(P + F, 1)`: P region tokens, then F clip tokens."""
        if self.video_pooling == "spatial_and_temporal":
            return self.num_video_regions + min(int(num_frames), self.max_video_frames - self.num_video_regions), 1
        frames = 1 if self.video_pooling == "spatial" else min(int(num_frames), self.max_video_frames)
        regions = 1 if self.video_pooling == "temporal" else int(num_regions)
        return frames, regions

    def process_video(self, video: Any, index: int | None = None) -> np.ndarray:
        """Validate, align, pool and cap the features of one video.

        Args:
            video: `[F, D]` / `[F, P, D]` array or tensor, a dict of named streams, or `None` (no video).
            index (`int`, *optional*): the example's index in its batch, used in error messages.

        Returns:
            `np.ndarray` of shape `[F, P, D]` (`D = video_feature_dim`), dtype float32. `None` gives `[0, 1, D]`.
            When no work is needed (one float32 stream, nothing to resample or pool) the result is a view of the
            input (no copy).
        """
        where = "video" if index is None else f"example {index}"
        if video is None:
            return np.zeros((0, 1, self.video_feature_dim), dtype=np.float32)
        if isinstance(video, Mapping):
            names = self._ordered_stream_names(video, where)
            streams = [(name, self._as_array(video[name], where, name)) for name in names]
        else:
            streams = [(None, self._as_array(video, where, None))]

        dims = [array.shape[2] for _, array in streams]
        total_dim = sum(dims)
        if total_dim != self.video_feature_dim:
            if len(streams) == 1:
                detail = ""
            else:
                detail = " (" + ", ".join(f"{name}: {dim}" for (name, _), dim in zip(streams, dims)) + ")"
            raise ValueError(
                f"{where}: video features have dim {total_dim}{detail} but the feature extractor's "
                f"video_feature_dim is {self.video_feature_dim}"
            )
        regions = max(array.shape[1] for _, array in streams)
        for name, array in streams:
            if array.shape[1] not in (1, regions):
                shapes = ", ".join(f"{n}: {tuple(a.shape)}" for n, a in streams)
                raise ValueError(
                    f"{where}: streams have different numbers of regions per frame ({shapes}); a stream has either "
                    f"the same number of regions as the others or none"
                )

        if self.video_pooling == "spatial_and_temporal":
            out = self._regions_then_clips(streams, regions, total_dim, where)
        elif self.video_pooling == "spatial":
            out = np.empty((1, regions, total_dim), dtype=np.float32)
            offset = 0
            for _, array in streams:
                dim = array.shape[2]
                out[0, :, offset : offset + dim] = array.mean(axis=0, dtype=np.float32)
                offset += dim
        else:
            num_frames, out_regions = self.pooled_video_shape(min(array.shape[0] for _, array in streams), regions)
            first = streams[0][1]
            if (
                len(streams) == 1
                and first.shape[0] == num_frames
                and first.shape[1] == out_regions
                and first.dtype == np.float32
            ):
                out = np.ascontiguousarray(first)  # a view when the input already is contiguous float32
            else:
                out = np.empty((num_frames, out_regions, total_dim), dtype=np.float32)
                offset = 0
                for _, array in streams:
                    dim = array.shape[2]
                    target = out[:, :, offset : offset + dim]
                    if out_regions == 1 and array.shape[1] > 1:
                        if array.shape[0] != num_frames:
                            array = array[uniform_frame_indices(array.shape[0], num_frames)]
                        np.mean(array, axis=1, dtype=np.float32, out=target[:, 0, :])
                    else:
                        _copy_frames(target, array, num_frames)
                    offset += dim
        if not np.isfinite(out).all():
            self._raise_non_finite(out, streams, where)
        return out

    def _regions_then_clips(self, streams, regions: int, total_dim: int, where: str) -> np.ndarray:
        """`[P + F, 1, D]` for `"spatial_and_temporal"`: each region averaged over the F frames kept, then each of those
        frames averaged over the regions."""
        if regions != self.num_video_regions:
            shapes = ", ".join(f"{name or 'features'}: {tuple(array.shape)}" for name, array in streams)
            raise ValueError(
                f"{where}: video features have {regions} regions per frame ({shapes}) but video_pooling="
                f"'spatial_and_temporal' was set up for num_video_regions={self.num_video_regions} (one token per region "
                f"comes first): extract every video with the same backbone, layer and crop size"
            )
        num_frames = min(min(array.shape[0] for _, array in streams), self.max_video_frames - regions)
        out = np.empty((regions + num_frames, 1, total_dim), dtype=np.float32)
        offset = 0
        for _, array in streams:
            dim = array.shape[2]
            if array.shape[0] != num_frames:
                array = array[uniform_frame_indices(array.shape[0], num_frames)]
            out[:regions, 0, offset : offset + dim] = array.mean(axis=0, dtype=np.float32)  # a [F, 1, D] stream: every region the same
            np.mean(array, axis=1, dtype=np.float32, out=out[regions:, 0, offset : offset + dim])
            offset += dim
        return out

    def _ordered_stream_names(self, video: Mapping, where: str) -> list[str]:
        if len(video) == 0:
            raise ValueError(f"{where}: the dict of video streams is empty")
        if self.stream_order is None:
            return sorted(video)
        missing = [name for name in self.stream_order if name not in video]
        extra = [name for name in video if name not in self.stream_order]
        if missing or extra:
            problems = []
            if missing:
                problems.append(f"missing stream(s) {missing}")
            if extra:
                problems.append(f"unexpected stream(s) {extra}")
            raise ValueError(f"{where}: {' and '.join(problems)}; expected exactly the streams {self.stream_order}")
        return list(self.stream_order)

    @staticmethod
    def _as_array(value: Any, where: str, stream: str | None) -> np.ndarray:
        """`value` as a numpy array of shape [F, P, D] (no copy for numpy / CPU torch float32 inputs)."""
        label = where if stream is None else f"{where}, stream {stream!r}"
        if isinstance(value, torch.Tensor):
            value = value.detach()
            if value.dtype == torch.bfloat16:
                value = value.float()
            value = value.cpu().numpy()
        else:
            value = np.asarray(value)
        if value.dtype.kind not in "fiu":
            raise ValueError(f"{label}: video features must be numeric, got dtype {value.dtype}")
        if value.ndim == 2:
            value = value[:, None, :]
        elif value.ndim != 3:
            raise ValueError(
                f"{label}: video features must have shape [frames, dim] or [frames, regions, dim], "
                f"got {value.ndim} dimension(s) {tuple(value.shape)}"
            )
        if 0 in value.shape:
            raise ValueError(f"{label}: video features are empty, shape {tuple(value.shape)} (frames, regions, dim)")
        return value

    def _raise_non_finite(self, out: np.ndarray, streams: list, where: str):
        offset = 0
        for name, array in streams:
            dim = array.shape[2]
            part = out[..., offset : offset + dim]
            if not np.isfinite(part).all():
                label = where if name is None else f"{where}, stream {name!r}"
                kind = "NaN" if np.isnan(part).any() else "inf"
                raise ValueError(f"{label}: video features contain {kind} values")
            offset += dim
        raise ValueError(f"{where}: video features contain NaN or inf values")

    # ------------------------------------------------------------------ batches

    def __call__(self, video_features: Any, return_tensors: str | None = None) -> BatchFeature:
        """Process one video or a list of videos and pad them into one batch.

        Returns:
            [`BatchFeature`] with `video_features` `[B, F, P, D]` float32 (zeros where padded) and `video_mask`
            `[B, F, P]` bool (True = a real region). A single video gives B = 1.
        """
        videos = video_features if isinstance(video_features, (list, tuple)) else [video_features]
        processed = [self.process_video(video, index) for index, video in enumerate(videos)]
        features, mask = self.pad(processed)
        return BatchFeature({"video_features": features, "video_mask": mask}, tensor_type=return_tensors)

    def pad(
        self, videos: Sequence[np.ndarray], masks: Sequence[np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pad processed videos `[F_i, P_i, D]` to `[B, max F, max P, D]` (zeros) and build the `[B, F, P]` mask.

        `masks` (`[F_i, P_i]` bool each) default to all True.
        """
        if len(videos) == 0:
            return np.zeros((0, 0, 1, self.video_feature_dim), np.float32), np.zeros((0, 0, 1), bool)
        dims = {video.shape[2] for video in videos}
        if len(dims) > 1:
            raise ValueError(f"videos of one batch have different feature dims {sorted(dims)}")
        return _pad_videos(videos, masks, dims.pop())


def _pad_videos(
    videos: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None] | None,
    dim: int,
    allocate: Callable[[tuple[int, ...]], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pad `[F_i, P_i, D]` videos into `([B, F, P, D]` float32, `[B, F, P]` bool`)`; each element written once.

    `allocate(shape)` returns the uninitialised float32 output array (default `np.empty`)."""
    batch = len(videos)
    frames = max(video.shape[0] for video in videos)
    regions = max(video.shape[1] for video in videos)
    shape = (batch, frames, regions, dim)
    features = np.empty(shape, dtype=np.float32) if allocate is None else allocate(shape)
    mask = np.zeros((batch, frames, regions), dtype=bool)
    for i, video in enumerate(videos):
        f, p = video.shape[0], video.shape[1]
        features[i, :f, :p] = video
        features[i, f:] = 0.0
        features[i, :f, p:] = 0.0
        mask[i, :f, :p] = True if masks is None or masks[i] is None else masks[i]
    return features, mask
