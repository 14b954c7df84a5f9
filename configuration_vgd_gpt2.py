"""VGD-GPT2 configuration."""

from transformers import GPT2Config

# Modality ids (paper Eq. 2-3): video regions, caption, user utterances, system responses.
MODALITY_VIS = 0
MODALITY_CAP = 1
MODALITY_USR = 2
MODALITY_SYS = 3

# The special tokens of docs/design.md, the one list every file reads: tokenizer attribute -> token, in the order they
# get their ids (vocab, vocab + 1, ...). `cls_token`, `mask_token` and `pad_token` are standard tokenizer attributes,
# the others are the tokenizer's `extra_special_tokens` (so `tokenizer.video_token_id` works). The config stores each
# id as `<attribute>_id` (`video_token_id`, ...), beside GPT-2's own `eos_token_id` / `bos_token_id`.
SPECIAL_TOKENS = {
    "video_token": "<video>",
    "cap_token": "<cap>",
    "usr_token": "<usr>",
    "sys_token": "<sys>",
    "cls_token": "<cls>",
    "mask_token": "<mask>",
    "pad_token": "<pad>",
}
SPECIAL_TOKEN_ID_FIELDS = tuple(f"{name}_id" for name in SPECIAL_TOKENS)
NUM_MODALITIES = 4

VIDEO_POOLING_MODES = ("spatiotemporal", "spatial", "temporal", "spatial_and_temporal")
VIDEO_FRAME_INIT_MODES = ("normal", "sinusoidal")
# The longest wavelength of the sinusoidal temporal encoding, in frames over 2 pi: 100, not the 10,000 of text
# positions, since a video has tens of clips, not thousands of tokens (the slowest pairs would be constant over them).
VIDEO_FRAME_SINUSOID_BASE = 100.0


def check_num_video_regions(video_pooling: str, num_video_regions, max_video_frames: int, owner: str) -> None:
    """Raise a ValueError unless `num_video_regions` fits `video_pooling`: a positive int below `max_video_frames`
    for `"spatial_and_temporal"` (its P region tokens take the first rows of the temporal encoding and leave at
    least one for a clip), `None` otherwise."""
    if video_pooling == "spatial_and_temporal":
        if isinstance(num_video_regions, bool) or not isinstance(num_video_regions, int) or num_video_regions < 1:
            raise ValueError(
                f"{owner}: video_pooling='spatial_and_temporal' needs num_video_regions, the regions per frame of the "
                f"features (P, e.g. 16 for a 4 x 4 feature map), got {num_video_regions!r}"
            )
        if num_video_regions >= max_video_frames:
            raise ValueError(
                f"{owner}: video_pooling='spatial_and_temporal' puts the {num_video_regions} region tokens in the first "
                f"rows of the temporal encoding, so max_video_frames ({max_video_frames}) must exceed num_video_regions"
            )
    elif num_video_regions is not None:
        raise ValueError(f"{owner}: num_video_regions is for video_pooling='spatial_and_temporal' only, got it with {video_pooling!r}")


