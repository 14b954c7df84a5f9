"""Chat messages and video inputs of VGD-GPT2, shared by [`VGDProcessor.apply_chat_template`] and the
`video-grounded-dialogue` pipeline.

A conversation uses transformers' multimodal message format:

```python
messages = [
    {"role": "system", "content": [{"type": "text", "text": "a man opens a window ."}]},          # the caption
    {"role": "user", "content": [{"type": "video", "video": features_or_path_or_frames},
                                 {"type": "text", "text": "is he alone ?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "yes he is ."}]},                   # earlier answers
    {"role": "user", "content": [{"type": "text", "text": "what does he do next ?"}]},            # the question
]
```
[`conversation_to_example`] turns it into the keyword form of the processor (`video`, `caption`, `history`,
`question`); [`video_to_processor_kwargs`] says how the processor takes a video (`video_features=` for features,
`videos=` for a file or frames when the processor decodes videos).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


try:  # package layout (Hub / `trust_remote_code`)
    from .video_processing_vgd import VIDEO_FILE_EXTENSIONS
except ImportError:  # top-level module layout (the repository root on sys.path)
    from video_processing_vgd import VIDEO_FILE_EXTENSIONS


# Renders the processor's layout as text (`apply_chat_template(..., tokenize=False)`): one `<video>` stands for the
# F x P placeholders that the processor writes; the tokenised form (`tokenize=True`) comes from the processor itself.
VGD_CHAT_TEMPLATE = (
    "{%- macro text_of(message) -%}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- else -%}{%- for part in message['content'] if part['type'] == 'text' -%}"
    "{{ part['text'] | trim }}{{ ' ' if not loop.last }}{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- set ns = namespace(video=false) -%}"
    "{%- for message in messages if message['content'] is not string -%}"
    "{%- for part in message['content'] if part['type'] == 'video' -%}{%- set ns.video = true -%}{%- endfor -%}"
    "{%- endfor -%}"
    "{%- if ns.video -%}<video>{%- endif -%}"
    "<cap>{%- for message in messages if message['role'] == 'system' -%}{{ ' ' ~ text_of(message) }}{%- endfor -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}<usr>{{ ' ' ~ text_of(message) }}<sys>"
    "{%- elif message['role'] == 'assistant' -%}{{ ' ' ~ text_of(message) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

FEATURES_ONLY_MESSAGE = (
    "this model takes pre-extracted video features, not video files or frames (its config records no video "
    "backbone): extract them with `python -m avsd_dataset.extract_features VIDEO_DIR FEATURE_DIR --backbone NAME` "
    "and pass the .npy file (or the array) as the video"
)


def _message_text(message: Mapping, where: str) -> tuple[str, list[Any]]:
    """The text of one message (its text parts joined by a space) and the videos it carries."""
    content = message.get("content")
    if isinstance(content, str):
        return content.strip(), []
    if not isinstance(content, Sequence):
        raise ValueError(f"{where}: content must be a str or a list of {{'type': ...}} parts, got {type(content).__name__}")
    texts, videos = [], []
    for index, part in enumerate(content):
        if not isinstance(part, Mapping) or "type" not in part:
            raise ValueError(f"{where}, part {index}: expected a dict with a 'type', got {part!r:.80}")
        if part["type"] == "text":
            if not isinstance(part.get("text"), str):
                raise ValueError(f"{where}, part {index}: a text part needs a str 'text'")
            texts.append(part["text"].strip())
        elif part["type"] == "video":
            video = part.get("video", part.get("path", part.get("url")))
            if video is None:
                raise ValueError(f"{where}, part {index}: a video part needs a 'video' (a path, frames or features)")
            videos.append(video)
        else:
            raise ValueError(f"{where}, part {index}: unsupported content type {part['type']!r} (use 'text' or 'video')")
    return " ".join(text for text in texts if text), videos


def conversation_to_example(messages: Sequence[Mapping]) -> dict[str, Any]:
    """One conversation -> `{"video", "caption", "history", "question"}`, the keyword form of the processor.

    The system message(s) hold the caption; user / assistant messages alternate, the conversation ends with the
    user's question; earlier user / assistant pairs become the history `[(question, answer), ...]`, oldest first.
    At most one video, in any user message (usually the first).
    """
    if isinstance(messages, Mapping) or not isinstance(messages, Sequence) or len(messages) == 0:
        raise ValueError("a conversation is a non-empty list of {'role': ..., 'content': ...} messages")
    captions, turns, videos = [], [], []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message:
            raise ValueError(f"message {index}: expected a dict with 'role' and 'content', got {message!r:.80}")
        role = message["role"]
        text, message_videos = _message_text(message, f"message {index} ({role})")
        if message_videos and role != "user":
            raise ValueError(f"message {index} ({role}): only user messages may carry the video")
        videos.extend(message_videos)
        if role == "system":
            if text:
                captions.append(text)
        elif role in ("user", "assistant"):
            expected = "user" if len(turns) % 2 == 0 else "assistant"
            if role != expected:
                raise ValueError(
                    f"message {index}: expected a {expected} message (user questions and assistant answers alternate)"
                )
            turns.append(text)
        else:
            raise ValueError(f"message {index}: unknown role {role!r} (use 'system', 'user' or 'assistant')")
    if len(turns) % 2 == 0:
        raise ValueError("the conversation must end with a user message holding the question")
    if len(videos) > 1:
        raise ValueError(f"the conversation carries {len(videos)} videos; a VGD-GPT2 dialogue is about one video")
    history = [(turns[i], turns[i + 1]) for i in range(0, len(turns) - 1, 2)]
    return {
        "video": videos[0] if videos else None,
        "caption": " ".join(captions) if captions else None,
        "history": history,
        "question": turns[-1],
    }


def processor_takes_video_files(processor) -> bool:
    """Whether `processor(videos=...)` works: the processor decodes video files / frames and records the video
    backbone of its model (`processor.video_processor.video_backbone`)."""
    try:
        takes_videos = "videos" in inspect.signature(processor.__call__).parameters
    except (TypeError, ValueError):
        return False
    video_processor = getattr(processor, "video_processor", None)
    return takes_videos and getattr(video_processor, "video_backbone", None) is not None


def _refuse_video_files(processor, what: str) -> None:
    """Raise for a video input the processor cannot take: an `ImportError` naming the packages when it records a
    backbone whose torchvision / av are not installed, else a `ValueError` saying how to extract features."""
    missing = getattr(getattr(processor, "video_processor", None), "missing", None)
    if missing:
        raise ImportError(f"{what}, but {processor.video_processor.message}")
    raise ValueError(f"{what}, but {FEATURES_ONLY_MESSAGE}")


def load_feature_file(path: str) -> np.ndarray:
    """A `.npy` feature file, memory-mapped; a clear error naming the file when it cannot be read."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as error:  # numpy raises ValueError / OSError / EOFError for broken files
        raise ValueError(f"cannot read video features from {path}: {error}") from error


