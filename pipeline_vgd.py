"""The `video-grounded-dialogue` pipeline of VGD-GPT2.

```python
from transformers import pipeline

chat = pipeline("video-grounded-dialogue", model="outputs/demo", trust_remote_code=True)
chat(video="features/i3d_rgb_testset/ABC12.npy", caption="a man in a kitchen .", history=[], question="what does he do first ?")
# {'answer': 'first he walks .'}
chat(video=features, question="...", return_video_relevance=True)   # + 'video_relevance': [F, P] array
chat([{"video": ..., "question": ...}, ...], batch_size=8)          # a list of answers
chat(messages)                                                      # transformers' multimodal chat messages
```

The pipeline travels with the model's code: `modeling_vgd_gpt2.py` imports this file, so `save_pretrained` copies
it next to the model, and the model's config lists it under `custom_pipelines`, which `pipeline()` reads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoProcessor, GenerationConfig, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

try:  # package layout (Hub / `trust_remote_code`)
    from .chat_template_vgd import call_processor, conversation_to_example
except ImportError:  # top-level modules (the repository)
    from chat_template_vgd import call_processor, conversation_to_example

logger = logging.getLogger(__name__)

TASK = "video-grounded-dialogue"
# What `config.custom_pipelines` records (read by `pipeline()` with `trust_remote_code=True`).
CUSTOM_PIPELINES = {
    TASK: {"impl": "pipeline_vgd.VideoGroundedDialoguePipeline", "pt": ["AutoModelForCausalLM"], "type": "multimodal"}
}
INPUT_KEYS = ("video", "caption", "history", "question")


class VideoGroundedDialoguePipeline(Pipeline):
    r"""
    Answer a question about a video, given its caption and the dialogue so far.

    Call with keywords (`video`, `caption`, `history`, `question`), one dict of them, a list of dicts (a list of
    outputs, batched with `batch_size`), or a conversation in transformers' multimodal message format (see
    [`VGDProcessor.apply_chat_template`]). `video` is a file path (a video file when the processor decodes videos,
    or a `.npy` feature file), a frames array `[T, H, W, 3]`, features `[F, D]` / `[F, P, D]` or a dict of streams.

    Other keywords:
        return_video_relevance (`bool`, defaults to `False`): add `"video_relevance"`, the `[F, P]` map of
            [`VGDGPT2ForDialogue.video_relevance`] for the generated answer (`None` for an example without video).
        relevance_method (`str`, defaults to `"attention"`): `"attention"` or `"rollout"`.
        any `generate()` argument (`num_beams`, `max_new_tokens`, `do_sample`, `generation_config`, ...).

    Returns:
        `{"answer": str}` (+ `"video_relevance": np.ndarray [F, P]`) per input.

    A history longer than the model takes is truncated as in training (oldest turns first) and logged.
    """

    _load_processor = None  # optional for pipeline(), so that a missing processor gets the clear error below
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False
    _load_video_processor = False
    _pipeline_calls_generate = True
    # Under the model's own generation config and the caller's arguments: AVSD answers are short sentences.
    _default_generation_config = GenerationConfig(max_new_tokens=20)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.processor is None or not callable(getattr(self.processor, "__call__", None)):
            self.processor = self._load_processor_or_explain()
        self.tokenizer = self.processor.tokenizer
        self.feature_extractor = None  # keep the base class from using it for its own collation

    def _load_processor_or_explain(self):
        """`pipeline()` loads the processor as an optional component and swallows its errors: load it again from
        the model's folder / Hub id to report the real cause (e.g. a package the processor needs), and say "no
        processor found" only when none was saved."""
        name = getattr(self.model, "name_or_path", None)
        saved = isinstance(name, str) and bool(name) and (
            not os.path.isdir(name) or os.path.isfile(os.path.join(name, "processor_config.json"))
        )
        if saved:
            try:
                processor = AutoProcessor.from_pretrained(name, trust_remote_code=True)
            except Exception as error:
                if os.path.isdir(name):  # a local folder that holds a processor: its loading failed
                    raise ValueError(
                        f"{name}: the processor saved with the model could not be loaded: {type(error).__name__}: {error}"
                    ) from error
                cause = f" (loading one from {name} failed: {type(error).__name__}: {error})"
            else:
                if callable(getattr(processor, "process_example", None)):
                    return processor
                cause = f" ({name} holds a {type(processor).__name__}, not a VGDProcessor)"
        else:
            cause = ""
        raise ValueError(
            f"{name or type(self.model).__name__}: no processor found{cause}. The video-grounded-dialogue pipeline "
            "needs the VGDProcessor the model was trained with: save it next to the model "
            "(`processor.save_pretrained(folder)`) or pass `processor=VGDProcessor.from_pretrained(...)`."
        )

    def _sanitize_parameters(self, return_video_relevance=None, relevance_method=None, **generate_kwargs):
        forward_params = {"generate_kwargs": generate_kwargs}
        postprocess_params = {}
        if return_video_relevance is not None:
            forward_params["return_video_relevance"] = return_video_relevance
        if relevance_method is not None:
            if relevance_method not in ("attention", "rollout"):
                raise ValueError(f"relevance_method must be 'attention' or 'rollout', got {relevance_method!r}")
            forward_params["relevance_method"] = relevance_method
        return {}, forward_params, postprocess_params

    def __call__(self, inputs=None, **kwargs):
        """See the class docstring. Keywords named `video`, `caption`, `history`, `question` form one input."""
        example = {key: kwargs.pop(key) for key in INPUT_KEYS if key in kwargs}
        if example:
            if inputs is not None:
                raise ValueError("pass the input either as keywords (video=..., question=...) or as the first argument")
            inputs = example
        if inputs is None:
            raise ValueError("no input: pass question=... (and video=..., caption=..., history=...)")
        if isinstance(inputs, (list, tuple)) and len(inputs) == 0:
            raise ValueError(
                "no input: the list is empty; pass one input (question=..., video=...), a list of inputs, or a list of chat messages"
            )
        return super().__call__(inputs, **kwargs)

    def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params):
        # The processor pads a batch (left-padded text, zero-padded frames with `video_mask`), not the base class's
        # generic collate function, which would pad frames on the left and shift the temporal encoding.
        dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        dataloader = DataLoader(dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=self._collate)
        model_iterator = PipelineIterator(dataloader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)

    def _collate(self, items: list[dict]) -> dict:
        examples = [{key: value[0].numpy() for key, value in item.items()} for item in items]
        return dict(self.processor.pad(examples, padding_side="left", return_tensors="pt"))

    def preprocess(self, inputs) -> dict:
        if hasattr(inputs, "messages"):  # a `Chat` (the base class wraps lists of messages)
            example = conversation_to_example(inputs.messages)
        elif isinstance(inputs, Mapping):
            unknown = set(inputs) - set(INPUT_KEYS)
            if unknown:
                raise ValueError(f"unknown input keys {sorted(unknown)}; an input has {', '.join(INPUT_KEYS)}")
            if "question" not in inputs:
                raise ValueError("an input needs a 'question'")
            example = dict(inputs)
        else:
            raise ValueError(
                f"expected keywords / a dict with {', '.join(INPUT_KEYS)} or a list of chat messages, got {type(inputs).__name__}"
            )
        self._check_video_given(example, from_messages=hasattr(inputs, "messages"))
        stats = self.processor.truncation_stats
        dropped_before = stats.history_turns_dropped
        model_inputs = dict(call_processor(self.processor, [example], return_tensors="pt"))
        dropped = stats.history_turns_dropped - dropped_before
        if dropped:
            logger.warning(
                "the history has %d turns but the model takes fewer: the %d oldest were dropped, as in training",
                len(example.get("history") or []), dropped,
            )
        return model_inputs

    @staticmethod
    def _check_video_given(example: dict, from_messages: bool) -> None:
        """A video-grounded model answering without a video answers blind: an input without a video is refused,
        unless `video=None` is passed on purpose (a text-only answer, with a warning)."""
        if example.get("video") is not None:
            return
        if from_messages or "video" not in example:
            where = "the conversation carries no video" if from_messages else "no video given"
            raise ValueError(
                f"{where}: a video-grounded model would answer blind. Pass video=... (a video file, frames or "
                "features), or video=None explicitly for a text-only answer"
            )
        logger.warning("answering without a video (video=None): the answer is not grounded in any video")

    def _forward(self, model_inputs, generate_kwargs=None, return_video_relevance=False, relevance_method="attention"):
        model_inputs = {key: value for key, value in model_inputs.items() if key != "labels"}
        if "pixel_values_videos" in model_inputs:
            # Video clips (a video file / frames): the backbone's features once, as `generate` would compute them, so
            # that the relevance map below reads the same features.
            model_inputs["video_features"], model_inputs["video_mask"] = self.model.extract_video_features(
                model_inputs.pop("pixel_values_videos"), model_inputs.pop("video_clip_mask", None)
            )
        generate_kwargs = self._prepare_generate_kwargs(dict(generate_kwargs or {}))
        prompt_length = model_inputs["input_ids"].shape[1]
        output = self.model.generate(**model_inputs, **generate_kwargs)
        sequences = output.sequences if hasattr(output, "sequences") else output
        answer_ids = sequences[:, prompt_length:]
        result = {"answer_ids": answer_ids}
        if return_video_relevance:
            result["video_relevance"], result["video_relevance_shape"] = self._relevance(
                model_inputs, sequences, answer_ids, relevance_method
            )
        return result

    def _relevance(self, model_inputs, sequences, answer_ids, method) -> tuple[torch.Tensor, torch.Tensor]:
        """`[B, F, P]` maps of the generated answers, and the `[B, 2]` (frames, regions) of each example's video."""
        batch = sequences.shape[0]
        video_features = model_inputs.get("video_features")
        if video_features is None:
            return torch.zeros(batch, 0, 0), torch.zeros(batch, 2, dtype=torch.long)
        is_eos = (answer_ids == self.processor.eos_token_id).long()
        is_answer = (is_eos.cumsum(dim=1) - is_eos) == 0  # up to and including the first <|endoftext|>
        prompt_mask = model_inputs["attention_mask"]
        video_mask = model_inputs.get("video_mask")
        relevance = self.model.video_relevance(
            input_ids=sequences,
            response_mask=torch.cat([torch.zeros_like(prompt_mask, dtype=torch.bool), is_answer], dim=1),
            attention_mask=torch.cat([prompt_mask, is_answer.to(prompt_mask.dtype)], dim=1),
            video_features=video_features,
            video_mask=video_mask,
            method=method,
        )
        mask = video_mask.bool() if video_mask is not None else torch.ones(relevance.shape, dtype=torch.bool)
        if self.model.config.video_pooling == "spatial_and_temporal":
            return _regions_then_clips_to_grid(relevance.float(), mask, self.model.config.num_video_regions)
        shapes = torch.stack([mask.any(dim=2).sum(dim=1), mask.any(dim=1).sum(dim=1)], dim=1)
        return relevance.float(), shapes

    def postprocess(self, model_outputs) -> dict[str, Any]:
        answer = self.processor.decode(model_outputs["answer_ids"][0], skip_special_tokens=True)
        result = {"answer": answer}
        if "video_relevance" in model_outputs:
            frames, regions = (int(n) for n in model_outputs["video_relevance_shape"][0])
            relevance = model_outputs["video_relevance"][0]
            result["video_relevance"] = relevance[:frames, :regions].numpy() if frames else None
        return result


