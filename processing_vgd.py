"""Processor of VGD-GPT2 (Le & Hoi, ACL 2020), following the contract of `docs/design.md`.

[`VGDProcessor`] tokenises caption, dialogue history, question and (for training) answer, lays out one sequence per
example (`<video>` placeholders first, then the text), truncates what does not fit and returns the tensors the model
consumes (`input_ids`, `attention_mask`, `modality_ids`, `turn_ids`, `video_features`, `video_mask`, `labels`).
Video features are prepared by [`VGDVideoFeatureExtractor`] (`feature_extraction_vgd.py`). `pad_examples` pads
unbatched examples for the processor and for the training collator (`avsd_dataset/collator.py`, not part of a saved
model).
"""


from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import AutoFeatureExtractor, GPT2Tokenizer
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging


try:  # package layout (Hub / `trust_remote_code`): the files sit next to this one
    from .chat_template_vgd import VGD_CHAT_TEMPLATE, call_processor, conversation_to_example
    from .configuration_vgd_gpt2 import MODALITY_CAP, MODALITY_SYS, MODALITY_USR, MODALITY_VIS, SPECIAL_TOKENS, VGDGPT2Config
    from .feature_extraction_vgd import AVSD_STREAM_ORDER, VGDVideoFeatureExtractor, _pad_videos, uniform_frame_indices
    from .video_processing_vgd import VGDVideoProcessor, pad_clip_batch
except ImportError:  # top-level module layout (the repository root on sys.path)
    from chat_template_vgd import VGD_CHAT_TEMPLATE, call_processor, conversation_to_example
    from configuration_vgd_gpt2 import MODALITY_CAP, MODALITY_SYS, MODALITY_USR, MODALITY_VIS, SPECIAL_TOKENS, VGDGPT2Config
    from feature_extraction_vgd import AVSD_STREAM_ORDER, VGDVideoFeatureExtractor, _pad_videos, uniform_frame_indices
    from video_processing_vgd import VGDVideoProcessor, pad_clip_batch

logger = logging.get_logger(__name__)


# ---------------------------------------------------------------------------------------------- padding

IGNORE_INDEX = -100

# Every key of one unbatched processor output / one collator input.
TEXT_KEYS = ("input_ids", "attention_mask", "modality_ids", "turn_ids")
TEXT_PAD_VALUES = {
    "attention_mask": 0,
    "modality_ids": 0,
    "turn_ids": 0,
    "labels": IGNORE_INDEX,
    "mlm_labels": IGNORE_INDEX,
}


def as_1d(value: Any, key: str, index: int) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.ndim != 1:
        raise ValueError(f"example {index}: {key} must be 1-D (one unbatched example), got shape {tuple(array.shape)}")
    return array


def example_video(example: Mapping[str, Any], index: int, video_feature_dim: int) -> tuple[np.ndarray, np.ndarray]:
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


# Video keys of one unbatched example: pre-extracted features, or the decoded clips of a video file.
FEATURE_KEYS = ("video_features", "video_mask")
CLIP_KEYS = ("pixel_values_videos", "video_clip_mask")