def video_to_processor_kwargs(processor, video: Any, where: str = "video") -> tuple[str, Any]:
    """Which processor argument takes `video`, and the value to pass: `("video_features", features)` or
    `("videos", path_or_frames)`.

    - `None` or features (`[F, D]` / `[F, P, D]` array or tensor, a dict of streams, a `.npy` path): features.
    - a video file path or a frames array `[T, H, W, 3]`: `videos=` when the processor decodes videos, otherwise a
      `ValueError` saying how to extract features.
    """
    if video is None or isinstance(video, Mapping):
        return "video_features", video
    if isinstance(video, (str, os.PathLike)):
        path = os.fspath(video)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{where}: no such file: {path}")
        if path.endswith(".npy"):
            return "video_features", load_feature_file(path)
        if not path.lower().endswith(VIDEO_FILE_EXTENSIONS):
            raise ValueError(
                f"{where}: {path} is neither a .npy feature file nor a video file (expected .npy or one of "
                f"{', '.join(VIDEO_FILE_EXTENSIONS)})"
            )
        if not processor_takes_video_files(processor):
            _refuse_video_files(processor, f"{where}: {path} is a video file")
        return "videos", path
    ndim = getattr(video, "ndim", None)
    if ndim is None:
        raise ValueError(
            f"{where}: expected a file path, a frames array [T, H, W, 3], features [F, D] / [F, P, D] or a dict of "
            f"feature streams, got {type(video).__name__}"
        )
    if ndim == 4:
        if not processor_takes_video_files(processor):
            _refuse_video_files(processor, f"{where}: got a frames array of shape {tuple(video.shape)}")
        return "videos", video
    if ndim in (2, 3):
        return "video_features", video
    raise ValueError(
        f"{where}: an array of shape {tuple(video.shape)} is neither features ([F, D] or [F, P, D]) nor frames "
        "([T, H, W, 3])"
    )


def call_processor(processor, examples: Sequence[Mapping[str, Any]], return_tensors: str | None = "pt", **kwargs):
    """`processor(...)` on a batch of examples in keyword form (`video`, `caption`, `history`, `question`).

    Features go to `video_features=`, files / frames to `videos=` (all examples of one call must agree).
    """
    arguments = [video_to_processor_kwargs(processor, example.get("video"), f"example {i}: video") for i, example in enumerate(examples)]
    names = {name for name, value in arguments if value is not None}
    if len(names) > 1:
        raise ValueError("a batch mixes video files / frames with pre-extracted features: pass one kind per call")
    name = names.pop() if names else "video_features"
    videos = [value for _, value in arguments]
    for index, example in enumerate(examples):
        question = example.get("question")
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"example {index}: the question is empty")
    return processor(
        **{name: videos},
        caption=[example.get("caption") for example in examples],
        history=[list(example.get("history") or []) for example in examples],
        question=[example["question"] for example in examples],
        return_tensors=return_tensors,
        **kwargs,
    )


__all__ = [
    "FEATURES_ONLY_MESSAGE",
    "VGD_CHAT_TEMPLATE",
    "call_processor",
    "conversation_to_example",
    "load_feature_file",
    "processor_takes_video_files",
    "video_to_processor_kwargs",
]
