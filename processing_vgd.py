"""Processor, video feature extractor and training collator of VGD-GPT2 (Le & Hoi, ACL 2020).

Three pieces, all following the contract of `docs/design.md`:

- [`VGDVideoFeatureExtractor`] turns pre-extracted video features (one array, or a dict of named streams such as
  AVSD's `i3d_rgb` / `i3d_flow` / `vggish`) into one `[F, P, D]` float32 array per video: stream alignment,
  spatial / temporal average pooling, uniform frame capping and validation.
- [`VGDProcessor`] tokenises caption, dialogue history, question and (for training) answer, lays out one sequence
  per example (`<video>` placeholders first, then the text), truncates what does not fit and returns the tensors
  the model consumes (`input_ids`, `attention_mask`, `modality_ids`, `turn_ids`, `video_features`, `video_mask`,
  `labels`).
- [`DataCollatorForVGD`] pads unbatched processor outputs on the right and adds the labels of the auxiliary
  objectives: masked language modelling (`mlm_labels`), masked visual modelling (`mvm_mask`) and video-text
  matching (`mvt_labels`, with the `<cls>` token appended to every sequence).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import AutoFeatureExtractor, GPT2Tokenizer
from transformers.feature_extraction_utils import BatchFeature, FeatureExtractionMixin
from transformers.processing_utils import ProcessorMixin


try:  # package layout (Hub / `trust_remote_code`): the configuration file sits next to this one
    from .configuration_vgd_gpt2 import (
        MODALITY_CAP,
        MODALITY_SYS,
        MODALITY_USR,
        MODALITY_VIS,
        VIDEO_POOLING_MODES,
        VGDGPT2Config,
    )
except ImportError:  # top-level module layout (the repository root on sys.path)
    from configuration_vgd_gpt2 import (
        MODALITY_CAP,
        MODALITY_SYS,
        MODALITY_USR,
        MODALITY_VIS,
        VIDEO_POOLING_MODES,
        VGDGPT2Config,
    )


IGNORE_INDEX = -100

# The special tokens of docs/design.md, in the order `from_gpt2_pretrained` adds them (ids vocab, vocab + 1, ...).
VIDEO_TOKEN = "<video>"
CAP_TOKEN = "<cap>"
USR_TOKEN = "<usr>"
SYS_TOKEN = "<sys>"
CLS_TOKEN = "<cls>"
MASK_TOKEN = "<mask>"
PAD_TOKEN = "<pad>"
SPECIAL_TOKENS = (VIDEO_TOKEN, CAP_TOKEN, USR_TOKEN, SYS_TOKEN, CLS_TOKEN, MASK_TOKEN, PAD_TOKEN)

# The AVSD feature streams in their customary concatenation order (I3D rgb, I3D flow, VGGish audio).
AVSD_STREAM_ORDER = ("i3d_rgb", "i3d_flow", "vggish")

# Every key of one unbatched processor output / one collator input.
TEXT_KEYS = ("input_ids", "attention_mask", "modality_ids", "turn_ids")
TEXT_PAD_VALUES = {
    "attention_mask": 0,
    "modality_ids": 0,
    "turn_ids": 0,
    "labels": IGNORE_INDEX,
    "mlm_labels": IGNORE_INDEX,
}


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
            One of `"spatiotemporal"`, `"spatial"`, `"temporal"`.
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
        **kwargs,
    ):
        super().__init__(**kwargs)
        if video_pooling not in VIDEO_POOLING_MODES:
            raise ValueError(f"video_pooling must be one of {VIDEO_POOLING_MODES}, got {video_pooling!r}")
        if int(video_feature_dim) < 1:
            raise ValueError(f"video_feature_dim must be a positive integer, got {video_feature_dim!r}")
        if int(max_video_frames) < 1:
            raise ValueError(f"max_video_frames must be a positive integer, got {max_video_frames!r}")
        if stream_order is not None:
            if isinstance(stream_order, str) or len(stream_order) == 0:
                raise ValueError(f"stream_order must be a non-empty list of stream names, got {stream_order!r}")
            if len(set(stream_order)) != len(stream_order):
                raise ValueError(f"stream_order names a stream twice: {list(stream_order)}")
            stream_order = [str(name) for name in stream_order]
        self.video_feature_dim = int(video_feature_dim)
        self.max_video_frames = int(max_video_frames)
        self.video_pooling = video_pooling
        self.stream_order = stream_order

    # ------------------------------------------------------------------ one video

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

        if self.video_pooling == "spatial":
            out = np.empty((1, regions, total_dim), dtype=np.float32)
            offset = 0
            for _, array in streams:
                dim = array.shape[2]
                out[0, :, offset : offset + dim] = array.mean(axis=0, dtype=np.float32)
                offset += dim
        else:
            num_frames = min(min(array.shape[0] for _, array in streams), self.max_video_frames)
            out_regions = 1 if self.video_pooling == "temporal" else regions
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


@dataclasses.dataclass
class VGDTruncationStats:
    """Counters of what [`VGDProcessor`] dropped to fit its limits, since creation or the last `reset()`.

    Attributes:
        examples: examples processed.
        examples_truncated: examples that lost anything (history turns, caption tokens or answer tokens).
        history_turns_dropped: oldest history turns dropped (by `max_history_turns`, `max_turns` or length).
        caption_tokens_dropped: caption tokens cut from the caption's end.
        answers_truncated: training answers cut at their end (their `<|endoftext|>` is then dropped too).
        answer_tokens_dropped: answer tokens cut (not counting the dropped `<|endoftext|>`).

    Each process (e.g. each DataLoader worker) counts its own examples.
    """

    examples: int = 0
    examples_truncated: int = 0
    history_turns_dropped: int = 0
    caption_tokens_dropped: int = 0
    answers_truncated: int = 0
    answer_tokens_dropped: int = 0

    def reset(self) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, 0)

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class _TokenCache:
    """A bounded text -> token ids cache (cleared when full). Never copied or pickled with its contents."""

    def __init__(self, max_size: int):
        self.max_size = max_size
        self.entries: dict[str, list[int]] = {}

    def __deepcopy__(self, memo):
        return _TokenCache(self.max_size)

    def __getstate__(self):
        return {"max_size": self.max_size}

    def __setstate__(self, state):
        self.max_size = state["max_size"]
        self.entries = {}


class VGDProcessor(ProcessorMixin):
    r"""
    Builds VGD-GPT2 inputs from video features and dialogue text (docs/design.md).

    One example's sequence, video first:
    ```
    <video> x (F*P)       modality VIS  turn 0      (frame-major: (f0,p0), (f0,p1), ..., (f1,p0), ...)
    <cap> caption         modality CAP  turn 0
    <usr> q_1 <sys> a_1   USR / SYS     turn 1      (kept history, oldest first)
    ...
    <usr> q <sys>         USR / SYS     turn t      (t = kept history turns + 1)
    answer <|endoftext|>  SYS           turn t      (when `answer` is given; `labels` hold these ids)
    ```
    Every text piece is tokenised with one leading space (`" " + text.strip()`), GPT-2's convention for a word
    that follows other text; [`~VGDProcessor.decode`] / [`~VGDProcessor.batch_decode`] with
    `skip_special_tokens=True` strip it again, so decoded answers read "he closes it .".

    Text budget: the text tokens (everything but the `<video>` placeholders, which do not use GPT-2 positions)
    of an example never exceed `max_text_length`; a training example (with `answer`) keeps one more position free
    for the `<cls>` token that [`DataCollatorForVGD`] appends. What does not fit is dropped in this order:
    1. the oldest history turns (whole turns), 2. the end of the caption. The question is never shortened: if
    `<cap>`, `<usr>`, the question and `<sys>` alone do not fit, a `ValueError` names the lengths. A training
    answer that does not fit next to them is cut at its end (and then gets no `<|endoftext|>`: the cut answer is
    not finished); if not even one answer token fits, a `ValueError` is raised. Independently of the length,
    at most `max_history_turns` (if set) and `max_turns - 2` history turns are kept, so that turn ids stay below
    `max_turns`. Counters of everything dropped are in `truncation_stats` ([`VGDTruncationStats`]).

    Args:
        feature_extractor ([`VGDVideoFeatureExtractor`]):
            Prepares the video features.
        tokenizer ([`GPT2Tokenizer`]):
            A GPT-2 tokenizer holding the special tokens of docs/design.md (see
            [`~VGDProcessor.from_gpt2_pretrained`]).
        max_text_length (`int`, *optional*):
            The most text tokens per example. Defaults to `tokenizer.model_max_length` capped at 1024 (GPT-2's
            positions).
        max_history_turns (`int`, *optional*):
            Keep at most this many (most recent) history turns. `None` keeps all that fit.
        max_turns (`int`, defaults to 16):
            Rows of the model's turn encoding (`config.max_turns`): turn ids are kept below it, i.e. at most
            `max_turns - 2` history turns plus the current question.
        token_cache_size (`int`, defaults to 0):
            Cache the token ids of up to this many distinct text pieces (captions and history turns repeat across
            the examples of one dialogue). 0 disables the cache.
    """

    def __init__(
        self,
        feature_extractor=None,
        tokenizer=None,
        max_text_length: int | None = None,
        max_history_turns: int | None = None,
        max_turns: int = 16,
        token_cache_size: int = 0,
        chat_template=None,
    ):
        if tokenizer is None or feature_extractor is None:
            raise ValueError("VGDProcessor needs both a `feature_extractor` and a `tokenizer`")
        token_ids = {}
        unk_id = tokenizer.unk_token_id
        for token in SPECIAL_TOKENS:
            token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id is None or (token_id == unk_id and token != tokenizer.unk_token):
                raise ValueError(
                    f"the tokenizer has no {token!r} token; build the processor with "
                    "VGDProcessor.from_gpt2_pretrained(...) which adds the special tokens of docs/design.md"
                )
            token_ids[token] = token_id
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos token (GPT-2's <|endoftext|>)")
        if max_text_length is None:
            max_text_length = min(int(tokenizer.model_max_length), 1024)
        if int(max_text_length) < 4:
            raise ValueError(f"max_text_length must be at least 4, got {max_text_length}")
        if int(max_turns) < 2:
            raise ValueError(
                f"max_turns must be at least 2 (the caption's turn 0 and the question's turn), got {max_turns}"
            )
        if max_history_turns is not None and int(max_history_turns) < 0:
            raise ValueError(f"max_history_turns must be >= 0 or None, got {max_history_turns}")
        self.max_text_length = int(max_text_length)
        self.max_history_turns = None if max_history_turns is None else int(max_history_turns)
        self.max_turns = int(max_turns)
        self.token_cache_size = int(token_cache_size)
        self.truncation_stats = VGDTruncationStats()
        self._token_ids = token_ids
        self._token_cache = _TokenCache(self.token_cache_size)
        super().__init__(feature_extractor, tokenizer, chat_template=chat_template)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_gpt2_pretrained(
        cls,
        pretrained_model_name_or_path: str,
        video_feature_dim: int = 2048,
        max_video_frames: int = 256,
        video_pooling: str = "spatiotemporal",
        stream_order: Sequence[str] | None = None,
        **kwargs,
    ) -> "VGDProcessor":
        """Build a processor from a plain GPT-2 tokenizer (a Hub id such as `"gpt2"` or a local folder).

        Loads the tokenizer with `GPT2Tokenizer.from_pretrained`, adds `<video>`, `<cap>`, `<usr>`, `<sys>`,
        `<cls>`, `<mask>`, `<pad>` (in this order, as the next free ids) and sets `pad_token`, `mask_token`,
        `cls_token` (eos / bos stay `<|endoftext|>`), then builds a [`VGDVideoFeatureExtractor`] with the given
        `video_feature_dim`, `max_video_frames`, `video_pooling` and `stream_order`.

        Keyword arguments named like a [`VGDProcessor`] argument (`max_text_length`, `max_history_turns`,
        `max_turns`, `token_cache_size`) go to the processor; the others to `GPT2Tokenizer.from_pretrained`
        (e.g. `cache_dir`, `revision`, `local_files_only`).
        """
        processor_args = ("max_text_length", "max_history_turns", "max_turns", "token_cache_size")
        processor_kwargs = {key: kwargs.pop(key) for key in processor_args if key in kwargs}
        tokenizer = GPT2Tokenizer.from_pretrained(pretrained_model_name_or_path, **kwargs)
        new_tokens = [token for token in SPECIAL_TOKENS if token not in tokenizer.get_vocab()]
        if new_tokens:
            tokenizer.add_tokens(new_tokens, special_tokens=True)
        tokenizer.add_special_tokens(
            {
                "pad_token": PAD_TOKEN,
                "mask_token": MASK_TOKEN,
                "cls_token": CLS_TOKEN,
                "extra_special_tokens": [VIDEO_TOKEN, CAP_TOKEN, USR_TOKEN, SYS_TOKEN],
            }
        )
        feature_extractor = VGDVideoFeatureExtractor(
            video_feature_dim=video_feature_dim,
            max_video_frames=max_video_frames,
            video_pooling=video_pooling,
            stream_order=stream_order,
        )
        return cls(feature_extractor=feature_extractor, tokenizer=tokenizer, **processor_kwargs)

    # ------------------------------------------------------------------ special tokens

    @property
    def video_token_id(self) -> int:
        return self._token_ids[VIDEO_TOKEN]

    @property
    def cap_token_id(self) -> int:
        return self._token_ids[CAP_TOKEN]

    @property
    def usr_token_id(self) -> int:
        return self._token_ids[USR_TOKEN]

    @property
    def sys_token_id(self) -> int:
        return self._token_ids[SYS_TOKEN]

    @property
    def cls_token_id(self) -> int:
        return self._token_ids[CLS_TOKEN]

    @property
    def mask_token_id(self) -> int:
        return self._token_ids[MASK_TOKEN]

    @property
    def pad_token_id(self) -> int:
        return self._token_ids[PAD_TOKEN]

    @property
    def eos_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def bos_token_id(self) -> int:
        return self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.eos_token_id

    @property
    def video_token(self) -> str:
        return VIDEO_TOKEN

    def special_token_ids(self) -> dict[str, int]:
        """The special-token ids under the [`VGDGPT2Config`] field names.

        For the model builder: `config.update(processor.special_token_ids())`.
        """
        return {
            "video_token_id": self.video_token_id,
            "cap_token_id": self.cap_token_id,
            "usr_token_id": self.usr_token_id,
            "sys_token_id": self.sys_token_id,
            "cls_token_id": self.cls_token_id,
            "mask_token_id": self.mask_token_id,
            "pad_token_id": self.pad_token_id,
            "eos_token_id": self.eos_token_id,
            "bos_token_id": self.bos_token_id,
        }

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "modality_ids", "turn_ids", "video_features", "video_mask"]

    # ------------------------------------------------------------------ main entry point

    def __call__(
        self,
        video_features: Any = None,
        caption: str | Sequence[str | None] | None = None,
        history: Sequence | None = None,
        question: str | Sequence[str] | None = None,
        answer: str | Sequence[str] | None = None,
        return_tensors: str | None = None,
        padding_side: str = "left",
    ) -> BatchFeature:
        r"""
        Build the model inputs of one example or of a batch.

        An example is a single one when `question` is a `str`; then `video_features` is one video (or `None`),
        `caption` / `answer` are `str` (or `None`) and `history` is one list of pairs. For a batch every argument
        is a list with one entry per example (`caption`, `history`, `video_features` may be `None` as a whole or
        hold `None` entries).

        Args:
            video_features: per example an array / tensor `[F, D]` or `[F, P, D]`, a dict of named streams (see
                [`VGDVideoFeatureExtractor`]), or `None` (no video: no placeholders, F = 0).
            caption: the video caption (`None` / `""`: only the `<cap>` marker).
            history: the previous turns, oldest first, as `(question, answer)` pairs or
                `{"question": ..., "answer": ...}` dicts (AVSD's turn format); may be empty.
            question: the current question (required).
            answer: the target answer, for training: adds `labels`.
            return_tensors (`"pt"` or `"np"`, *optional*): `None` returns unbatched examples, ready for
                [`DataCollatorForVGD`]: for a single example a dict of 1-D arrays (`input_ids` ... `[L]`,
                `video_features` `[F, P, D]` float32, `video_mask` `[F, P]` bool), for a batch a dict of lists of
                those. Otherwise a padded batch (see below).
            padding_side (`"left"` or `"right"`, defaults to `"left"` for generation).

        Returns:
            [`BatchFeature`]; batched: `input_ids`, `attention_mask`, `modality_ids`, `turn_ids` `[B, L]` (pads:
            `<pad>`, 0, 0, 0), `video_features` `[B, F, P, D]` float32 (zero padded) and `video_mask` `[B, F, P]`
            bool (both absent when no example has a video), `labels` `[B, L]` (-100 except the answer and its
            `<|endoftext|>`) when `answer` is given.
        """
        single = isinstance(question, str)
        videos, captions, histories, questions, answers = self._normalize_inputs(
            video_features, caption, history, question, answer, single
        )
        examples = self._encode(videos, captions, histories, questions, answers)
        if return_tensors is None:
            if single:
                return BatchFeature(examples[0])
            return BatchFeature({key: [example[key] for example in examples] for key in examples[0]})
        return self.pad(examples, padding_side=padding_side, return_tensors=return_tensors)

    def process_example(
        self,
        video_features: Any = None,
        caption: str | None = None,
        history: Sequence | None = None,
        question: str | None = None,
        answer: str | None = None,
    ) -> dict[str, np.ndarray]:
        """One unbatched example (what a training dataset's transform yields and [`DataCollatorForVGD`] takes).

        Returns:
            `dict` with `input_ids`, `attention_mask`, `modality_ids`, `turn_ids` (`[L]` int64), `video_features`
            (`[F, P, D]` float32), `video_mask` (`[F, P]` bool) and, when `answer` is given, `labels` (`[L]` int64).
        """
        if not isinstance(question, str):
            raise ValueError(
                f"process_example takes one example: question must be a str, got {type(question).__name__}"
            )
        videos, captions, histories, questions, answers = self._normalize_inputs(
            video_features, caption, history, question, answer, True
        )
        return self._encode(videos, captions, histories, questions, answers)[0]

    def pad(
        self,
        examples: Sequence[Mapping[str, Any]],
        padding_side: str = "left",
        return_tensors: str | None = "pt",
        pad_to_multiple_of: int | None = None,
    ) -> BatchFeature:
        """Pad unbatched examples (outputs of [`~VGDProcessor.process_example`]) into one batch.

        Text keys are padded to the longest example (`<pad>` / 0 / -100 for label keys) on `padding_side`, videos
        to the most frames and regions (zeros, `video_mask` False). Video keys are left out when no example has
        a video. Other keys present in every example (e.g. `mlm_labels`) are padded with -100.

        Returns:
            [`BatchFeature`] of `[B, L]` text arrays and `[B, F, P, D]` / `[B, F, P]` video arrays, as tensors of
            `return_tensors` (`"pt"`, `"np"`; `None` keeps numpy arrays).
        """
        batch = _pad_batch(
            examples,
            pad_token_id=self.pad_token_id,
            padding_side=padding_side,
            video_feature_dim=self.feature_extractor.video_feature_dim,
            pad_to_multiple_of=pad_to_multiple_of,
        )
        return BatchFeature(batch, tensor_type=return_tensors)

    def decode(self, token_ids, skip_special_tokens: bool = False, **kwargs) -> str:
        """`tokenizer.decode`; with `skip_special_tokens=True` the text is also stripped of the leading space that
        the processor's convention puts in front of every text piece."""
        text = self.tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens, **kwargs)
        return text.strip() if skip_special_tokens else text

    def batch_decode(self, sequences, skip_special_tokens: bool = False, **kwargs) -> list[str]:
        """`tokenizer.batch_decode`; stripped like [`~VGDProcessor.decode`] when `skip_special_tokens=True`."""
        texts = self.tokenizer.batch_decode(sequences, skip_special_tokens=skip_special_tokens, **kwargs)
        return [text.strip() for text in texts] if skip_special_tokens else texts

    # ------------------------------------------------------------------ internals

    def _normalize_inputs(self, video_features, caption, history, question, answer, single: bool):
        """Lists with one entry per example: videos, captions, histories (lists of (q, a)), questions, answers."""
        if question is None:
            raise ValueError("`question` is required (a str for one example, a list of str for a batch)")
        if single:
            if isinstance(caption, (list, tuple)) or isinstance(answer, (list, tuple)):
                raise ValueError(
                    "question is a str (one example) but caption / answer are lists: pass lists for every "
                    "argument (a batch) or for none"
                )
            if isinstance(video_features, (list, tuple)):
                raise ValueError(
                    "question is a str (one example) but video_features is a list: pass one video (array, tensor or "
                    "dict of streams) for one example, or lists for every argument (a batch)"
                )
            videos, captions, questions = [video_features], [caption], [question]
            histories = [history]
            answers = None if answer is None else [answer]
        else:
            if isinstance(question, (list, tuple)):
                questions = list(question)
            else:
                raise ValueError(f"question must be a str or a list of str, got {type(question).__name__}")
            batch = len(questions)

            def as_list(value, name):
                if value is None:
                    return [None] * batch
                if not isinstance(value, (list, tuple)):
                    raise ValueError(
                        f"question is a list (a batch) so {name} must be a list too, got {type(value).__name__}"
                    )
                if len(value) != batch:
                    raise ValueError(f"{name} has {len(value)} entries but question has {batch}")
                return list(value)

            videos = as_list(video_features, "video_features")
            captions = as_list(caption, "caption")
            histories = as_list(history, "history")
            answers = None if answer is None else as_list(answer, "answer")
        if len(questions) == 0:
            raise ValueError("empty batch: no question given")
        for index, text in enumerate(questions):
            if not isinstance(text, str):
                raise ValueError(f"example {index}: question must be a str, got {type(text).__name__}")
        for index, text in enumerate(captions):
            if text is not None and not isinstance(text, str):
                raise ValueError(f"example {index}: caption must be a str or None, got {type(text).__name__}")
        if answers is not None:
            for index, text in enumerate(answers):
                if not isinstance(text, str):
                    raise ValueError(f"example {index}: answer must be a str, got {type(text).__name__}")
        histories = [self._normalize_history(turns, index) for index, turns in enumerate(histories)]
        return videos, captions, histories, questions, answers

    @staticmethod
    def _normalize_history(turns, index: int) -> list[tuple[str, str]]:
        if turns is None:
            return []
        if isinstance(turns, (str, Mapping)) or not isinstance(turns, Sequence):
            raise ValueError(
                f"example {index}: history must be a list of (question, answer) pairs, got {type(turns).__name__}"
            )
        pairs = []
        for turn_index, turn in enumerate(turns):
            if isinstance(turn, Mapping) and "question" in turn and "answer" in turn:
                pair = (turn["question"], turn["answer"])
            elif isinstance(turn, Sequence) and not isinstance(turn, str) and len(turn) == 2:
                pair = (turn[0], turn[1])
            else:
                raise ValueError(
                    f"example {index}: history turn {turn_index} must be a (question, answer) pair or a dict with "
                    f"'question' and 'answer', got {turn!r:.80}"
                )
            if not (isinstance(pair[0], str) and isinstance(pair[1], str)):
                raise ValueError(f"example {index}: history turn {turn_index} must hold two str, got {pair!r:.80}")
            pairs.append(pair)
        return pairs

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids of every text piece, each tokenised as `" " + text.strip()` (empty text: no tokens).

        One batched tokenizer call for all pieces that are not cached.
        """
        cache = self._token_cache.entries if self.token_cache_size > 0 else None
        results: list[list[int] | None] = [None] * len(texts)
        todo_index, todo_text = [], []
        for i, text in enumerate(texts):
            if cache is not None:
                hit = cache.get(text)
                if hit is not None:
                    results[i] = hit
                    continue
            stripped = text.strip()
            if not stripped:
                results[i] = []
                continue
            todo_index.append(i)
            todo_text.append(" " + stripped)
        if todo_text:
            encoded = self._encode_texts(todo_text)
            if cache is not None and len(cache) + len(todo_text) > self.token_cache_size:
                cache.clear()
            for i, ids in zip(todo_index, encoded):
                results[i] = ids
                if cache is not None and len(cache) < self.token_cache_size:
                    cache[texts[i]] = ids
        return results

    def _encode_texts(self, texts: list[str]) -> list[list[int]]:
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None and backend.truncation is None and backend.padding is None:
            # The Rust tokenizer directly: same ids as `tokenizer(texts, add_special_tokens=False)`, less overhead.
            encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
            return [encoding.ids for encoding in encode(texts, add_special_tokens=False)]
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def _encode(self, videos, captions, histories, questions, answers) -> list[dict[str, np.ndarray]]:
        texts = []
        for b in range(len(questions)):
            texts.append(captions[b] or "")
            for turn_question, turn_answer in histories[b]:
                texts.append(turn_question)
                texts.append(turn_answer)
            texts.append(questions[b])
            if answers is not None:
                texts.append(answers[b])
        token_ids = self._tokenize(texts)

        examples = []
        position = 0
        for b in range(len(questions)):
            caption_ids = token_ids[position]
            position += 1
            history_ids = []
            for _ in histories[b]:
                history_ids.append((token_ids[position], token_ids[position + 1]))
                position += 2
            question_ids = token_ids[position]
            position += 1
            answer_ids = None
            if answers is not None:
                answer_ids = token_ids[position]
                position += 1
            video = self.feature_extractor.process_video(videos[b], b)
            examples.append(self._assemble(b, video, caption_ids, history_ids, question_ids, answer_ids))
        return examples

    def _assemble(self, index, video, caption_ids, history_ids, question_ids, answer_ids) -> dict[str, np.ndarray]:
        """Truncate one tokenised example to the limits and lay out its sequence (see the class docstring)."""
        stats = self.truncation_stats
        stats.examples += 1
        truncated = False

        # Turn limits: turn ids must stay below max_turns, and at most max_history_turns history turns.
        keep = self.max_turns - 2
        if self.max_history_turns is not None:
            keep = min(keep, self.max_history_turns)
        if len(history_ids) > keep:
            stats.history_turns_dropped += len(history_ids) - keep
            history_ids = history_ids[len(history_ids) - keep :]
            truncated = True

        budget = self.max_text_length - (1 if answer_ids is not None else 0)  # one position for the collator's <cls>
        fixed = 1 + 1 + len(question_ids) + 1  # <cap>, <usr> question, <sys>
        if fixed > budget:
            raise ValueError(
                f"example {index}: the question has {len(question_ids)} tokens; with <cap>, <usr> and <sys> it needs "
                f"{fixed} text positions but max_text_length={self.max_text_length} leaves {budget} "
                "(the question is never truncated)"
            )
        eos = [self.eos_token_id]
        if answer_ids is not None:
            room = budget - fixed
            if len(answer_ids) + 1 > room:
                if room < 1:
                    raise ValueError(
                        f"example {index}: no room for the answer: the question block takes {fixed} of the {budget} "
                        f"text positions (max_text_length={self.max_text_length}, one kept for <cls>)"
                    )
                stats.answers_truncated += 1
                stats.answer_tokens_dropped += len(answer_ids) - room
                answer_ids = answer_ids[:room]
                eos = []
                truncated = True
            fixed += len(answer_ids) + len(eos)

        room = budget - fixed
        turn_lengths = [2 + len(q) + len(a) for q, a in history_ids]
        history_length = sum(turn_lengths)
        dropped = 0
        while dropped < len(history_ids) and len(caption_ids) + history_length > room:
            history_length -= turn_lengths[dropped]
            dropped += 1
        if dropped:
            stats.history_turns_dropped += dropped
            history_ids = history_ids[dropped:]
            truncated = True
        if len(caption_ids) + history_length > room:
            cut = room - history_length
            stats.caption_tokens_dropped += len(caption_ids) - cut
            caption_ids = caption_ids[:cut]
            truncated = True
        stats.examples_truncated += int(truncated)

        # Layout: (length, modality, turn) segments, then the ids.
        num_video_tokens = video.shape[0] * video.shape[1]
        text = [self.cap_token_id, *caption_ids]
        lengths = [num_video_tokens, len(text)]
        modalities = [MODALITY_VIS, MODALITY_CAP]
        turns = [0, 0]
        for turn, (turn_question, turn_answer) in enumerate(history_ids, start=1):
            text.append(self.usr_token_id)
            text.extend(turn_question)
            text.append(self.sys_token_id)
            text.extend(turn_answer)
            lengths += [1 + len(turn_question), 1 + len(turn_answer)]
            modalities += [MODALITY_USR, MODALITY_SYS]
            turns += [turn, turn]
        current_turn = len(history_ids) + 1
        text.append(self.usr_token_id)
        text.extend(question_ids)
        text.append(self.sys_token_id)
        num_target = 0
        if answer_ids is not None:
            target = [*answer_ids, *eos]
            num_target = len(target)
            text.extend(target)
        lengths += [1 + len(question_ids), 1 + num_target]
        modalities += [MODALITY_USR, MODALITY_SYS]
        turns += [current_turn, current_turn]

        length = num_video_tokens + len(text)
        input_ids = np.empty(length, dtype=np.int64)
        input_ids[:num_video_tokens] = self.video_token_id
        input_ids[num_video_tokens:] = text
        example = {
            "input_ids": input_ids,
            "attention_mask": np.ones(length, dtype=np.int64),
            "modality_ids": np.repeat(np.asarray(modalities, dtype=np.int64), lengths),
            "turn_ids": np.repeat(np.asarray(turns, dtype=np.int64), lengths),
            "video_features": video,
            "video_mask": np.ones(video.shape[:2], dtype=bool),
        }
        if answer_ids is not None:
            labels = np.full(length, IGNORE_INDEX, dtype=np.int64)
            labels[length - num_target :] = input_ids[length - num_target :]
            example["labels"] = labels
        return example


def _as_1d(value: Any, key: str, index: int) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.ndim != 1:
        raise ValueError(f"example {index}: {key} must be 1-D (one unbatched example), got shape {tuple(array.shape)}")
    return array


def _video_of(example: Mapping[str, Any], index: int, video_feature_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """`(video_features [F, P, D] float32, video_mask [F, P] bool)` of one unbatched example."""
    features = example.get("video_features")
    if features is None:
        return np.zeros((0, 1, video_feature_dim), np.float32), np.zeros((0, 1), bool)
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    features = np.asarray(features, dtype=np.float32)
    if features.ndim == 2:
        features = features[:, None, :]
    if features.ndim != 3:
        raise ValueError(
            f"example {index}: video_features must be [frames, regions, dim] for one example, "
            f"got {tuple(features.shape)}"
        )
    mask = example.get("video_mask")
    if mask is None:
        mask = np.ones(features.shape[:2], dtype=bool)
    else:
        if isinstance(mask, torch.Tensor):
            mask = mask.detach().cpu().numpy()
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim == 1 and features.shape[1] == 1:
            mask = mask[:, None]
        if mask.shape != features.shape[:2]:
            raise ValueError(
                f"example {index}: video_mask has shape {tuple(mask.shape)} but video_features {tuple(features.shape)}"
            )
    return features, mask


def _pad_batch(
    examples: Sequence[Mapping[str, Any]],
    pad_token_id: int,
    padding_side: str,
    video_feature_dim: int,
    pad_to_multiple_of: int | None = None,
    allocate_video: Callable[[tuple[int, ...]], np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Pad unbatched examples into `[B, L]` text arrays and `[B, F, P, D]` / `[B, F, P]` video arrays (numpy)."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if len(examples) == 0:
        raise ValueError("cannot pad an empty list of examples")
    missing = [key for key in TEXT_KEYS if key not in examples[0]]
    if missing:
        raise ValueError(
            f"example 0 lacks {missing}: examples must be VGDProcessor outputs with keys {list(TEXT_KEYS)}"
        )
    text_keys = [key for key in examples[0] if key not in ("video_features", "video_mask")]
    for index, example in enumerate(examples):
        keys = [key for key in example if key not in ("video_features", "video_mask")]
        if sorted(keys) != sorted(text_keys):
            raise ValueError(f"example {index} has keys {sorted(keys)} but example 0 has {sorted(text_keys)}")

    columns = {key: [_as_1d(example[key], key, index) for index, example in enumerate(examples)] for key in text_keys}
    lengths = [len(ids) for ids in columns["input_ids"]]
    for key in text_keys:
        for index, values in enumerate(columns[key]):
            if len(values) != lengths[index]:
                raise ValueError(
                    f"example {index}: {key} has {len(values)} entries but input_ids has {lengths[index]}"
                )
    max_length = max(lengths)
    if pad_to_multiple_of:
        max_length = int(math.ceil(max_length / pad_to_multiple_of) * pad_to_multiple_of)

    batch: dict[str, np.ndarray] = {}
    for key in text_keys:
        pad_value = pad_token_id if key == "input_ids" else TEXT_PAD_VALUES.get(key, IGNORE_INDEX)
        array = np.full((len(examples), max_length), pad_value, dtype=np.int64)
        for i, values in enumerate(columns[key]):
            if padding_side == "left":
                array[i, max_length - len(values) :] = values
            else:
                array[i, : len(values)] = values
        batch[key] = array

    videos = [_video_of(example, index, video_feature_dim) for index, example in enumerate(examples)]
    with_video = [i for i, (features, _) in enumerate(videos) if features.shape[0] > 0]
    dims = {videos[i][0].shape[2] for i in with_video}
    if len(dims) > 1:
        first = with_video[0]
        first_dim = videos[first][0].shape[2]
        other = next(i for i in with_video if videos[i][0].shape[2] != first_dim)
        raise ValueError(
            f"examples of one batch have different video feature dims: example {first} has "
            f"{first_dim}, example {other} has {videos[other][0].shape[2]}"
        )
    if dims:
        dim = dims.pop()
        features, mask = _pad_videos(
            [f if f.shape[0] > 0 else np.zeros((0, 1, dim), np.float32) for f, _ in videos],
            [m for _, m in videos],
            dim,
            allocate_video,
        )
        batch["video_features"] = features
        batch["video_mask"] = mask
    return batch


@dataclasses.dataclass
class DataCollatorForVGD:
    r"""
    Pads unbatched [`VGDProcessor`] outputs on the right and adds the labels of VGD-GPT2's auxiliary objectives.

    Returns a dict of torch tensors: `input_ids`, `attention_mask`, `modality_ids`, `turn_ids`, `labels` (if the
    examples have them) `[B, L]` int64; `video_features` `[B, F, P, D]` float32 and `video_mask` `[B, F, P]` bool
    (absent when no example has a video); and, for each objective whose probability is > 0:

    - `mvt_labels` `[B]` float32 (video-text matching): every sequence gets a `<cls>` token appended (modality
      SYS, turn = the sequence's last turn, attention 1, label -100). With probability `mvt_probability` an example
      becomes a negative (label 0.0): its text is recombined with the video of another example of the batch whose
      video differs (chosen uniformly; the `<video>` placeholders are rebuilt for that video). A negative has
      `labels` and `mlm_labels` all -100 and no `mvm_mask`: it only feeds the matching loss. An example without a
      video, or without a partner with a different video (e.g. batch size 1), stays positive (1.0), and at least
      one example of every batch stays positive.
    - `mlm_labels` `[B, L]` int64 (masked language modelling): each context text token of a positive example
      (caption, history questions and answers, current question; never markers, `<video>`, the target answer, its
      `<|endoftext|>`, `<cls>` or padding) is replaced by `<mask>` in `input_ids` with probability
      `mlm_probability`; `mlm_labels` holds its original id there and -100 elsewhere (no shift).
    - `mvm_mask` `[B, F, P]` bool (masked visual modelling): each real region (`video_mask` True) of a positive
      example with probability `mvm_probability`. The collator does not change `video_features`; the model zeros
      the masked regions' inputs and reconstructs them.

    At least one: a positive example with something maskable gets at least one masked token (MLM) and one masked
    region (MVM) even if the random draws chose none, so a batch has masked items unless none of its positive
    examples has context text / video. The key is present whenever its probability is > 0 (stable batch keys);
    when nothing could be masked it is all -100 / all False, and the model then returns a zero loss for it.
    A probability of 0 removes the key (and, for MVT, the `<cls>` token).

    Randomness: a `numpy.random.Generator` owned by the collator. In the main process it is seeded with `seed`,
    so the sequence of batches is deterministic given the seed and the order of calls. Inside a DataLoader worker
    it is re-seeded on first use from `(seed, worker_info.seed)`: distinct per worker and per epoch, and
    deterministic when the main process's torch seed is fixed (the DataLoader derives `worker_info.seed` from it,
    e.g. via `transformers.set_seed`). `reseed(seed)` restarts the sequence.

    Args:
        processor ([`VGDProcessor`]): gives the special-token ids and the feature dim.
        mlm_probability, mvm_probability, mvt_probability (`float`, default 0.15 each): in [0, 1].
        seed (`int`, default 0).
        pad_to_multiple_of (`int`, *optional*): pad the text length L to a multiple of this.
    """

    processor: VGDProcessor
    mlm_probability: float = 0.15
    mvm_probability: float = 0.15
    mvt_probability: float = 0.15
    seed: int = 0
    pad_to_multiple_of: int | None = None

    def __post_init__(self):
        for name in ("mlm_probability", "mvm_probability", "mvt_probability"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.pad_to_multiple_of is not None and int(self.pad_to_multiple_of) < 1:
            raise ValueError(f"pad_to_multiple_of must be a positive integer, got {self.pad_to_multiple_of}")
        self._rng: np.random.Generator | None = None
        self._rng_owner: tuple | None = None

    # ------------------------------------------------------------------ randomness

    def reseed(self, seed: int | None = None) -> None:
        """Restart the random sequence (from `seed`, or from the collator's `seed`)."""
        if seed is not None:
            self.seed = seed
        self._rng = None
        self._rng_owner = None

    def _generator(self) -> np.random.Generator:
        info = torch.utils.data.get_worker_info()
        owner = None if info is None else (info.id, info.seed)
        if self._rng is None or owner != self._rng_owner:
            entropy = [int(self.seed)] if info is None else [int(self.seed), int(info.seed) % (2**63)]
            self._rng = np.random.default_rng(np.random.SeedSequence(entropy))
            self._rng_owner = owner
        return self._rng

    # ------------------------------------------------------------------ collation

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if len(examples) == 0:
            raise ValueError("DataCollatorForVGD got an empty list of examples")
        rng = self._generator()
        processor = self.processor
        dim = processor.feature_extractor.video_feature_dim
        examples = [self._normalize(example, index, dim) for index, example in enumerate(examples)]
        batch_size = len(examples)
        has_labels = "labels" in examples[0]

        positive = np.ones(batch_size, dtype=bool)
        if self.mvt_probability > 0:
            examples, positive = self._make_negatives(examples, rng)
            examples = [self._append_cls(example) for example in examples]

        shared = {}
        if torch.utils.data.get_worker_info() is not None:
            # In a DataLoader worker, write the (large) video batch straight into shared memory, as torch's
            # default_collate does: sending the batch to the main process then needs no extra copy.
            def allocate_video(shape):
                storage = torch.UntypedStorage._new_shared(int(np.prod(shape)) * 4)
                shared["video_features"] = torch.empty(0, dtype=torch.float32).set_(storage).view(shape)
                return shared["video_features"].numpy()

        else:
            allocate_video = None
        batch = _pad_batch(
            examples,
            pad_token_id=processor.pad_token_id,
            padding_side="right",
            video_feature_dim=dim,
            pad_to_multiple_of=self.pad_to_multiple_of,
            allocate_video=allocate_video,
        )

        if self.mlm_probability > 0:
            input_ids = batch["input_ids"]
            candidates = (batch["modality_ids"] != MODALITY_VIS) & (batch["attention_mask"] == 1)
            candidates &= ~np.isin(input_ids, self._special_ids())
            if has_labels:
                candidates &= batch["labels"] == IGNORE_INDEX
            candidates &= positive[:, None]
            chosen = self._draw(rng, candidates, self.mlm_probability)
            mlm_labels = np.full_like(input_ids, IGNORE_INDEX)
            mlm_labels[chosen] = input_ids[chosen]
            input_ids[chosen] = processor.mask_token_id
            batch["mlm_labels"] = mlm_labels

        if self.mvm_probability > 0 and "video_mask" in batch:
            candidates = batch["video_mask"] & positive[:, None, None]
            batch["mvm_mask"] = self._draw(rng, candidates, self.mvm_probability)

        if self.mvt_probability > 0:
            batch["mvt_labels"] = positive.astype(np.float32)

        return {key: shared[key] if key in shared else torch.from_numpy(value) for key, value in batch.items()}

    def _special_ids(self) -> np.ndarray:
        processor = self.processor
        return np.asarray(
            [
                processor.video_token_id,
                processor.cap_token_id,
                processor.usr_token_id,
                processor.sys_token_id,
                processor.cls_token_id,
                processor.mask_token_id,
                processor.pad_token_id,
                processor.eos_token_id,
            ],
            dtype=np.int64,
        )

    @staticmethod
    def _draw(rng: np.random.Generator, candidates: np.ndarray, probability: float) -> np.ndarray:
        """Bernoulli(probability) over the True entries of `candidates` `[B, ...]`, at least one per row that has
        candidates."""
        chosen = (rng.random(candidates.shape) < probability) & candidates
        flat_candidates = candidates.reshape(len(candidates), -1)
        flat_chosen = chosen.reshape(len(chosen), -1)
        for row in np.flatnonzero(flat_candidates.any(axis=1) & ~flat_chosen.any(axis=1)):
            positions = np.flatnonzero(flat_candidates[row])
            flat_chosen[row, positions[rng.integers(len(positions))]] = True
        return chosen

    def _normalize(self, example: Mapping[str, Any], index: int, dim: int) -> dict[str, np.ndarray]:
        missing = [key for key in TEXT_KEYS if key not in example]
        if missing:
            raise ValueError(
                f"example {index} lacks {missing}: DataCollatorForVGD takes unbatched VGDProcessor outputs "
                "(processor.process_example(...))"
            )
        out = {key: _as_1d(example[key], key, index).astype(np.int64, copy=False) for key in TEXT_KEYS}
        if "labels" in example:
            out["labels"] = _as_1d(example["labels"], "labels", index).astype(np.int64, copy=False)
        out["video_features"], out["video_mask"] = _video_of(example, index, dim)
        num_video = int(out["video_mask"].sum())
        if num_video and not (out["input_ids"][:num_video] == self.processor.video_token_id).all():
            raise ValueError(
                f"example {index}: its video has {num_video} regions but its input_ids do not start with "
                f"{num_video} <video> placeholders"
            )
        return out

    def _make_negatives(self, examples: list[dict], rng: np.random.Generator) -> tuple[list[dict], np.ndarray]:
        """Turn about `mvt_probability` of the examples into negatives (the video of another example)."""
        batch_size = len(examples)
        draws = rng.random(batch_size) < self.mvt_probability
        positive = np.ones(batch_size, dtype=bool)
        if batch_size < 2 or not draws.any():
            return examples, positive
        has_video = [bool(example["video_mask"].any()) for example in examples]
        signatures = [_video_signature(example["video_features"]) for example in examples]

        def differs(i: int, j: int) -> bool:
            a, b = examples[i]["video_features"], examples[j]["video_features"]
            if signatures[i] != signatures[j]:
                return True
            return not (a is b or np.array_equal(a, b))

        out = list(examples)
        for i in np.flatnonzero(draws):
            if not has_video[i]:
                continue
            if positive.sum() == 1:  # keep at least one positive example (a response loss over no tokens is NaN)
                break
            partners = [j for j in range(batch_size) if j != i and has_video[j] and differs(i, j)]
            if not partners:
                continue
            j = partners[rng.integers(len(partners))]
            out[i] = self._recombine(examples[i], examples[j])
            positive[i] = False
        return out, positive

    def _recombine(self, text_example: dict, video_example: dict) -> dict:
        """The text of `text_example` after the video of `video_example`; every label -100."""
        num_old = int(text_example["video_mask"].sum())
        num_new = int(video_example["video_mask"].sum())
        new = {
            "input_ids": np.concatenate(
                [np.full(num_new, self.processor.video_token_id, np.int64), text_example["input_ids"][num_old:]]
            ),
            "attention_mask": np.concatenate([np.ones(num_new, np.int64), text_example["attention_mask"][num_old:]]),
            "modality_ids": np.concatenate(
                [np.full(num_new, MODALITY_VIS, np.int64), text_example["modality_ids"][num_old:]]
            ),
            "turn_ids": np.concatenate([np.zeros(num_new, np.int64), text_example["turn_ids"][num_old:]]),
            "video_features": video_example["video_features"],
            "video_mask": video_example["video_mask"],
        }
        if "labels" in text_example:
            new["labels"] = np.full(len(new["input_ids"]), IGNORE_INDEX, np.int64)
        return new

    def _append_cls(self, example: dict) -> dict:
        example = dict(example)
        last_turn = example["turn_ids"][-1] if len(example["turn_ids"]) else 0
        example["input_ids"] = np.append(example["input_ids"], self.processor.cls_token_id)
        example["attention_mask"] = np.append(example["attention_mask"], 1)
        example["modality_ids"] = np.append(example["modality_ids"], MODALITY_SYS)
        example["turn_ids"] = np.append(example["turn_ids"], last_turn)
        if "labels" in example:
            example["labels"] = np.append(example["labels"], IGNORE_INDEX)
        return example


def _video_signature(features: np.ndarray) -> tuple:
    """A cheap fingerprint of a video (shape and a few values): different fingerprints mean different videos."""
    flat = features.reshape(-1)
    if flat.size == 0:
        return (features.shape,)
    picks = np.linspace(0, flat.size - 1, num=min(16, flat.size)).astype(np.intp)
    return (features.shape, flat[picks].tobytes())


# Hub / AutoProcessor integration: `save_pretrained` copies this file (and the configuration it imports) and
# writes `auto_map`; the feature extractor is also findable by name for `VGDProcessor.from_pretrained` in-process.
VGDVideoFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
VGDProcessor.register_for_auto_class("AutoProcessor")
AutoFeatureExtractor.register(VGDGPT2Config, VGDVideoFeatureExtractor, exist_ok=True)


__all__ = [
    "AVSD_STREAM_ORDER",
    "DataCollatorForVGD",
    "VGDProcessor",
    "VGDTruncationStats",
    "VGDVideoFeatureExtractor",
    "uniform_frame_indices",
]