def pad_clips(examples: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """`pixel_values_videos` `[B, C, T, 3, H, W]` (zero clips appended) and `video_clip_mask` `[B, C]` (False there)
    from unbatched examples with `pixel_values_videos` `[C_i, T, 3, H, W]` and optionally `video_clip_mask` `[C_i]`."""
    without = [i for i, example in enumerate(examples) if example.get("pixel_values_videos") is None]
    if without:
        with_clips = next(i for i in range(len(examples)) if i not in without)
        raise ValueError(
            f"example {with_clips} has pixel_values_videos (a video file) but example {without[0]} has none: one batch "
            "takes video files in every example or in none (put features and files in separate batches)"
        )
    clips, masks = [], []
    for index, example in enumerate(examples):
        values = torch.as_tensor(example["pixel_values_videos"])
        if values.ndim != 5:
            raise ValueError(f"example {index}: pixel_values_videos must be [clips, frames, 3, height, width] for one example, got {tuple(values.shape)}")
        if clips and values.shape[1:] != clips[0].shape[1:]:
            raise ValueError(
                f"example {index}: clips of shape {tuple(values.shape[1:])} but example 0 has {tuple(clips[0].shape[1:])} "
                "(one batch needs one video processor setting)"
            )
        mask = example.get("video_clip_mask")
        mask = torch.ones(len(values), dtype=torch.bool) if mask is None else torch.as_tensor(mask, dtype=torch.bool)
        if mask.shape != (len(values),):
            raise ValueError(f"example {index}: video_clip_mask has shape {tuple(mask.shape)} but there are {len(values)} clips")
        clips.append(values)
        masks.append(mask)
    pixel_values, clip_mask = pad_clip_batch(clips, masks)
    return {"pixel_values_videos": pixel_values.numpy(), "video_clip_mask": clip_mask.numpy()}


def pad_examples(
    examples: Sequence[Mapping[str, Any]],
    pad_token_id: int,
    padding_side: str,
    video_feature_dim: int,
    pad_to_multiple_of: int | None = None,
    allocate_video: Callable[[tuple[int, ...]], np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Pad unbatched examples (each a dict of 1-D arrays, [`VGDProcessor.process_example`] outputs) into `[B, L]` text arrays and `[B, F, P, D]` / `[B, F, P]` video arrays (numpy), or, for examples made from video files, `[B, C, T, 3, H, W]` clips and their `[B, C]` mask."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if len(examples) == 0:
        raise ValueError("cannot pad an empty list of examples")
    missing = [key for key in TEXT_KEYS if key not in examples[0]]
    if missing:
        raise ValueError(
            f"example 0 lacks {missing}: examples must be VGDProcessor outputs with keys {list(TEXT_KEYS)}"
        )
    text_keys = [key for key in examples[0] if key not in FEATURE_KEYS + CLIP_KEYS]
    for index, example in enumerate(examples):
        keys = [key for key in example if key not in FEATURE_KEYS + CLIP_KEYS]
        if sorted(keys) != sorted(text_keys):
            raise ValueError(f"example {index} has keys {sorted(keys)} but example 0 has {sorted(text_keys)}")

    columns = {key: [as_1d(example[key], key, index) for index, example in enumerate(examples)] for key in text_keys}
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

    if any(example.get("pixel_values_videos") is not None for example in examples):
        batch.update(pad_clips(examples))
        return batch
    videos = [example_video(example, index, video_feature_dim) for index, example in enumerate(examples)]
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
        video_processor ([`VGDVideoProcessor`], *optional*):
            Decodes video files / frames arrays into clips for a model with a video backbone (`videos=`); also its
            settings dict (from `processor_config.json`). Without a recorded backbone (the default) the processor
            holds a [`NoVideoProcessor`] (`video_backbone` is `None`), which needs neither torchvision nor av.
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
        video_processor=None,
        max_text_length: int | None = None,
        max_history_turns: int | None = None,
        max_turns: int = 16,
        token_cache_size: int = 0,
        chat_template=None,
    ):
        if tokenizer is None or feature_extractor is None:
            raise ValueError("VGDProcessor needs both a `feature_extractor` and a `tokenizer`")
        unk_id = tokenizer.unk_token_id
        for name, token in SPECIAL_TOKENS.items():
            # `tokenizer.video_token_id` & co. where the tokenizer registered them (`extra_special_tokens`); the token's
            # id in the vocabulary for tokenizers saved before (their extra tokens were a plain list)
            token_id = getattr(tokenizer, f"{name}_id", None) if getattr(tokenizer, name, None) == token else None
            if token_id is None:
                token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id is None or (token_id == unk_id and token != tokenizer.unk_token):
                raise ValueError(
                    f"the tokenizer has no {token!r} token; build the processor with "
                    "VGDProcessor.from_gpt2_pretrained(...) which adds the special tokens of docs/design.md"
                )
            setattr(self, name, token)  # processor.video_token, processor.video_token_id, ... (as LLaVA-NeXT-Video's)
            setattr(self, f"{name}_id", int(token_id))
        if tokenizer.vocab_size < 256:  # a byte-level BPE holds at least the 256 bytes
            raise ValueError(
                f"the tokenizer loaded from {tokenizer.name_or_path!r} has a vocabulary of {tokenizer.vocab_size} "
                "tokens (plus the special tokens): its vocabulary files (tokenizer.json, or vocab.json and merges.txt) "
                "are missing or empty. A GPT-2 tokenizer has at least 256; save the processor again with "
                "processor.save_pretrained(folder)"
            )
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
        self._token_cache = _TokenCache(self.token_cache_size)
        # The video processor is not one of ProcessorMixin's sub-processor attributes (see `get_attributes`); it is
        # built only when a video backbone is recorded, so that a features-only processor needs no torchvision / av.
        self.video_processor = _video_processor_from_settings(video_processor)
        super().__init__(feature_extractor, tokenizer, chat_template=chat_template or VGD_CHAT_TEMPLATE)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_gpt2_pretrained(
        cls,
        pretrained_model_name_or_path: str,
        video_feature_dim: int | None = None,
        max_video_frames: int = 256,
        video_pooling: str = "spatiotemporal",
        stream_order: Sequence[str] | None = None,
        video_backbone: str | dict | None = None,
        num_video_regions: int | None = None,
        **kwargs,
    ) -> "VGDProcessor":
        """Build a processor from a plain GPT-2 tokenizer (a Hub id such as `"gpt2"` or a local folder).

        Loads the tokenizer with `GPT2Tokenizer.from_pretrained`, adds `<video>`, `<cap>`, `<usr>`, `<sys>`,
        `<cls>`, `<mask>`, `<pad>` (in this order, as the next free ids) and sets `pad_token`, `mask_token`,
        `cls_token` (eos / bos stay `<|endoftext|>`), then builds a [`VGDVideoFeatureExtractor`] with the given
        `video_feature_dim`, `max_video_frames`, `video_pooling`, `stream_order` and `num_video_regions` (P, for
        `video_pooling="spatial_and_temporal"`; defaults to the backbone's P with `video_backbone`).

        `video_feature_dim` defaults to 2048, or to the backbone's D with `video_backbone`: a name or spec of
        `video_backbone_vgd.resolve_video_backbone` (e.g. `"r3d_18"`, or `resolve_video_backbone("r3d_18",
        pretrained=False)` for random weights), which gives the processor a [`VGDVideoProcessor`] with that
        backbone's clip length, sizes and normalisation, so that `processor(videos=[...])` works.

        Keyword arguments named like a [`VGDProcessor`] argument (`max_text_length`, `max_history_turns`,
        `max_turns`, `token_cache_size`) go to the processor; the others to `GPT2Tokenizer.from_pretrained`
        (e.g. `cache_dir`, `revision`, `local_files_only`).
        """
        processor_args = ("max_text_length", "max_history_turns", "max_turns", "token_cache_size")
        processor_kwargs = {key: kwargs.pop(key) for key in processor_args if key in kwargs}
        standard = ("cls_token", "mask_token", "pad_token")
        # the model-specific tokens by name (`tokenizer.video_token`, saved as a dict in tokenizer_config.json)
        named = {name: token for name, token in SPECIAL_TOKENS.items() if name not in standard}
        tokenizer = GPT2Tokenizer.from_pretrained(pretrained_model_name_or_path, extra_special_tokens=named, **kwargs)
        new_tokens = [token for token in SPECIAL_TOKENS.values() if token not in tokenizer.get_vocab()]
        if new_tokens:
            tokenizer.add_tokens(new_tokens, special_tokens=True)  # in SPECIAL_TOKENS' order: the ids of docs/design.md
        tokenizer.add_special_tokens({name: SPECIAL_TOKENS[name] for name in standard})
        video_processor = None
        if video_backbone is not None:
            try:
                from .video_backbone_vgd import resolve_video_backbone, video_processor_settings
            except ImportError:
                from video_backbone_vgd import resolve_video_backbone, video_processor_settings
            spec = resolve_video_backbone(video_backbone) if isinstance(video_backbone, str) else dict(video_backbone)
            if video_feature_dim is not None and int(video_feature_dim) != spec["feature_dim"]:
                raise ValueError(
                    f"video_feature_dim={video_feature_dim} differs from the {spec['feature_dim']}-dim features of "
                    f"the video backbone {spec['name']!r}"
                )
            video_feature_dim = spec["feature_dim"]
            max_clips = max_video_frames
            if video_pooling == "spatial_and_temporal":
                if num_video_regions is not None and int(num_video_regions) != spec["num_regions"]:
                    raise ValueError(
                        f"num_video_regions={num_video_regions} differs from the {spec['num_regions']} regions of the "
                        f"video backbone {spec['name']!r}"
                    )
                num_video_regions = spec["num_regions"]
                max_clips = max_video_frames - num_video_regions  # the region tokens take the first rows
            video_processor = VGDVideoProcessor(**video_processor_settings(spec), max_clips=max(1, max_clips))
        feature_extractor = VGDVideoFeatureExtractor(
            video_feature_dim=2048 if video_feature_dim is None else video_feature_dim,
            max_video_frames=max_video_frames,
            video_pooling=video_pooling,
            stream_order=stream_order,
            num_video_regions=num_video_regions,
        )
        return cls(
            feature_extractor=feature_extractor, tokenizer=tokenizer, video_processor=video_processor, **processor_kwargs
        )

    @classmethod
    def get_attributes(cls):
        """`feature_extractor` and `tokenizer` only. transformers checks every sub-processor attribute against its
        own base classes; for a `video_processor` that lookup needs torchvision (without it transformers fails with
        "IMAGE_PROCESSOR_MAPPING has no attribute '_extra_content'"), and a features-only model must load without
        torchvision. `video_processor` is still an `__init__` argument, saved in `processor_config.json`."""
        return ["feature_extractor", "tokenizer"]

    @classmethod
    def _load_sub_processors(cls, pretrained_model_name_or_path, **kwargs):
        """The feature extractor and the tokenizer saved in the folder.

        The concrete classes, not AutoFeatureExtractor / AutoTokenizer: those read the folder's config.json, whose
        auto_map (custom code) makes transformers ask for trust_remote_code although VGDProcessor is already
        imported (e.g. `VGDProcessor.from_pretrained("outputs/demo")`)."""
        hub_kwargs = {key: kwargs[key] for key in _HUB_KWARGS if key in kwargs}
        feature_extractor = VGDVideoFeatureExtractor.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        tokenizer = GPT2Tokenizer.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        return feature_extractor, tokenizer

    @classmethod
    def _resolve_subprocessors(cls, pretrained_model_name_or_path, processor_dict, **kwargs):
        """transformers >= 5.25: the sub-processors for `from_dict`. The video processor stays the settings dict of
        `processor_config.json` (or absent), which `__init__` turns into a [`VGDVideoProcessor`] when it records a
        video backbone."""
        processor_dict = dict(processor_dict or {})
        processor_dict["feature_extractor"], processor_dict["tokenizer"] = cls._load_sub_processors(
            pretrained_model_name_or_path, **kwargs
        )
        for key in (*_HUB_KWARGS, "return_unused_kwargs", "feature_extractor", "tokenizer"):
            kwargs.pop(key, None)
        return processor_dict, kwargs

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        """transformers < 5.25: the feature extractor and the tokenizer saved in the folder, and the video processor's
        settings from `processor_config.json` (`None` for processors saved before video files were supported)."""
        feature_extractor, tokenizer = cls._load_sub_processors(pretrained_model_name_or_path, **kwargs)
        return [feature_extractor, tokenizer, (processor_dict or {}).get("video_processor")]

    def to_dict(self):
        """[`ProcessorMixin.to_dict`], with the video processor's settings when it records a video backbone."""
        output = super().to_dict()
        output.pop("video_processor", None)
        video_settings = self.video_processor.to_dict()
        if video_settings.get("video_backbone") is not None:
            output["video_processor"] = video_settings
        return output

    # ------------------------------------------------------------------ special tokens

    @property
    def eos_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def bos_token_id(self) -> int:
        return self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.eos_token_id

    def special_token_ids(self) -> dict[str, int]:
        """The special-token ids under the [`VGDGPT2Config`] field names.

        For the model builder: `config.update(processor.special_token_ids())`.
        """
        names = [f"{name}_id" for name in SPECIAL_TOKENS] + ["eos_token_id", "bos_token_id"]
        return {name: getattr(self, name) for name in names}

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "modality_ids", "turn_ids", "video_features", "video_mask", "pixel_values_videos", "video_clip_mask"]

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
        max_new_tokens: int | None = None,
        videos: Any = None,
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
            max_new_tokens (`int`, *optional*): for a generation prompt (no `answer`), keep this many text positions
                free for the generated tokens (the prompt is truncated as described above to
                `max_text_length - max_new_tokens`), so that `model.generate(..., max_new_tokens=...)` has room.
            videos: instead of `video_features`, for a model whose config records a video backbone: per example a
                video file path or a frames array `[T, H, W, 3]` uint8 (see [`VGDVideoProcessor`]). Gives
                `pixel_values_videos` `[B, clips, clip_length, 3, H, W]` and `video_clip_mask` `[B, clips]` in place of
                `video_features` / `video_mask` (needs `return_tensors`); the model's backbone computes the features.

        Returns:
            [`BatchFeature`]; batched: `input_ids`, `attention_mask`, `modality_ids`, `turn_ids` `[B, L]` (pads:
            `<pad>`, 0, 0, 0), `video_features` `[B, F, P, D]` float32 (zero padded) and `video_mask` `[B, F, P]`
            bool (both absent when no example has a video), `labels` `[B, L]` (-100 except the answer and its
            `<|endoftext|>`) when `answer` is given.
        """
        single = isinstance(question, str)
        if max_new_tokens is not None and (isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0):
            raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
        reserved = max_new_tokens if answer is None and max_new_tokens is not None else 0
        if videos is not None:
            return self._call_with_videos(
                videos, video_features, caption, history, question, answer, return_tensors, padding_side, reserved
            )
        videos, captions, histories, questions, answers = self._normalize_inputs(
            video_features, caption, history, question, answer, single
        )
        examples = self._encode(videos, captions, histories, questions, answers, reserved_positions=reserved)
        if return_tensors is None:
            if single:
                return BatchFeature(examples[0])
            return BatchFeature({key: [example[key] for example in examples] for key in examples[0]})
        return self.pad(examples, padding_side=padding_side, return_tensors=return_tensors)

    def apply_chat_template(
        self,
        conversation,
        chat_template: str | None = None,
        tokenize: bool = False,
        return_dict: bool = False,
        return_tensors: str | None = None,
        **kwargs,
    ):
        r"""
        Build the inputs of a conversation in transformers' multimodal message format (`chat_template_vgd.py`): a
        system message holds the caption, the first user message carries `{"type": "video", "video": <path | frames
        | features>}` beside `{"type": "text", "text": question}`, assistant messages are the earlier answers, the
        last user message is the question.

        With `tokenize=True` the result is exactly `processor(video_features=..., caption=..., history=...,
        question=...)` (or `videos=` for a file / frames, when the processor decodes videos): the layout carries
        per-token modality and turn ids, one placeholder per video region and whole-turn history truncation, which a
        text template cannot express, so the processor builds the tensors itself. With `tokenize=False` the
        chat template (`VGD_CHAT_TEMPLATE`, a Jinja template) renders the same layout as text, one `<video>` standing
        for the F x P placeholders.

        Args:
            conversation: one conversation (a list of messages) or a batch (a list of conversations).
            tokenize (`bool`): return model inputs instead of the rendered text.
            return_dict (`bool`): with `tokenize=True`, return the whole [`BatchFeature`] instead of `input_ids`.
            return_tensors (`"pt"`, `"np"` or `None`): as in [`~VGDProcessor.__call__`]; `None` gives unbatched
                examples.
        """
        batched = len(conversation) > 0 and isinstance(conversation[0], (list, tuple))
        conversations = list(conversation) if batched else [conversation]
        if not tokenize:
            kwargs.pop("add_generation_prompt", None)
            rendered = super().apply_chat_template(conversations, chat_template=chat_template, tokenize=False, **kwargs)
            return rendered if batched else rendered[0]
        examples = [conversation_to_example(messages) for messages in conversations]
        inputs = call_processor(self, examples, return_tensors=return_tensors)
        if not batched and return_tensors is None:  # one unbatched example, as __call__ returns it
            inputs = BatchFeature({key: value[0] for key, value in inputs.items()})
        return inputs if return_dict else inputs["input_ids"]

    def _call_with_videos(
        self, videos, video_features, caption, history, question, answer, return_tensors, padding_side, reserved_positions=0
    ):
        """`__call__` with `videos=`: clips from the video processor, `<video>` placeholders for the features the
        model's backbone will compute (clips x regions, pooled like the feature extractor's `video_pooling`)."""
        if video_features is not None:
            raise ValueError("give either videos (files / frames) or video_features (pre-extracted), not both")
        if self.video_processor.video_backbone is None:
            self.video_processor(videos)  # raises: no backbone recorded, or its packages are not installed
        if return_tensors is None:
            raise ValueError(
                "videos= gives padded clips: pass return_tensors='pt' (for training, extract features once with "
                "`python -m avsd_dataset.extract_features` and use video_features=)"
            )
        single = isinstance(question, str)
        if single:
            if isinstance(videos, (list, tuple)):
                raise ValueError(
                    "question is a str (one example) but videos is a list: pass one video (a path or a frames array) "
                    "for one example, or lists for every argument (a batch)"
                )
            videos = [videos]
        elif not isinstance(videos, (list, tuple)) or len(videos) != len(question):
            raise ValueError(
                f"question is a list of {len(question)} (a batch) so videos must be a list with one video per example"
            )
        _, captions, histories, questions, answers = self._normalize_inputs(None, caption, history, question, answer, single)
        clips = self.video_processor(list(videos), return_tensors=return_tensors)
        examples = self._encode(
            [None] * len(questions), captions, histories, questions, answers, reserved_positions=reserved_positions
        )
        for example, num_clips in zip(examples, np.asarray(clips["video_clip_mask"]).sum(axis=1)):
            frames, regions = self.feature_extractor.pooled_video_shape(int(num_clips), int(self.video_processor.num_regions))
            num_tokens = frames * regions
            for key, value in (("input_ids", self.video_token_id), ("attention_mask", 1), ("modality_ids", MODALITY_VIS), ("turn_ids", 0), ("labels", IGNORE_INDEX)):
                if key in example:
                    example[key] = np.concatenate([np.full(num_tokens, value, dtype=example[key].dtype), example[key]])
            del example["video_features"], example["video_mask"]
        batch = self.pad(examples, padding_side=padding_side, return_tensors=return_tensors)
        batch["pixel_values_videos"] = clips["pixel_values_videos"]
        batch["video_clip_mask"] = clips["video_clip_mask"]
        return batch

    def process_example(
        self,
        video_features: Any = None,
        caption: str | None = None,
        history: Sequence | None = None,
        question: str | None = None,
        answer: str | None = None,
        label_history_answers: bool = False,
    ) -> dict[str, np.ndarray]:
        """One unbatched example (what a training dataset's transform yields and [`DataCollatorForVGD`] takes).

        Args:
            label_history_answers (`bool`, defaults to `False`):
                Also label the answers of the kept history turns (whole-dialogue training: one sequence trains every
                answer of a dialogue). A history answer's tokens are labelled like the current answer's, and the
                `<usr>` that follows it gets the label `<|endoftext|>`: the model learns to end each answer as it ends
                the current one, so decoding a turn with the whole history stops at `<|endoftext|>` as usual. The
                inputs are unchanged, and a sequence's prefix up to turn k is exactly the prompt of turn k with all of
                its history, hence the same answers are learned as from one example per turn.

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
        if label_history_answers and answer is None:
            raise ValueError("label_history_answers=True needs the answer (a training example)")
        return self._encode(videos, captions, histories, questions, answers, label_history_answers=label_history_answers)[0]

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
        batch = pad_examples(
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

    def _encode(
        self, videos, captions, histories, questions, answers, reserved_positions: int = 0, label_history_answers: bool = False
    ) -> list[dict[str, np.ndarray]]:
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
            examples.append(
                self._assemble(b, video, caption_ids, history_ids, question_ids, answer_ids, reserved_positions, label_history_answers)
            )
        return examples

    def _assemble(
        self, index, video, caption_ids, history_ids, question_ids, answer_ids, reserved_positions=0, label_history_answers=False
    ) -> dict[str, np.ndarray]:
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

        # one position for the collator's <cls>; a generation prompt keeps `reserved_positions` for the new tokens
        budget = self.max_text_length - (1 if answer_ids is not None else reserved_positions)
        fixed = 1 + 1 + len(question_ids) + 1  # <cap>, <usr> question, <sys>
        if fixed > budget:
            reserved = f", {reserved_positions} kept for max_new_tokens" if reserved_positions else ""
            raise ValueError(
                f"example {index}: the question has {len(question_ids)} tokens; with <cap>, <usr> and <sys> it needs "
                f"{fixed} text positions but max_text_length={self.max_text_length} leaves {budget}{reserved} "
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
        history_answer_spans = []  # (start, end) text offsets of the kept history answers
        for turn, (turn_question, turn_answer) in enumerate(history_ids, start=1):
            text.append(self.usr_token_id)
            text.extend(turn_question)
            text.append(self.sys_token_id)
            history_answer_spans.append((len(text), len(text) + len(turn_answer)))
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
            if label_history_answers:
                for start, end in history_answer_spans:
                    start, end = start + num_video_tokens, end + num_video_tokens
                    labels[start:end] = input_ids[start:end]
                    labels[end] = self.eos_token_id  # at the next <usr>: the answer ends here
            example["labels"] = labels
        return example


_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "revision", "token", "proxies", "subfolder")

# What a video backbone needs beyond a features-only model: (module, pip package).
VIDEO_PACKAGES = (("torchvision", "torchvision"), ("av", "av"))


class NoVideoProcessor:
    """The `video_processor` of a processor whose model records no video backbone (it takes pre-extracted
    features): `video_backbone` is `None` and calling it explains what to do. Needs neither torchvision nor av."""

    video_backbone = None

    def __call__(self, *args, **kwargs):
        raise ValueError(
            "videos= needs a model with a video backbone, and this processor records none: build it with "
            "VGDProcessor.from_gpt2_pretrained(..., video_backbone=NAME), or extract features with "
            "`python -m avsd_dataset.extract_features` and pass video_features="
        )

    def to_dict(self) -> dict:
        return {"video_backbone": None}

    def __repr__(self) -> str:
        return "NoVideoProcessor()"


class UnavailableVideoProcessor(NoVideoProcessor):
    """The `video_processor` of a processor that records a video backbone whose packages (torchvision, av) are not
    installed: the processor still loads and takes pre-extracted `video_features`; `videos=` raises an `ImportError`
    naming the packages. Keeps the recorded settings, so saving the processor again loses nothing."""

    def __init__(self, settings: Mapping, missing: list[str]):
        self.settings = dict(settings)
        self.missing = list(missing)

    @property
    def message(self) -> str:
        backbone = self.settings.get("video_backbone")
        name = backbone.get("name", "?") if isinstance(backbone, Mapping) else "?"
        return (
            f"this processor records the video backbone {name!r}: it decodes video files with PyAV (av) and the "
            f"backbone runs in torchvision, but {' and '.join(self.missing)} cannot be imported. Install them: "
            f"pip install {' '.join(self.missing)} (the torchvision release built for your torch), or pass "
            "pre-extracted video_features="
        )

    def __call__(self, *args, **kwargs):
        raise ImportError(self.message)

    def to_dict(self) -> dict:
        return dict(self.settings)

    def __repr__(self) -> str:
        return f"UnavailableVideoProcessor(missing={self.missing})"


def missing_video_packages() -> list[str]:
    """The pip packages of `VIDEO_PACKAGES` that cannot be imported."""
    missing = []
    for module, package in VIDEO_PACKAGES:
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    return missing


def _video_processor_from_settings(video_processor):
    """`video_processor` as `VGDProcessor.__init__` takes it (a [`VGDVideoProcessor`], its settings dict from
    `processor_config.json`, or `None`) -> a `VGDVideoProcessor` when a video backbone is recorded, else a
    [`NoVideoProcessor`]; an [`UnavailableVideoProcessor`] (a warning names the packages) when the backbone's
    torchvision / av are missing."""
    if isinstance(video_processor, UnavailableVideoProcessor):
        return video_processor  # keeps the recorded settings
    if video_processor is None or isinstance(video_processor, NoVideoProcessor):
        return NoVideoProcessor()
    if not isinstance(video_processor, Mapping):
        return video_processor if video_processor.video_backbone is not None else NoVideoProcessor()
    settings = dict(video_processor)
    if settings.get("video_backbone") is None:
        return NoVideoProcessor()
    missing = missing_video_packages()
    if missing:
        unavailable = UnavailableVideoProcessor(settings, missing)
        logger.warning("%s; only videos= needs them", unavailable.message)
        return unavailable
    settings.pop("video_processor_type", None)
    settings.pop("auto_map", None)
    return VGDVideoProcessor(**settings)


# Hub / AutoProcessor integration: `save_pretrained` copies this file (and the configuration it imports) and
# writes `auto_map`; the feature extractor is also findable by name for `VGDProcessor.from_pretrained` in-process.
VGDVideoFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
VGDProcessor.register_for_auto_class("AutoProcessor")
AutoFeatureExtractor.register(VGDGPT2Config, VGDVideoFeatureExtractor, exist_ok=True)




# Names that moved out of this file (a saved model ships this file; the training collator is not part of it).
_MOVED = {"DataCollatorForVGD": "from avsd_dataset.collator import DataCollatorForVGD", "_pad_batch": "from processing_vgd import pad_examples"}


def __getattr__(name: str):
    if name in _MOVED:
        raise ImportError(f"{name} is no longer in processing_vgd: use `{_MOVED[name]}` (the training collator is not part of a saved model)")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AVSD_STREAM_ORDER",
    "IGNORE_INDEX",
    "NoVideoProcessor",
    "UnavailableVideoProcessor",
    "pad_examples",
    "VGDVideoProcessor",
    "VGDProcessor",
    "VGDTruncationStats",
    "VGDVideoFeatureExtractor",
    "uniform_frame_indices",
]