class VGDGPT2Config(GPT2Config):
    r"""
    Configuration of [`VGDGPT2ForDialogue`]: every field of [`GPT2Config`] plus the video and dialogue
    encodings of VGD-GPT2 (Le & Hoi, ACL 2020).

    Args:
        video_feature_dim (`int`, defaults to 2048):
            D, the size of one pre-extracted video feature vector (e.g. 2048 for ResNeXt / I3D, 4224 for
            I3D rgb + flow + VGGish concatenated).
        max_video_frames (`int`, defaults to 256):
            Rows of the temporal encoding: the most frames (segments) F one video may have.
        max_video_regions (`int`, defaults to 64):
            The most spatial regions P per frame. Region p is encoded with GPT-2's position table row p.
        max_turns (`int`, defaults to 16):
            Rows of the turn encoding. Turn 0 is the caption; turn t the t-th question / answer pair kept
            in the sequence.
        video_pooling (`str`, defaults to `"spatiotemporal"`):
            `"spatiotemporal"` keeps all F x P regions; `"spatial"` average-pools over time (one pooled
            frame of P regions); `"temporal"` average-pools over space (F frames of one region);
            `"spatial_and_temporal"` gives both kinds of token, the P region tokens (averaged over time) then the F
            clip tokens (averaged over space), as `P + F` rows of one region each (rows 0..P-1 of the temporal
            encoding are the regions', whatever the number of clips; needs `num_video_regions`). The processor
            pools; the model checks the shapes it receives.
        num_video_regions (`int`, *optional*):
            P, the regions per frame of the features, for `video_pooling="spatial_and_temporal"` (required there, as
            the first P video tokens are the regions'; the processor refuses features with another number of
            regions). `None` for the other modes.
        use_mlm / use_mvm / use_mvt (`bool`, default `True`):
            Which auxiliary objectives the training collator should produce labels for (the model
            computes whichever labels it is given).
        video_frame_init_std (`float`, *optional*):
            Standard deviation of the normal initialisation of the temporal encoding (`video_frame_embeddings`);
            `None` (default): `initializer_range` (GPT-2's 0.02), like every other new layer. Only a new model's
            initialisation reads it. The projected features of a video are much larger than such an encoding
            (the video demo's: a norm of ~4 at initialisation and ~18 trained, against 0.2 growing to 1.4-2.2), so the
            clips are hard to tell apart in time; the video demo starts it at 0.5, with which it learns the order of
            the actions in seeds that never did (docs/video.md).
        video_frame_init (`str`, default `"normal"`):
            How a new model's temporal encoding starts: `"normal"`, drawn at random (std `video_frame_init_std`), or
            `"sinusoidal"`, the sine / cosine table of "Attention Is All You Need" with wavelengths from 2 pi to
            2 pi x 100 frames (`VIDEO_FRAME_SINUSOID_BASE`), scaled so that its entries have the std
            `video_frame_init_std` (or `initializer_range`). Neighbouring frames then start with neighbouring encodings
            and a frame's offset to any other is a fixed rotation, where random rows start unrelated. It remains a
            trained table. The video demo starts sinusoidal (docs/video.md).
        video_whitening_components (`int`, *optional*):
            K: the video features are PCA-whitened before `video_projection`, which then reads the K largest
            components at unit variance instead of the D channels (`VGDGPT2ForDialogue.set_video_whitening`; the mean
            `[D]` and matrix `[D, K]` are buffers in the model's weights, fitted on the training videos by `run_vgd.py
            --video_whitening_components K`). A fact carried by a small share of the features' variance (the video
            demo's object: a few pixels of a 32-pixel frame) is then as large as the rest and learned in the same
            time; masked visual modelling still reconstructs the features as given. `None` (default): the projection
            reads the features as they are.
        video_backbone (`dict`, *optional*):
            The video network that turns video files into features inside the model (see
            `video_backbone_vgd.py`): its name (`"r3d_18"`, `"s3d"`, a VideoMAE folder, ...), library, weights, clip
            length, frame rate, resize / crop sizes, normalisation, the layer taken, P (`num_regions`) and D
            (`feature_dim`). `None` (default): the model reads pre-extracted features only.
        video_token_id, cap_token_id, usr_token_id, sys_token_id, cls_token_id, mask_token_id (`int`):
            Ids of the special tokens added by `VGDProcessor` (see docs/design.md).
    """

    model_type = "vgd_gpt2"

    def __init__(
        self,
        video_feature_dim: int = 2048,
        max_video_frames: int = 256,
        max_video_regions: int = 64,
        max_turns: int = 16,
        video_pooling: str = "spatiotemporal",
        num_video_regions: int | None = None,
        use_mlm: bool = True,
        use_mvm: bool = True,
        use_mvt: bool = True,
        video_token_id: int | None = None,
        cap_token_id: int | None = None,
        usr_token_id: int | None = None,
        sys_token_id: int | None = None,
        cls_token_id: int | None = None,
        mask_token_id: int | None = None,
        video_backbone: dict | None = None,
        video_frame_init_std: float | None = None,
        video_frame_init: str = "normal",
        video_whitening_components: int | None = None,
        **kwargs,
    ):
        for name, value in (
            ("video_feature_dim", video_feature_dim),
            ("max_video_frames", max_video_frames),
            ("max_video_regions", max_video_regions),
            ("max_turns", max_turns),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"VGDGPT2Config: {name} must be a positive int, got {value!r}")
        if video_frame_init_std is not None and (isinstance(video_frame_init_std, bool) or not video_frame_init_std > 0):
            raise ValueError(f"VGDGPT2Config: video_frame_init_std must be a positive number or None, got {video_frame_init_std!r}")
        if video_frame_init not in VIDEO_FRAME_INIT_MODES:
            raise ValueError(f"VGDGPT2Config: video_frame_init must be one of {VIDEO_FRAME_INIT_MODES}, got {video_frame_init!r}")
        if video_whitening_components is not None and (
            isinstance(video_whitening_components, bool)
            or not isinstance(video_whitening_components, int)
            or not 1 <= video_whitening_components <= video_feature_dim
        ):
            raise ValueError(
                f"VGDGPT2Config: video_whitening_components must be None or an int from 1 to video_feature_dim "
                f"({video_feature_dim}), got {video_whitening_components!r}"
            )
        if video_pooling not in VIDEO_POOLING_MODES:
            raise ValueError(f"video_pooling must be one of {VIDEO_POOLING_MODES}, got {video_pooling!r}")
        check_num_video_regions(video_pooling, num_video_regions, max_video_frames, "VGDGPT2Config")
        self.video_feature_dim = video_feature_dim
        self.max_video_frames = max_video_frames
        self.max_video_regions = max_video_regions
        self.max_turns = max_turns
        self.video_pooling = video_pooling
        self.num_video_regions = num_video_regions
        self.video_frame_init_std = video_frame_init_std
        self.video_frame_init = video_frame_init
        self.video_whitening_components = video_whitening_components
        self.use_mlm = use_mlm
        self.use_mvm = use_mvm
        self.use_mvt = use_mvt
        self.video_token_id = video_token_id
        self.cap_token_id = cap_token_id
        self.usr_token_id = usr_token_id
        self.sys_token_id = sys_token_id
        self.cls_token_id = cls_token_id
        self.mask_token_id = mask_token_id
        self.video_backbone = dict(video_backbone) if video_backbone is not None else None
        super().__init__(**kwargs)
        for name in ("n_embd", "n_layer", "n_head", "n_positions", "vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"VGDGPT2Config: {name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"VGDGPT2Config: n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")


__all__ = ["VGDGPT2Config"]
