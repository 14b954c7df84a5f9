"""VGD-GPT2: GPT-2 fine-tuned on video + dialogue (Le & Hoi, "Video-Grounded Dialogues with Pretrained
Generation Language Models", ACL 2020).

One sequence per example: F x P video regions (projected features), then the caption, the dialogue
history and the current question, then the answer. The layout of the sequence, the special tokens and
the tensors exchanged with the processor and the collator are described in `docs/design.md`.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, GenerationMixin, GPT2Config, GPT2LMHeadModel
from transformers import initialization as init
from transformers.loss.loss_utils import fixed_cross_entropy
from transformers.modeling_outputs import BaseModelOutputWithPooling, ModelOutput
from transformers.models.gpt2.modeling_gpt2 import GPT2Model, GPT2PreTrainedModel
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple

try:  # package layout (a Hub / save_pretrained folder)
    from .configuration_vgd_gpt2 import (
        MODALITY_CAP,
        MODALITY_SYS,
        MODALITY_USR,
        MODALITY_VIS,
        NUM_MODALITIES,
        SPECIAL_TOKEN_ID_FIELDS,
        VIDEO_FRAME_SINUSOID_BASE,
        VGDGPT2Config,
    )
    from .video_backbone_vgd import VGDVideoBackbone
except ImportError:  # top-level modules (the repository)
    from configuration_vgd_gpt2 import (
        MODALITY_CAP,
        MODALITY_SYS,
        MODALITY_USR,
        MODALITY_VIS,
        NUM_MODALITIES,
        SPECIAL_TOKEN_ID_FIELDS,
        VIDEO_FRAME_SINUSOID_BASE,
        VGDGPT2Config,
    )
    from video_backbone_vgd import VGDVideoBackbone

try:  # the `video-grounded-dialogue` pipeline travels with the model code (save_pretrained copies it)
    from .pipeline_vgd import CUSTOM_PIPELINES
except ImportError:
    from pipeline_vgd import CUSTOM_PIPELINES

logger = logging.getLogger(__name__)



def _as_frames_regions(video_features: torch.Tensor, video_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """`video_features` `[B, F, D]` or `[B, F, P, D]` as `[B, F, P, D]`, and its boolean `video_mask` `[B, F, P]`
    (all True when not given)."""
    if video_features.ndim == 3:
        video_features = video_features.unsqueeze(2)
        video_mask = video_mask.unsqueeze(2) if video_mask is not None and video_mask.ndim == 2 else video_mask
    if video_mask is None:
        video_mask = torch.ones(video_features.shape[:3], dtype=torch.bool, device=video_features.device)
    return video_features, video_mask.bool()


@dataclass
class VGDGPT2Output(ModelOutput):
    """
    Output of [`VGDGPT2ForDialogue`]. Every loss is the mean over its own items, or `None` when its labels
    were not given.

    Args:
        loss (`torch.FloatTensor` of shape `()`):
            Equal to `response_loss`, so the model behaves like any causal LM (`Trainer`, `evaluate`).
        response_loss (`torch.FloatTensor` of shape `()`):
            Next-token cross-entropy on the answer tokens (`labels != -100`).
        mlm_loss (`torch.FloatTensor` of shape `()`):
            Cross-entropy of the LM head at the `<mask>` positions against their original tokens (`mlm_labels`).
        mvm_loss (`torch.FloatTensor` of shape `()`):
            L1 distance, in video feature space, between `mvm_head(hidden state)` at each masked video region
            and that region's original features (`mvm_mask`), averaged over regions x feature dims.
        mvt_loss (`torch.FloatTensor` of shape `()`):
            Binary cross-entropy of `mvt_logits` against `mvt_labels` (1 = the video belongs to the dialogue),
            mean over the rows whose label is not -100.
        logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`):
            LM head scores (only the last `logits_to_keep` positions when that argument is set; `None` with
            `skip_logits`).
        mvt_logits (`torch.FloatTensor` of shape `(batch_size,)`):
            Video-text matching score read at the `<cls>` token, when the sequence holds one.
        cache (`Cache`): the key / value cache, when `use_cache=True`.
        hidden_states, attentions: as in [`GPT2Model`], when requested.
    """

    loss: torch.FloatTensor | None = None
    response_loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    mvm_loss: torch.FloatTensor | None = None
    mvt_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    mvt_logits: torch.FloatTensor | None = None
    cache: object | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class VGDVideoFeaturesOutput(BaseModelOutputWithPooling):
    """
    Output of [`VGDGPT2ForDialogue.get_video_features`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, frames, regions, video_feature_dim)`):
            The video features (from the video backbone, or the given pre-extracted ones).
        pooler_output (`torch.FloatTensor` of shape `(batch_size, frames, regions, n_embd)`):
            The video embeddings placed at the `<video>` placeholders (Eq. 1-2 without the spatial-position term).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*): `(last_hidden_state, pooler_output)`, with
            `output_hidden_states=True`.
        attentions (`tuple`, *optional*): empty (the video encoding has no attention layers), with
            `output_attentions=True`.
        video_mask (`torch.BoolTensor` of shape `(batch_size, frames, regions)`): True at real regions.
    """

    video_mask: torch.BoolTensor | None = None


def compute_modality_and_turn_ids(input_ids: torch.LongTensor, config: VGDGPT2Config) -> tuple[torch.LongTensor, torch.LongTensor]:
    """Derive the modality and turn of every token from the marker tokens (rules in docs/design.md).

    A token takes the modality of the most recent `<cap>` / `<usr>` / `<sys>` marker (itself included);
    tokens before any marker (the video) are "vis". The turn is the number of `<usr>` markers so far.

    Args:
        input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`).
    Returns:
        `(modality_ids, turn_ids)`, both of shape `(batch_size, sequence_length)`.
    """
    marker_modality = torch.full_like(input_ids, -1)
    marker_modality[input_ids == config.cap_token_id] = MODALITY_CAP
    marker_modality[input_ids == config.usr_token_id] = MODALITY_USR
    marker_modality[input_ids == config.sys_token_id] = MODALITY_SYS
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    last_marker = torch.where(marker_modality >= 0, positions, -1).cummax(dim=-1).values
    modality_ids = marker_modality.gather(1, last_marker.clamp(min=0))
    modality_ids = modality_ids.masked_fill(last_marker < 0, MODALITY_VIS)
    turn_ids = (input_ids == config.usr_token_id).long().cumsum(dim=-1)
    return modality_ids, turn_ids


def placeholder_region_index(input_ids: torch.LongTensor, video_token_id: int, video_mask: torch.BoolTensor) -> torch.LongTensor:
    """For every position, the flat index (`frame * regions + region`) of the video region its `<video>` placeholder
    stands for: the k-th placeholder of a row holds the k-th real region of `video_mask` (frame-major order).
    0 at text positions. Gathers with fixed shapes, so the forward pass compiles with `fullgraph=True` and exports.

    Args:
        input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`).
        video_mask (`torch.BoolTensor` of shape `(batch_size, frames, regions)`): the real regions.
    Returns:
        `torch.LongTensor` of shape `(batch_size, sequence_length)`.
    """
    is_video = input_ids == video_token_id
    real_regions = video_mask.flatten(1)
    # the flat indices of the real regions first, in order: a stable sort on "is padding"
    real_first = torch.argsort((~real_regions).to(torch.uint8), dim=1, stable=True)
    rank = (is_video.long().cumsum(dim=-1) - 1).clamp(min=0, max=real_regions.shape[1] - 1)
    return real_first.gather(1, rank).masked_fill(~is_video, 0)


def compute_position_ids(
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor,
    video_token_id: int,
    video_mask: torch.BoolTensor | None = None,
) -> torch.LongTensor:
    """Position ids for GPT-2's position table: text tokens count from the first text token (padding and
    video excluded); a video token gets its region index (the spatial-position encoding of Eq. 2).

    Args:
        input_ids, attention_mask (shape `(batch_size, sequence_length)`).
        video_mask (`torch.BoolTensor` of shape `(batch_size, frames, regions)`, *optional*):
            The real regions; needed only when `input_ids` holds video placeholders.
    Returns:
        `torch.LongTensor` of shape `(batch_size, sequence_length)`.
    """
    is_video = input_ids == video_token_id
    is_text = attention_mask.bool() & ~is_video
    position_ids = (is_text.long().cumsum(dim=-1) - 1).clamp(min=0).masked_fill(~is_text, 0)
    if video_mask is not None:
        region = placeholder_region_index(input_ids, video_token_id, video_mask) % video_mask.shape[2]
        position_ids = torch.where(is_video, region, position_ids)
    return position_ids


def _sum_cross_entropy(logits: torch.FloatTensor, targets: torch.LongTensor) -> torch.FloatTensor:
    """Summed cross-entropy of `logits` [..., vocab] against `targets` [...] over the targets that are not -100,
    with fixed shapes (no boolean-mask gather): ignored positions contribute exactly 0."""
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten().to(logits.device), ignore_index=-100, reduction="sum")


def _item_count(scored: torch.BoolTensor, num_items_in_batch=None) -> torch.Tensor:
    """The divisor of a summed loss: `num_items_in_batch` when the Trainer gives it, else the scored items (>= 1)."""
    if num_items_in_batch is not None:
        if isinstance(num_items_in_batch, torch.Tensor):
            return num_items_in_batch.to(scored.device)
        return num_items_in_batch
    return scored.sum().clamp(min=1)


def sinusoidal_frame_table(num_frames: int, dim: int, device=None) -> torch.Tensor:
    """The sine / cosine position table of "Attention Is All You Need" for frames 0 .. `num_frames` - 1, with
    wavelengths from 2 pi to 2 pi x `VIDEO_FRAME_SINUSOID_BASE` frames.

    Returns:
        `torch.FloatTensor` of shape `[num_frames, dim]`: column 2i is sin(t / base^(2i / dim)), column 2i + 1 its
        cosine; entries in [-1, 1] with a std of ~1 / sqrt(2) (that of a sine over its period).
    """
    position = torch.arange(num_frames, dtype=torch.float32, device=device)[:, None]
    frequency = torch.exp(-math.log(VIDEO_FRAME_SINUSOID_BASE) * torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim)
    table = torch.zeros(num_frames, dim, dtype=torch.float32, device=device)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)[:, : dim // 2]
    return table


class VGDGPT2PreTrainedModel(GPT2PreTrainedModel):
    config_class = VGDGPT2Config
    config: VGDGPT2Config
    base_model_prefix = "transformer"

    def _init_weights(self, module):
        """GPT-2's initialisation; the temporal encoding as `config.video_frame_init` says (random with
        `config.video_frame_init_std` when it is set, or the sinusoidal table); the video whitening (when
        `config.video_whitening_components` is set) starts unfitted: all zeros."""
        super()._init_weights(module)
        std = getattr(self.config, "video_frame_init_std", None)
        if module is getattr(self, "video_frame_embeddings", None):
            if getattr(self.config, "video_frame_init", "normal") == "sinusoidal":
                scale = std if std is not None else self.config.initializer_range
                table = sinusoidal_frame_table(*module.weight.shape, device=module.weight.device)
                init.copy_(module.weight, table * scale * math.sqrt(2.0))  # entries of std `scale`
            elif std is not None:
                init.normal_(module.weight, mean=0.0, std=std)
        if module is self and getattr(self, "video_whitening_matrix", None) is not None:
            init.zeros_(self.video_whitening_mean)
            init.zeros_(self.video_whitening_matrix)


class VGDGPT2ForDialogue(VGDGPT2PreTrainedModel, GenerationMixin):
    r"""
    GPT-2 with the video and dialogue encodings of VGD-GPT2 and the heads of its four training objectives.

    - Video (Eq. 1-2): features `[F, P, D]` -> `ReLU(Linear(D -> d))` (with `config.video_whitening_components` K:
      `ReLU(Linear(K -> d))` of the features PCA-whitened by the `[D, K]` buffer of `set_video_whitening`) + "vis" modality encoding + temporal
      encoding (frame index, `video_frame_embeddings`) + spatial-position encoding (region index, read from
      GPT-2's own position table). Each video token replaces one `<video>` placeholder of `input_ids`.
    - Text (Eq. 3): token embedding + modality (cap / usr / sys) + turn + position encodings; text positions
      count from the first text token, so the video does not use up GPT-2's positions.
    - Heads: the tied LM head (response generation and MLM), `mvm_head` (d -> D, masked visual modelling)
      and `mvt_head` (d -> 1, video-text matching at the `<cls>` token).
    """

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: VGDGPT2Config):
        super().__init__(config)
        self.transformer = GPT2Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)

        whitening = config.video_whitening_components
        self.video_projection = nn.Linear(whitening or config.video_feature_dim, config.n_embd)
        if whitening is not None:
            # fitted on the training videos (set_video_whitening); saved with the weights
            self.register_buffer("video_whitening_mean", torch.zeros(config.video_feature_dim))
            self.register_buffer("video_whitening_matrix", torch.zeros(config.video_feature_dim, whitening))
        self._video_whitening_checked = False
        self.video_frame_embeddings = nn.Embedding(config.max_video_frames, config.n_embd)
        self.modality_embeddings = nn.Embedding(NUM_MODALITIES, config.n_embd)
        self.turn_embeddings = nn.Embedding(config.max_turns, config.n_embd)

        self.mvm_head = nn.Linear(config.n_embd, config.video_feature_dim)
        self.mvt_head = nn.Linear(config.n_embd, 1)
        # Optional frozen video network (config.video_backbone): video files -> features inside the model. A model
        # whose backbone's library (torchvision) is not installed still loads and answers from pre-extracted
        # `video_features`; only video files (`pixel_values_videos`) then need the library (`video_backbone_error`).
        self.video_backbone, self.video_backbone_error = None, None
        if config.video_backbone is not None:
            try:
                self.video_backbone = VGDVideoBackbone(config.video_backbone)
            except ImportError as error:
                self.video_backbone_error = str(error)
                # the checkpoint's backbone weights have no module to go to: not an "unexpected keys" warning
                self._keys_to_ignore_on_load_unexpected = [r"^video_backbone\."]
                logger.warning(
                    "The video backbone of this model (%s) is not built: %s. The model answers from pre-extracted "
                    "video_features; video files (pixel_values_videos) need it.", config.video_backbone.get("name"), error,
                )

        # The class names neither `...ForCausalLM` nor a known loss: tell the loss machinery (and the
        # Trainer's token count for `num_items_in_batch`) that `labels` are shifted causal-LM labels.
        self.loss_type = "ForCausalLM"
        # AutoModel too (register_for_auto_class records one auto class; save_pretrained merges this map).
        self.config.auto_map = {**(getattr(config, "auto_map", None) or {}), "AutoModel": "modeling_vgd_gpt2.VGDGPT2ForDialogue"}
        # pipeline("video-grounded-dialogue", model=folder, trust_remote_code=True) finds the pipeline here.
        self.config.custom_pipelines = {**(getattr(config, "custom_pipelines", None) or {}), **CUSTOM_PIPELINES}
        self.post_init()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """[`PreTrainedModel.save_pretrained`] (and so `push_to_hub`); refuses a model whose video backbone could not
        be built (loaded without torchvision): its checkpoint would lack the backbone's weights that its config
        records, and would load elsewhere with a wrongly initialised backbone."""
        if self.video_backbone_error is not None and self.config.video_backbone is not None:
            raise RuntimeError(
                f"cannot save this model: its video backbone ({self.config.video_backbone.get('name')}) was not built "
                f"({self.video_backbone_error}), so its weights are not in memory. Install the backbone's library and "
                "load the model again, or set `model.config.video_backbone = None` to save a model for pre-extracted "
                "features only"
            )
        return super().save_pretrained(save_directory, *args, **kwargs)

    def get_input_embeddings(self):
        return self.transformer.wte

    def set_input_embeddings(self, new_embeddings):
        self.transformer.wte = new_embeddings

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """[`PreTrainedModel.from_pretrained`]; a damaged weights file (e.g. a `model.safetensors` cut off while
        copying) raises an `OSError` naming the file instead of safetensors' bare header message. The video
        backbone (if any) is frozen again after loading (loading turns its gradients back on). Returns what the
        base class returns (`(model, loading_info)` with `output_loading_info=True`)."""
        try:
            loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except SafetensorError as error:
            folder = os.fspath(pretrained_model_name_or_path)
            broken = []
            if os.path.isdir(folder):
                for name in sorted(os.listdir(folder)):
                    if name.endswith(".safetensors"):
                        try:
                            safe_open(os.path.join(folder, name), framework="pt").keys()
                        except SafetensorError:
                            broken.append(os.path.join(folder, name))
            where = ", ".join(broken) if broken else f"the weights of {folder}"
            raise OSError(
                f"cannot read {where}: not a complete safetensors file ({error}); it was probably cut off while "
                "saving, copying or downloading: save or copy the checkpoint again"
            ) from error
        # `output_loading_info=True` gives `(model, loading_info)`
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        if model.video_backbone is not None:
            model.video_backbone.requires_grad_(False)
        return loaded

    # ------------------------------------------------------------------ building from plain GPT-2

    @classmethod
    def from_gpt2_pretrained(cls, pretrained_model_name_or_path: str, processor=None, **config_overrides) -> "VGDGPT2ForDialogue":
        """Start a VGD-GPT2 model from a plain GPT-2 checkpoint (`"gpt2"`, `"gpt2-medium"` or a local folder).

        Loads GPT-2's transformer and LM-head weights, resizes the embeddings for the processor's special
        tokens (new rows start at the mean of the old ones), initialises the new layers (listed in the log)
        and records the special-token ids, the feature dim, frame cap and pooling of `processor` in the config.
        Other keyword arguments become [`VGDGPT2Config`] fields (e.g. `video_pooling="spatial"`, `use_mvm=False`).
        """
        gpt2 = GPT2LMHeadModel.from_pretrained(pretrained_model_name_or_path)
        gpt2_fields = {k: v for k, v in gpt2.config.to_dict().items() if k in GPT2Config().to_dict()}
        for key in ("model_type", "architectures", "transformers_version", "auto_map", "dtype", "torch_dtype"):
            gpt2_fields.pop(key, None)

        video_backbone = getattr(getattr(processor, "video_processor", None), "video_backbone", None)
        if video_backbone is not None:
            config_overrides.setdefault("video_backbone", video_backbone)
            config_overrides.setdefault("max_video_regions", max(64, int(video_backbone["num_regions"])))
        if processor is not None:
            from_processor = {
                "video_feature_dim": processor.feature_extractor.video_feature_dim,
                "max_video_frames": processor.feature_extractor.max_video_frames,
                "video_pooling": processor.feature_extractor.video_pooling,
                "num_video_regions": processor.feature_extractor.num_video_regions,
                "max_turns": processor.max_turns,
                **processor.special_token_ids(),
            }
            for key, value in from_processor.items():
                if key in config_overrides and config_overrides[key] != value:
                    raise ValueError(
                        f"from_gpt2_pretrained: {key}={config_overrides[key]!r} differs from the processor's "
                        f"{value!r}; build the processor with the same setting."
                    )
                config_overrides[key] = value
        if config_overrides.get("max_video_regions", 64) > gpt2_fields.get("n_positions", 1024):
            raise ValueError("max_video_regions cannot exceed n_positions: region p uses GPT-2's position row p")
        gpt2_vocab_size = gpt2.config.vocab_size
        gpt2_fields["vocab_size"] = max(len(processor.tokenizer), gpt2_vocab_size) if processor is not None else gpt2_vocab_size
        config = VGDGPT2Config(**{**gpt2_fields, **config_overrides})

        model = cls(config)
        gpt2_state = gpt2.state_dict()
        token_embeddings = gpt2_state.pop("transformer.wte.weight")
        gpt2_state.pop("lm_head.weight", None)  # tied to the token embeddings
        missing, unexpected = model.load_state_dict(gpt2_state, strict=False)
        if unexpected:
            raise ValueError(f"{pretrained_model_name_or_path} holds weights that GPT-2 does not: {unexpected[:5]}")
        with torch.no_grad():
            # GPT-2's token embeddings; the processor's special tokens start at their mean.
            model.transformer.wte.weight[:gpt2_vocab_size] = token_embeddings
            model.transformer.wte.weight[gpt2_vocab_size:] = token_embeddings.mean(dim=0)
        model.tie_weights()
        if model.video_backbone is not None and config.video_backbone.get("weights") is not None:
            model.video_backbone.load_pretrained_weights()  # the Kinetics weights (downloaded on first use)
        elif model.video_backbone is not None and config.video_backbone.get("random_init_seed") is not None:
            # The seeded random weights that extracted the training features (`extract_features --random_init`),
            # rebuilt after `post_init` (which re-initialises every submodule its own way).
            model.video_backbone.load_state_dict(VGDVideoBackbone(config.video_backbone).state_dict())
        new_layers = sorted({k.rsplit(".", 1)[0] for k in missing if k not in ("transformer.wte.weight", "lm_head.weight") and not k.startswith("video_backbone.")})
        logger.info(
            "VGD-GPT2 from %s: GPT-2 weights loaded; %d special-token embeddings added; newly initialised layers: %s",
            pretrained_model_name_or_path, config.vocab_size - gpt2_vocab_size, ", ".join(new_layers),
        )
        if processor is not None:
            model.generation_config.pad_token_id = config.pad_token_id
            model.generation_config.eos_token_id = config.eos_token_id
            model.generation_config.bos_token_id = config.bos_token_id
            # A response never contains the structural tokens: keep beams from wasting themselves on them.
            model.generation_config.suppress_tokens = [getattr(config, name) for name in SPECIAL_TOKEN_ID_FIELDS]
        return model

    # ------------------------------------------------------------------ input checks and embeddings

    def _check_video_shapes(self, input_ids, video_features, video_mask) -> None:
        """Raise a ValueError naming the sizes when the video tensors do not fit the config (no device sync)."""
        config = self.config
        if video_features is None:
            return
        if video_features.ndim != 4:
            raise ValueError(f"video_features must have shape [batch, frames, regions, dim], got {tuple(video_features.shape)}")
        if not video_features.is_floating_point():
            raise ValueError(f"video_features must be a floating-point tensor, got dtype {video_features.dtype}")
        batch, frames, regions, dim = video_features.shape
        if dim != config.video_feature_dim:
            raise ValueError(f"video_features have dim {dim} but config.video_feature_dim is {config.video_feature_dim}")
        if batch != input_ids.shape[0]:
            raise ValueError(f"video_features hold {batch} videos for a batch of {input_ids.shape[0]} sequences")
        if tuple(video_mask.shape) != (batch, frames, regions):
            raise ValueError(
                f"video_mask has shape {tuple(video_mask.shape)} but video_features {tuple(video_features.shape)} need "
                f"[batch, frames, regions] = {[batch, frames, regions]}"
            )
        if frames > config.max_video_frames:
            raise ValueError(f"video_features have {frames} frames but the temporal encoding holds max_video_frames={config.max_video_frames}")
        if regions > config.max_video_regions:
            raise ValueError(f"video_features have {regions} regions per frame but max_video_regions={config.max_video_regions}")
        if config.video_pooling == "spatial" and frames > 1:
            raise ValueError(f"video_pooling='spatial' expects one time-pooled frame per video, got {frames} frames")
        if config.video_pooling in ("temporal", "spatial_and_temporal") and regions > 1:
            raise ValueError(
                f"video_pooling={config.video_pooling!r} expects one token per row (video_features [batch, rows, 1, dim]), "
                f"got {regions} regions per row: pool the features with the model's processor"
            )
        if config.video_pooling == "spatial_and_temporal" and frames <= config.num_video_regions:
            raise ValueError(
                f"video_pooling='spatial_and_temporal' expects the {config.num_video_regions} region tokens then at least "
                f"one clip token per video, got {frames} rows: pool the features with the model's processor"
            )

    def _check_inputs(self, input_ids, attention_mask, position_ids, video_features, video_mask, mvt_labels, decoding: bool) -> bool:
        """Raise a ValueError naming the sizes for every input problem a tensor op would otherwise hit.

        All per-row counts travel to the host in one transfer (one device sync per forward pass), so the checks
        run in eager mode only (a compiled or exported forward skips them). Returns whether every row holds
        exactly one `<cls>` token (where `mvt_logits` are read)."""
        config = self.config
        if input_ids.numel() == 0:
            return False

        is_video = input_ids == config.video_token_id
        zeros = torch.zeros_like(input_ids[:, 0])
        # a 2-D mask covers the cached tokens too: its last columns are those of `input_ids` (one new token, or
        # several: the candidates of assisted decoding, a continued prompt)
        real = attention_mask[:, -input_ids.shape[1] :].bool() if attention_mask.ndim == 2 else torch.ones_like(input_ids, dtype=torch.bool)
        counts = [
            input_ids.max(dim=-1).values,
            is_video.sum(dim=-1),
            video_mask.sum(dim=(1, 2)).to(input_ids.device) if video_features is not None else zeros,
            (position_ids.to(input_ids.device) * real).max(dim=-1).values,
            (real & ~is_video).sum(dim=-1),
            (input_ids == config.usr_token_id).sum(dim=-1),
            (input_ids == config.cls_token_id).sum(dim=-1),
        ]
        max_id, n_placeholders, n_regions, max_position, n_text, n_turns, n_cls = zip(*torch.stack(counts, dim=1).tolist())

        if max(max_id) >= config.vocab_size:
            raise ValueError(
                f"input_ids holds id {max(max_id)} but the vocabulary has {config.vocab_size} entries; "
                "was the model built with the same processor (resize_token_embeddings)?"
            )
        if video_features is None and not decoding and sum(n_placeholders) > 0:
            raise ValueError(f"input_ids holds {list(n_placeholders)} <video> placeholders per example but no video_features were given")
        if video_features is not None and n_placeholders != n_regions:
            bad = [i for i, (a, b) in enumerate(zip(n_placeholders, n_regions)) if a != b][:10]
            raise ValueError(
                f"examples {bad}: the number of <video> placeholders {[n_placeholders[i] for i in bad]} differs "
                f"from the number of video regions {[n_regions[i] for i in bad]} (frames x regions of video_mask)"
            )
        if max(max_position) >= config.n_positions:
            if decoding:
                raise ValueError(
                    f"position {max(max_position)} is beyond the {config.n_positions} positions of the backbone: the text "
                    "(prompt and generated tokens; the video does not count) has no room left"
                )
            raise ValueError(
                f"text of {max(n_text)} tokens exceeds the {config.n_positions} positions of the backbone "
                "(the video does not count); truncate the history or the caption in the processor"
            )
        if min(max_position) < 0:
            raise ValueError(f"position_ids must be >= 0, got {min(max_position)}")
        if max(n_turns) >= config.max_turns:
            raise ValueError(
                f"a sequence holds {max(n_turns)} turns but the turn encoding holds max_turns={config.max_turns} "
                "(turn 0 is the caption)"
            )
        one_cls_per_row = all(n == 1 for n in n_cls)
        if mvt_labels is not None and not one_cls_per_row:
            raise ValueError(f"mvt_labels need exactly one <cls> token per sequence, found {list(n_cls)}")
        return one_cls_per_row

    def _check_not_packed(self, input_ids, position_ids) -> None:
        """Position ids given without an attention mask: reject text positions that restart (packed sequences),
        which the video-grounded layout cannot tell apart from one dialogue (video regions restart by design)."""
        is_text = input_ids != self.config.video_token_id
        text_positions = torch.where(is_text, position_ids, -1)
        previous_max = F.pad(text_positions.cummax(dim=-1).values[:, :-1], (1, 0), value=-1)
        restarts = is_text & (position_ids <= previous_max)
        if restarts.any():
            row, column = restarts.nonzero()[0].tolist()
            raise ValueError(
                f"position_ids restart at row {row}, position {column} without an attention_mask: packed sequences "
                "(several dialogues in one row) are not supported; pass one dialogue per row with its attention_mask"
            )

    def set_video_whitening(self, mean: torch.Tensor, matrix: torch.Tensor) -> None:
        """Install the PCA whitening that `video_projection` reads through (`config.video_whitening_components` K).

        Args:
            mean (`torch.Tensor` of shape `(video_feature_dim,)`): the training videos' mean feature.
            matrix (`torch.Tensor` of shape `(video_feature_dim, K)`): whitened = `(features - mean) @ matrix`
                (`vgd_training.video_whitening.fit_video_whitening` fits both).
        """
        if self.config.video_whitening_components is None:
            raise ValueError("this model reads the video features as they are (config.video_whitening_components is None)")
        mean, matrix = torch.as_tensor(mean), torch.as_tensor(matrix)
        for name, value, expected in (("mean", mean, self.video_whitening_mean), ("matrix", matrix, self.video_whitening_matrix)):
            if tuple(value.shape) != tuple(expected.shape):
                raise ValueError(f"set_video_whitening: {name} must have shape {tuple(expected.shape)}, got {tuple(value.shape)}")
            if not torch.isfinite(value).all():
                raise ValueError(f"set_video_whitening: {name} holds NaN or infinite values")
        if not matrix.any():
            raise ValueError("set_video_whitening: the matrix is all zeros")
        with torch.no_grad():
            self.video_whitening_mean.copy_(mean)
            self.video_whitening_matrix.copy_(matrix)
        self._video_whitening_checked = True

    def _check_video_whitening(self) -> None:
        """A model built with `video_whitening_components` whose whitening was never fitted would project zeros: said
        once, before the first forward (one device sync per model)."""
        if self._video_whitening_checked:
            return
        if not bool(self.video_whitening_matrix.any()):
            raise ValueError(
                "config.video_whitening_components is set but this model's video whitening was never fitted (its matrix is "
                "all zeros): call model.set_video_whitening(mean, matrix) with the training videos' statistics "
                "(vgd_training.video_whitening.fit_video_whitening; run_vgd.py --video_whitening_components K does both)"
            )
        self._video_whitening_checked = True

    def embed_video(self, video_features: torch.FloatTensor, mvm_mask: torch.BoolTensor | None = None) -> torch.FloatTensor:
        """Eq. 1-2 without the spatial-position term (added by GPT-2's position table).

        Args:
            video_features (`torch.FloatTensor` of shape `(batch_size, frames, regions, video_feature_dim)`).
            mvm_mask (`torch.BoolTensor` of shape `(batch_size, frames, regions)`, *optional*):
                Regions whose features (after the whitening, when the model has one) are replaced by zeros (masked
                visual modelling; the MVM target stays the features as given).
        Returns:
            `torch.FloatTensor` of shape `(batch_size, frames, regions, n_embd)`.
        """
        video_features = video_features.to(self.video_projection.weight.dtype)
        if self.config.video_whitening_components is not None:
            self._check_video_whitening()
            mean, matrix = self.video_whitening_mean.to(video_features.dtype), self.video_whitening_matrix.to(video_features.dtype)
            video_features = (video_features - mean) @ matrix  # [B, F, P, K]
        if mvm_mask is not None:
            video_features = video_features.masked_fill(mvm_mask.unsqueeze(-1), 0.0)
        frames = torch.arange(video_features.shape[1], device=video_features.device)
        vis = torch.full((), MODALITY_VIS, dtype=torch.long, device=video_features.device)
        return (
            F.relu(self.video_projection(video_features))
            + self.video_frame_embeddings(frames)[None, :, None, :]
            + self.modality_embeddings(vis)
        )

    def embed_inputs(self, input_ids, modality_ids, turn_ids, video_features=None, video_mask=None, mvm_mask=None):
        """Eq. 3 for text tokens, and the video embeddings scattered into the `<video>` placeholders.

        Returns `torch.FloatTensor` of shape `(batch_size, sequence_length, n_embd)`, without GPT-2's position
        term (added inside [`GPT2Model`] from `position_ids`).
        """
        inputs_embeds = (
            self.transformer.wte(input_ids) + self.modality_embeddings(modality_ids) + self.turn_embeddings(turn_ids)
        )
        if video_features is not None:
            video_embeds = self.embed_video(video_features, mvm_mask).flatten(1, 2).to(inputs_embeds.dtype)  # [B, F*P, d]
            region = placeholder_region_index(input_ids, self.config.video_token_id, video_mask)
            placed = video_embeds.gather(1, region.unsqueeze(-1).expand(-1, -1, video_embeds.shape[-1]))
            inputs_embeds = torch.where((input_ids == self.config.video_token_id).unsqueeze(-1), placed, inputs_embeds)
        return inputs_embeds

    def get_video_features(
        self,
        pixel_values_videos: torch.FloatTensor | None = None,
        video_clip_mask: torch.BoolTensor | None = None,
        video_features: torch.FloatTensor | None = None,
        video_mask: torch.BoolTensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> VGDVideoFeaturesOutput | tuple:
        """transformers' `get_video_features` contract: the video inputs of the model's processor in, the video
        embeddings that take the `<video>` placeholders' place out.

        Args:
            pixel_values_videos (`torch.FloatTensor` of shape `(batch_size, clips, clip_length, 3, height, width)`):
                Clips from the processor's `videos=` (a model with a video backbone); the frozen backbone computes the
                features (see [`~VGDGPT2ForDialogue.extract_video_features`]).
            video_clip_mask (`torch.BoolTensor` of shape `(batch_size, clips)`, *optional*): True = a real clip.
            video_features (`torch.FloatTensor` of shape `(batch_size, frames, regions, video_feature_dim)`):
                Instead of `pixel_values_videos`: pre-extracted features (the processor's `video_features=`, the
                model's main video input); `(batch_size, frames, video_feature_dim)` means one region.
            video_mask (`torch.BoolTensor` of shape `(batch_size, frames, regions)`, *optional*): the real regions.
            output_hidden_states (`bool`, *optional*): also return `hidden_states`: `(video features, video
                embeddings)`, the input and the output of the video encoding.
            output_attentions (`bool`, *optional*): also return `attentions`: an empty tuple, as the video encoding
                (Eq. 1-2: a projection and added encodings) has no attention layers.
            return_dict (`bool`, *optional*): a [`VGDVideoFeaturesOutput`] (default, `config.return_dict`) or its tuple.

        Returns:
            [`VGDVideoFeaturesOutput`]: `last_hidden_state` the video features `(batch_size, F, P,
            video_feature_dim)` (the backbone's, pooled like `config.video_pooling`, or the given ones),
            `pooler_output` the video embeddings `(batch_size, F, P, n_embd)` (Eq. 1-2 without the spatial-position
            term, which GPT-2's position table adds), `video_mask` `(batch_size, F, P)`.
        """
        if (pixel_values_videos is None) == (video_features is None):
            raise ValueError("get_video_features takes either pixel_values_videos (with a video backbone) or video_features")
        if pixel_values_videos is not None:
            video_features, video_mask = self.extract_video_features(pixel_values_videos, video_clip_mask)
        else:
            video_features, video_mask = _as_frames_regions(video_features, video_mask)
            self._check_video_shapes(video_features.new_zeros(video_features.shape[0], 1, dtype=torch.long), video_features, video_mask)
        embeddings = self.embed_video(video_features)
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        return_dict = self.config.return_dict if return_dict is None else return_dict
        output = VGDVideoFeaturesOutput(
            last_hidden_state=video_features,
            pooler_output=embeddings,
            hidden_states=(video_features, embeddings) if output_hidden_states else None,
            attentions=() if output_attentions else None,
            video_mask=video_mask,
        )
        return output if return_dict else output.to_tuple()

    @torch.no_grad()
    def extract_video_features(
        self, pixel_values_videos: torch.FloatTensor, video_clip_mask: torch.BoolTensor | None = None, clips_per_call: int = 32
    ) -> tuple[torch.FloatTensor, torch.BoolTensor]:
        """Video features from pixels with the frozen `video_backbone`, pooled like `config.video_pooling`: what
        `forward` and `generate` compute from `pixel_values_videos`.

        Args:
            pixel_values_videos (`torch.FloatTensor` of shape `(batch_size, clips, clip_length, 3, height, width)`):
                Clips from [`VGDVideoProcessor`], zeros where padded.
            video_clip_mask (`torch.BoolTensor` of shape `(batch_size, clips)`, *optional*): True = a real clip.
            clips_per_call (`int`): clips per backbone call (bounds the memory of long videos).
        Returns:
            `(video_features, video_mask)`: `(batch_size, F, P, video_feature_dim)` and `(batch_size, F, P)`, with F the
            clips (1 for "spatial" pooling) and P the backbone's cells (1 for "temporal" pooling); for
            "spatial_and_temporal" `(batch_size, P + clips, 1, video_feature_dim)`: the cells averaged over the real
            clips, then the clips averaged over the cells.
        """
        if self.video_backbone is None and self.video_backbone_error is not None:
            raise ImportError(
                f"pixel_values_videos were given but this model's video backbone "
                f"({self.config.video_backbone.get('name')}) could not be built: {self.video_backbone_error}; "
                "install it and load the model again, or pass pre-extracted video_features instead"
            )
        if self.video_backbone is None:
            raise ValueError(
                "pixel_values_videos were given but this model's config records no video backbone "
                "(config.video_backbone is None): pass pre-extracted video_features instead"
            )
        if pixel_values_videos.ndim != 6:
            raise ValueError(
                "pixel_values_videos must have shape [batch, clips, clip_length, 3, height, width], "
                f"got {tuple(pixel_values_videos.shape)}"
            )
        batch, num_clips = pixel_values_videos.shape[:2]
        if video_clip_mask is None:
            video_clip_mask = torch.ones(batch, num_clips, dtype=torch.bool, device=pixel_values_videos.device)
        if tuple(video_clip_mask.shape) != (batch, num_clips):
            raise ValueError(
                f"video_clip_mask must have shape [batch, clips] = {[batch, num_clips]} (one flag per clip of "
                f"pixel_values_videos {tuple(pixel_values_videos.shape)}), got {tuple(video_clip_mask.shape)}"
            )
        video_clip_mask = video_clip_mask.bool()
        clips = pixel_values_videos[video_clip_mask]
        grids = torch.cat([self.video_backbone(clips[i : i + clips_per_call]) for i in range(0, len(clips), clips_per_call)])
        regions, dim = grids.shape[1], grids.shape[2]
        if dim != self.config.video_feature_dim:
            raise ValueError(f"the video backbone gives {dim}-dim features but config.video_feature_dim is {self.config.video_feature_dim}")
        features = grids.new_zeros(batch, num_clips, regions, dim)
        features[video_clip_mask] = grids
        video_mask = video_clip_mask[:, :, None].expand(batch, num_clips, regions)
        pooling = self.config.video_pooling
        if pooling == "spatial_and_temporal" and regions != self.config.num_video_regions:
            raise ValueError(
                f"the video backbone gives {regions} regions per clip but config.num_video_regions is "
                f"{self.config.num_video_regions} (the model's region tokens)"
            )
        if pooling in ("spatial", "spatial_and_temporal"):  # each cell averaged over the real clips
            counts = video_clip_mask.sum(dim=1).clamp(min=1).to(features.dtype)
            region_tokens, region_mask = features.sum(dim=1) / counts[:, None, None], video_mask.any(dim=1)  # [B, P, D], [B, P]
        if pooling in ("temporal", "spatial_and_temporal"):  # each clip averaged over the cells
            clip_tokens = features.mean(dim=2)  # [B, clips, D]
        if pooling == "spatial":
            features, video_mask = region_tokens[:, None], region_mask[:, None]
        elif pooling == "temporal":
            features, video_mask = clip_tokens[:, :, None], video_clip_mask[:, :, None]
        elif pooling == "spatial_and_temporal":  # the region tokens first, then the clip tokens: [B, P + clips, 1, D]
            features = torch.cat([region_tokens, clip_tokens], dim=1)[:, :, None]
            video_mask = torch.cat([region_mask, video_clip_mask], dim=1)[:, :, None]
        return features, video_mask

    # ------------------------------------------------------------------ forward

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        modality_ids: torch.LongTensor | None = None,
        turn_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        video_features: torch.FloatTensor | None = None,
        video_mask: torch.BoolTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        video_clip_mask: torch.BoolTensor | None = None,
        cache=None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        mlm_labels: torch.LongTensor | None = None,
        mvm_mask: torch.BoolTensor | None = None,
        mvt_labels: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        skip_logits: bool = False,
        **kwargs,
    ) -> VGDGPT2Output:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
                Token ids with one `<video>` placeholder per real video region (see `VGDProcessor`).
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*): 1 = real token.
            modality_ids, turn_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Derived from the marker tokens when not given (`compute_modality_and_turn_ids`).
            position_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Rows of GPT-2's position table; derived with `compute_position_ids` when not given.
            video_features (`torch.FloatTensor` of shape `(batch_size, frames, regions, video_feature_dim)`, *optional*):
                Pre-extracted features, zero-padded; `(batch_size, frames, video_feature_dim)` means one region.
            video_mask (`torch.BoolTensor` of shape `(batch_size, frames, regions)`, *optional*):
                True at real regions (all True when not given).
            pixel_values_videos (`torch.FloatTensor` of shape `(batch_size, clips, clip_length, 3, height, width)`, *optional*):
                Video clips from [`VGDVideoProcessor`], for a model whose config records a video backbone: the
                features are computed by the frozen `video_backbone` (see `extract_video_features`). Instead of
                `video_features`.
            video_clip_mask (`torch.BoolTensor` of shape `(batch_size, clips)`, *optional*): True = a real clip.
            cache (`Cache`, *optional*): key / value cache of the previous decoding steps.
            inputs_embeds: not supported (the video enters through `input_ids` placeholders); listed for
                `generate()`.
            labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Answer tokens, -100 elsewhere (shifted inside the model).
            mlm_labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Original ids at `<mask>` positions, -100 elsewhere (not shifted).
            mvm_mask (`torch.BoolTensor` of shape `(batch_size, frames, regions)`, *optional*):
                Regions to mask (zeroed in the input) and reconstruct.
            mvt_labels (`torch.FloatTensor` of shape `(batch_size,)`, *optional*):
                1.0 when the video belongs to the dialogue, 0.0 for a corrupted pair, -100 for a row without a
                matching target; needs one `<cls>` per row.
            logits_to_keep (`int`): when > 0, compute the LM head on the last `logits_to_keep` positions only.
            skip_logits (`bool`, defaults to `False`): with `labels`, compute the LM head only where a loss is taken
                (the answer positions) and return `logits=None`; the losses are the same. [`VGDTrainer`] sets it
                in training: the full `[batch, length, vocab]` logits are most of the head's cost and are not used.
                Inside `torch.compile` / `torch.export` every loss is computed with fixed shapes instead (the LM head on
                every position, shared by the response and MLM losses; masked reductions for MVM / MVT): no graph
                break and no host sync, the same losses and gradients.
        """
        if inputs_embeds is not None:
            raise ValueError("VGDGPT2ForDialogue takes input_ids (with <video> placeholders), not inputs_embeds")
        if input_ids is None:
            raise ValueError("input_ids are required")
        if self.transformer.wte.weight.is_meta:
            raise RuntimeError(
                "VGDGPT2ForDialogue: the weights are on the meta device (the model was built without loading them): load "
                "it with from_pretrained(...), or move it with model.to_empty(device=...) and load a state dict first"
            )
        # The checks move per-row counts to the host: eager mode only (compiled / exported graphs skip them).
        checking = not (torch.compiler.is_compiling() or torch.compiler.is_exporting())
        decoding = checking and cache is not None and cache.get_seq_length() > 0
        if pixel_values_videos is not None:
            if video_features is not None:
                raise ValueError("give either video_features or pixel_values_videos, not both")
            if cache is None or cache.get_seq_length() == 0:  # the backbone runs on the prompt pass only
                video_features, video_mask = self.extract_video_features(pixel_values_videos, video_clip_mask)
        if attention_mask is None:
            if checking and position_ids is not None:
                self._check_not_packed(input_ids, position_ids)
            # Always pass a mask: position ids that restart (video regions, then text) would otherwise be
            # read as packed sequences by the mask builder.
            past_length = cache.get_seq_length() if cache is not None else 0
            attention_mask = torch.ones(input_ids.shape[0], past_length + input_ids.shape[1], dtype=torch.long, device=input_ids.device)
        if video_features is not None:
            video_features, video_mask = _as_frames_regions(video_features, video_mask)
        if checking:
            self._check_video_shapes(input_ids, video_features, video_mask)

        if modality_ids is None or turn_ids is None:
            derived_modality_ids, derived_turn_ids = compute_modality_and_turn_ids(input_ids, self.config)
            modality_ids = derived_modality_ids if modality_ids is None else modality_ids
            turn_ids = derived_turn_ids if turn_ids is None else turn_ids
        if position_ids is None:
            if decoding:
                raise ValueError("position_ids are required when decoding with a cache (generate() provides them)")
            if attention_mask.ndim == 4:
                # a 4-D mask [batch, 1, query, key] without a cache: a token is real when it may attend to itself
                padding_mask = attention_mask[:, 0].diagonal(dim1=-2, dim2=-1)
                padding_mask = padding_mask if padding_mask.dtype == torch.bool else padding_mask == 0
            else:
                padding_mask = attention_mask
            position_ids = compute_position_ids(input_ids, padding_mask, self.config.video_token_id, video_mask)
        one_cls_per_row = mvt_labels is not None
        if checking:
            one_cls_per_row = self._check_inputs(input_ids, attention_mask, position_ids, video_features, video_mask, mvt_labels, decoding)
        if mvm_mask is not None:
            if video_features is None:
                raise ValueError("mvm_mask was given without video_features")
            mvm_mask = mvm_mask.bool() & video_mask

        inputs_embeds = self.embed_inputs(input_ids, modality_ids, turn_ids, video_features, video_mask, mvm_mask)
        transformer_outputs = self.transformer(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            return_dict=True,
            **kwargs,
        )
        hidden_states = transformer_outputs.last_hidden_state

        # The losses. Eager: the heads run on the scored positions only (boolean-mask gathers, each a host sync; the
        # eager forward syncs once for its input checks anyway). Compiled / exported: fixed shapes only (masked
        # reductions over every position, no data-dependent size), so a training forward with all four objectives is
        # one graph without host syncs; same sums and counts, hence the same losses and gradients.
        fixed_shapes = not checking
        logits = response_loss = mlm_loss = None
        shared_logits = None
        if skip_logits and labels is not None:
            # the LM head on the positions that predict an answer token only (the loss of `loss_function`)
            next_labels = labels[:, 1:].to(hidden_states.device)
            if fixed_shapes:
                # one LM-head pass over every position, shared with the MLM loss below
                shared_logits = self.lm_head(hidden_states).float()
                response_loss = _sum_cross_entropy(shared_logits[:, :-1], next_labels)
                response_loss = response_loss / _item_count(next_labels != -100, kwargs.get("num_items_in_batch"))
            else:
                scored = next_labels != -100
                predicted = self.lm_head(hidden_states[:, :-1][scored]).float()
                response_loss = fixed_cross_entropy(predicted, next_labels[scored], kwargs.get("num_items_in_batch"))
        else:
            kept = slice(-logits_to_keep, None) if logits_to_keep else slice(None)
            logits = self.lm_head(hidden_states[:, kept])
            if labels is not None:
                response_loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)

        if mlm_labels is not None:
            masked = mlm_labels != -100
            if fixed_shapes:
                if shared_logits is None:
                    shared_logits = logits.float() if logits is not None and not logits_to_keep else self.lm_head(hidden_states).float()
                mlm_loss = _sum_cross_entropy(shared_logits, mlm_labels) / masked.sum().clamp(min=1)
            else:
                mlm_logits = self.lm_head(hidden_states[masked]).float()
                mlm_loss = F.cross_entropy(mlm_logits, mlm_labels[masked], reduction="sum") / masked.sum().clamp(min=1)

        mvm_loss = None
        if mvm_mask is not None:
            # mvm_mask in (frame, region) order -> the placeholder positions of the masked regions.
            placeholders = input_ids == self.config.video_token_id
            region = placeholder_region_index(input_ids, self.config.video_token_id, video_mask)
            masked_positions = placeholders & mvm_mask.flatten(1).gather(1, region)
            count = mvm_mask.sum() * video_features.shape[-1]
            if fixed_shapes:
                # every position's prediction against the features of its region; only masked placeholders count
                predicted = self.mvm_head(hidden_states).float()
                target = video_features.flatten(1, 2).gather(1, region.unsqueeze(-1).expand(-1, -1, video_features.shape[-1]))
                distance = torch.where(masked_positions.unsqueeze(-1), (predicted - target.float()).abs(), 0.0)
                mvm_loss = distance.sum() / count.clamp(min=1)
            else:
                predicted = self.mvm_head(hidden_states[masked_positions]).float()
                target = video_features[mvm_mask].float()
                mvm_loss = F.l1_loss(predicted, target, reduction="sum") / count.clamp(min=1)

        mvt_logits = None
        if one_cls_per_row and not decoding:
            cls_position = (input_ids == self.config.cls_token_id).int().argmax(dim=-1)
            cls_hidden = hidden_states.gather(1, cls_position[:, None, None].expand(-1, 1, hidden_states.shape[-1]))
            mvt_logits = self.mvt_head(cls_hidden[:, 0]).squeeze(-1)
        mvt_loss = None
        if mvt_labels is not None:
            scored = mvt_labels != -100  # -100: a row without a matching target
            per_row = F.binary_cross_entropy_with_logits(
                mvt_logits.float(), torch.where(scored, mvt_labels, 0).float(), reduction="none"
            )
            mvt_loss = torch.where(scored, per_row, 0.0).sum() / scored.sum().clamp(min=1)

        return VGDGPT2Output(
            loss=response_loss,
            response_loss=response_loss,
            mlm_loss=mlm_loss,
            mvm_loss=mvm_loss,
            mvt_loss=mvt_loss,
            logits=logits,
            mvt_logits=mvt_logits,
            cache=transformer_outputs.cache,
            hidden_states=transformer_outputs.hidden_states,
            attentions=transformer_outputs.attentions,
        )

    # ------------------------------------------------------------------ video relevance map

    @torch.no_grad()
    def video_relevance(
        self,
        input_ids: torch.LongTensor,
        response_mask: torch.BoolTensor,
        attention_mask: torch.Tensor | None = None,
        video_features: torch.FloatTensor | None = None,
        video_mask: torch.BoolTensor | None = None,
        method: str = "attention",
    ) -> torch.FloatTensor:
        r"""
        How much a response attended to each video region: one forward pass with `output_attentions` under eager
        attention (the model's attention implementation is restored afterwards).

        The queries are the positions that *produced* the response tokens (the `<sys>` token and every response token
        but the last); their attention to the `<video>` positions is averaged and renormalised to sum to 1 over the
        real regions of each example.

        - `method="attention"` (default): attention weights averaged over heads and layers. On the synthetic task
          (README, "Talk to the model") its top frame holds the asked action in 66% of the questions for two demo
          models trained with different seeds (uniform: 25%).
        - `method="rollout"`: attention rollout (Abnar & Zuidema, 2020): per layer the head-averaged attention plus
          the identity (the residual stream), row-normalised, multiplied over the layers. It credits indirect paths
          (answer -> question text -> video), but in a causal model the earliest positions accumulate weight; on the
          same two models it scored 68% and 52%: less steady, hence not the default.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): prompt and response (e.g. the
                output of `generate()`), with one `<video>` placeholder per real region.
            response_mask (`torch.BoolTensor` of shape `(batch_size, sequence_length)`): True at the response tokens
                to explain (e.g. the generated answer up to and including its `<|endoftext|>`).
            attention_mask, video_features, video_mask: as in [`~VGDGPT2ForDialogue.forward`].
            method (`str`): `"attention"` or `"rollout"`.

        Returns:
            `torch.FloatTensor` of shape `(batch_size, frames, regions)` (the shape of `video_mask`): zero at padded
            regions, summing to 1 over the real regions of each example with a response and a video.
        """
        if method not in ("attention", "rollout"):
            raise ValueError(f"method must be 'attention' or 'rollout', got {method!r}")
        if video_features is None:
            raise ValueError("video_relevance needs video_features (a map over the video's regions)")
        if video_features.ndim == 3:
            video_features = video_features.unsqueeze(2)
            video_mask = video_mask.unsqueeze(2) if video_mask is not None else None
        if video_mask is None:
            video_mask = torch.ones(video_features.shape[:3], dtype=torch.bool, device=video_features.device)
        video_mask = video_mask.bool()
        previous_implementation = self.config._attn_implementation
        if previous_implementation != "eager":
            self.set_attn_implementation("eager")
        try:
            outputs = self(
                input_ids=input_ids,
                attention_mask=attention_mask,
                video_features=video_features,
                video_mask=video_mask,
                output_attentions=True,
                use_cache=False,
            )
        finally:
            if previous_implementation != "eager":
                self.set_attn_implementation(previous_implementation)
        attentions = [layer.float().mean(dim=1) for layer in outputs.attentions]  # per layer [B, L, L]
        if method == "attention":
            scores = torch.stack(attentions).mean(dim=0)
        else:
            identity = torch.eye(input_ids.shape[1], device=input_ids.device)
            scores = identity.expand_as(attentions[0])
            for layer in attentions:
                layer = layer + identity
                scores = (layer / layer.sum(dim=-1, keepdim=True)) @ scores
        # The query producing response token t sits at t - 1.
        queries = torch.zeros_like(response_mask, dtype=torch.bool)
        queries[:, :-1] = response_mask[:, 1:].bool()
        weights = queries.to(scores.dtype)
        per_key = (weights.unsqueeze(-1) * scores).sum(dim=1) / weights.sum(dim=1, keepdim=True).clamp(min=1)  # [B, L]
        is_video = input_ids == self.config.video_token_id
        relevance = torch.zeros(video_mask.shape, dtype=per_key.dtype, device=per_key.device)
        relevance[video_mask] = per_key[is_video]
        return relevance / relevance.sum(dim=(1, 2), keepdim=True).clamp(min=torch.finfo(relevance.dtype).tiny)

    # ------------------------------------------------------------------ generation

    def generate(self, inputs=None, generation_config=None, *args, **kwargs):
        """[`GenerationMixin.generate`], after checking that the prompt leaves room in GPT-2's positions for the
        requested new tokens (the video does not use positions; the text does). `pixel_values_videos` (a model with
        a video backbone) are turned into `video_features` first, once, before beams are expanded."""
        if kwargs.get("inputs_embeds") is not None:
            raise ValueError(
                "VGDGPT2ForDialogue.generate takes input_ids (with <video> placeholders) and video_features, "
                "not inputs_embeds"
            )
        pixel_values_videos = kwargs.pop("pixel_values_videos", None)
        video_clip_mask = kwargs.pop("video_clip_mask", None)
        if pixel_values_videos is not None:
            if kwargs.get("video_features") is not None:
                raise ValueError("give either video_features or pixel_values_videos, not both")
            kwargs["video_features"], kwargs["video_mask"] = self.extract_video_features(pixel_values_videos, video_clip_mask)
        input_ids = kwargs.get("input_ids", inputs)
        if input_ids is not None and input_ids.numel() > 0:
            self._check_room_to_generate(input_ids, kwargs.get("attention_mask"), generation_config, kwargs)
        return super().generate(inputs, generation_config, *args, **kwargs)

    def _check_room_to_generate(self, input_ids, attention_mask, generation_config, kwargs) -> None:
        generation_config = generation_config if generation_config is not None else self.generation_config
        max_new_tokens = kwargs.get("max_new_tokens", generation_config.max_new_tokens)
        if max_new_tokens is None:
            max_length = kwargs.get("max_length", generation_config.max_length)
            max_new_tokens = max(max_length - input_ids.shape[1], 0) if max_length is not None else 0
        is_text = input_ids != self.config.video_token_id
        if attention_mask is not None and attention_mask.ndim == 2:
            is_text = is_text & attention_mask.bool()
        text_length = int(is_text.sum(dim=-1).max())
        positions = self.config.n_positions
        if text_length >= positions:
            raise ValueError(
                f"the prompt's text fills all {positions} positions of the backbone ({text_length} text tokens; the "
                "video does not count): there is no room to generate. Truncate the prompt, e.g. "
                "processor(..., max_new_tokens=N) keeps N positions free."
            )
        if text_length + max_new_tokens > positions:
            raise ValueError(
                f"the prompt holds {text_length} text tokens, so only {positions - text_length} of the requested "
                f"max_new_tokens={max_new_tokens} fit in the {positions} positions of the backbone; ask for fewer "
                "new tokens or truncate the prompt (processor(..., max_new_tokens=N) keeps N positions free)"
            )

    def prepare_inputs_for_generation(
        self, input_ids, next_sequence_length=None, cache=None, attention_mask=None, inputs_embeds=None, is_first_iteration=False, **kwargs
    ):
        """Feed the new tokens with their modality, turn and position, and the video only at the first step.

        `input_ids` and `attention_mask` hold the whole sequence so far. Modality and turn ids are derived from its
        marker tokens (`compute_modality_and_turn_ids`: a generated answer is "sys" of the question's turn), given
        `modality_ids` / `turn_ids` taking precedence where they reach; so one-shot generation and generation
        continued from a returned cache see the same ids. Position ids come from `compute_position_ids`; with a
        static cache the base class turns the 2-D mask into the 4-D one.
        """
        kwargs.pop("position_ids", None)  # ours differ from generate()'s cumulative-sum positions
        given_modality_ids = kwargs.pop("modality_ids", None)
        given_turn_ids = kwargs.pop("turn_ids", None)
        if attention_mask is None:  # generate() drops an all-ones mask
            attention_mask = torch.ones_like(input_ids)
        decoding = cache is not None and cache.get_seq_length() > 0
        if decoding:  # the video is in the cache
            kwargs.pop("video_features", None)
            kwargs.pop("video_mask", None)
        video_mask = kwargs.get("video_mask")
        if kwargs.get("video_features") is not None and video_mask is None:
            video_mask = torch.ones(kwargs["video_features"].shape[:3], dtype=torch.bool, device=input_ids.device)
        if video_mask is not None and video_mask.ndim == 2:
            video_mask = video_mask.unsqueeze(2)
        position_ids = compute_position_ids(input_ids, attention_mask, self.config.video_token_id, video_mask)

        model_inputs = super().prepare_inputs_for_generation(
            input_ids,
            next_sequence_length=next_sequence_length,
            cache=cache,
            attention_mask=attention_mask,
            inputs_embeds=None,
            is_first_iteration=is_first_iteration,
            position_ids=position_ids,
            **kwargs,
        )
        model_inputs.pop("inputs_embeds", None)
        new_length = model_inputs["input_ids"].shape[1]
        modality_ids, turn_ids = compute_modality_and_turn_ids(input_ids, self.config)
        # contiguous, as the base class makes its inputs: a compiled forward would recompile for every new stride
        model_inputs["modality_ids"] = _with_given_prefix(given_modality_ids, modality_ids)[:, -new_length:].contiguous()
        model_inputs["turn_ids"] = _with_given_prefix(given_turn_ids, turn_ids)[:, -new_length:].contiguous()
        return model_inputs


def _with_given_prefix(given: torch.LongTensor | None, derived: torch.LongTensor) -> torch.LongTensor:
    """`derived` [B, L] with its first columns replaced by `given` [B, L0] (when given)."""
    if given is None:
        return derived
    if given.shape[1] >= derived.shape[1]:
        return given[:, : derived.shape[1]]
    return torch.cat([given, derived[:, given.shape[1] :]], dim=1)


VGDGPT2Config.register_for_auto_class()
VGDGPT2ForDialogue.register_for_auto_class("AutoModelForCausalLM")
AutoConfig.register("vgd_gpt2", VGDGPT2Config, exist_ok=True)
AutoModel.register(VGDGPT2Config, VGDGPT2ForDialogue, exist_ok=True)
AutoModelForCausalLM.register(VGDGPT2Config, VGDGPT2ForDialogue, exist_ok=True)

__all__ = [
    "VGDGPT2ForDialogue",
    "VGDGPT2Output",
    "VGDGPT2PreTrainedModel",
    "VGDVideoFeaturesOutput",
    "compute_modality_and_turn_ids",
    "compute_position_ids",
    "placeholder_region_index",
]