def _regions_then_clips_to_grid(relevance: torch.Tensor, mask: torch.Tensor, num_regions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The relevance of `video_pooling="spatial_and_temporal"` tokens (`[B, P + F, 1]`: P region tokens, then F clip
    tokens) as a `[B, F, P]` map of the clips x regions they stand for: cell `(f, p)` gets `clip[f] / P + region[p] / F`
    (each token's weight spread evenly over the cells it averages), so the map still sums to 1, its frame profile
    ranks the clips as the clip tokens do and its region profile the regions as the region tokens do. Returns the
    map and the `[B, 2]` (real clips, regions) of each example."""
    region_weights = relevance[:, :num_regions, 0]  # [B, P]
    clip_weights = relevance[:, num_regions:, 0]  # [B, F]
    num_clips = mask[:, num_regions:, 0].sum(dim=1).clamp(min=1).to(relevance.dtype)  # [B]
    grid = clip_weights[:, :, None] / num_regions + (region_weights / num_clips[:, None])[:, None, :]
    grid = grid * mask[:, num_regions:, :].to(grid.dtype)  # padded clips: zero
    shapes = torch.stack([mask[:, num_regions:, 0].sum(dim=1), torch.full_like(num_clips, num_regions, dtype=torch.long)], dim=1)
    return grid, shapes


# In-process use with a model object (`pipeline(TASK, model=model, processor=processor)`). A folder or Hub id goes
# through `config.custom_pipelines` instead; the first import (repository or remote code) registers the task.
if TASK not in PIPELINE_REGISTRY.supported_tasks:
    PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=VideoGroundedDialoguePipeline, pt_model=AutoModelForCausalLM, type="multimodal")

__all__ = ["CUSTOM_PIPELINES", "TASK", "VideoGroundedDialoguePipeline"]
