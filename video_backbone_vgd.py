"""The video backbone of VGD-GPT2: clips of pixels -> spatio-temporal grid features, from maintained libraries.

The paper (section 4.1) takes the last convolutional feature map of a Kinetics-pretrained 3D ResNeXt-101 per 16
frames. That network is not in a maintained library; this module offers the 3D CNNs and video transformers that
are, by name:

| name | library | feature map taken (16 frames) | P (cells) | D | input |
|---|---|---|---|---|---|
| `r3d_18`, `mc3_18`, `r2plus1d_18` | torchvision | `layer4` (or `layer2` / `layer3`): `[512, 2, 7, 7]` | 49 | 512 | 112 x 112 |
| `s3d` | torchvision | `features`: `[1024, 2, 7, 7]` | 49 | 1024 | 224 x 224 |
| `mvit_v2_s` | torchvision | final norm, class token dropped: `[768, 8, 7, 7]` | 49 | 768 | 224 x 224 |
| `swin3d_t`, `swin3d_s`, `swin3d_b` | torchvision | final norm: `[768 / 768 / 1024, 8, 7, 7]` | 49 | 768 / 768 / 1024 | 224 x 224 |
| a Hub id or folder of a transformers video model (VideoMAE, ViViT, ...) | transformers (`AutoModel`) | `last_hidden_state` (or `hidden_states.N`) as a `[T', H', W']` token grid | (image / patch)^2 | hidden size | the model's |

A clip's feature map is averaged over its remaining time steps, so every clip gives one `[P, D]` grid (the
paper's one feature map per 16 frames), P = the spatial cells of the map before the network's pooling.

A backbone is described by a plain dict (a "spec", stored as `VGDGPT2Config.video_backbone`), so that a config
records it and `from_pretrained` rebuilds its architecture without downloading anything (its weights are part of
the model's checkpoint, like the vision tower of transformers' vision-language models).
"""

from __future__ import annotations

import copy
import math
import os
from typing import Any

import torch
from torch import nn


TORCHVISION_VIDEO_BACKBONES = (
    "r3d_18", "mc3_18", "r2plus1d_18", "s3d", "mvit_v2_s", "swin3d_t", "swin3d_s", "swin3d_b",
)
_VIDEO_RESNETS = ("r3d_18", "mc3_18", "r2plus1d_18")
_RESNET_LAYERS = ("layer2", "layer3", "layer4")


def _torchvision_models():
    try:
        from torchvision import models
    except ImportError:
        raise ImportError(
            "torchvision video backbones need torchvision (the release built for your torch: pip install torchvision)"
        ) from None
    return models


def resolve_video_backbone(
    name: str,
    pretrained: bool = True,
    weights: str | None = None,
    clip_length: int | None = None,
    fps: float | None = None,
    crop_size: int | None = None,
    resize_size: int | None = None,
    layer: str | None = None,
    rgb_difference: bool = False,
) -> dict[str, Any]:
    """Describe a backbone as a spec dict (what `VGDGPT2Config.video_backbone` stores).

    Args:
        name: a torchvision video model name (`"r3d_18"`, `"s3d"`, `"mvit_v2_s"`, `"swin3d_t"`, ...) or the Hub id /
            local folder of a transformers video model (VideoMAE and the like, loaded with `AutoModel`).
        pretrained: load the Kinetics weights (torchvision: `weights`, default the enum's `DEFAULT`; transformers:
            `from_pretrained`) when the backbone is built with `load_weights=True`. `False`: random initialisation,
            nothing is downloaded (tests, offline runs).
        weights: a member name of the torchvision weights enum (e.g. `"KINETICS400_V1"`).
        clip_length: frames per clip (default 16; a transformers model's `num_frames`, which it requires).
        fps: resample videos to this frame rate before clipping (`None`: native rate).
        crop_size / resize_size: the center crop and the shorter side after resizing (defaults: the weights'
            preprocessing, e.g. 112 / 128 for the 3D ResNets; a transformers model's `image_size`).
        layer: the feature map taken: `"layer4"` (default), `"layer3"` or `"layer2"` for the 3D ResNets;
            `"last_hidden_state"` (default) or `"hidden_states.N"` for transformers models; the final feature map
            (the only choice) for the others.

    Returns:
        A JSON-serialisable dict with `name`, `library`, `weights` (`None` = random init), `clip_length`, `fps`,
        `resize_size`, `crop_size`, `image_mean`, `image_std`, `layer`, `num_regions` (P), `feature_dim` (D),
        and for transformers models `model_config` (the backbone's config as a dict).
    """
    for flag, value in (("clip_length", clip_length), ("crop_size", crop_size), ("resize_size", resize_size)):
        if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
            raise ValueError(f"{flag} must be a positive number of {'frames' if flag == 'clip_length' else 'pixels'}, got {value!r}")
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be a positive frame rate (or None for the native rate), got {fps!r}")
    if name not in TORCHVISION_VIDEO_BACKBONES and "/" not in name and not os.path.isdir(name):
        import difflib

        close = difflib.get_close_matches(name, sorted(TORCHVISION_VIDEO_BACKBONES), n=1)
        raise ValueError(
            f"unknown video backbone {name!r}{f' (did you mean {close[0]!r}?)' if close else ''}: not one of torchvision's "
            f"video models ({', '.join(sorted(TORCHVISION_VIDEO_BACKBONES))}) nor a local folder; a transformers video "
            "model is a Hub id such as MCG-NJU/videomae-base"
        )
    if name in TORCHVISION_VIDEO_BACKBONES:
        weights_enum = _torchvision_models().get_model_weights(name)
        if weights is not None:
            if weights not in weights_enum.__members__:
                raise ValueError(f"{name} has no weights {weights!r}; choose one of {list(weights_enum.__members__)}")
            member = weights_enum[weights]
        else:
            member = weights_enum.DEFAULT
        preset = member.transforms()  # preprocessing settings only: nothing is downloaded
        if name in _VIDEO_RESNETS:
            layer = layer or "layer4"
            if layer not in _RESNET_LAYERS:
                raise ValueError(f"{name}: layer must be one of {_RESNET_LAYERS}, got {layer!r}")
        else:
            final = "features" if name.startswith(("s3d", "swin3d")) else "norm"
            if layer not in (None, final):
                raise ValueError(f"{name}: only its final feature map ({final!r}) can be taken, got layer={layer!r}")
            layer = final
        spec = {
            "name": name,
            "library": "torchvision",
            "weights": member.name if pretrained else None,
            "clip_length": int(clip_length or 16),
            "fps": fps,
            "resize_size": int(resize_size or min(preset.resize_size)),
            "crop_size": int(crop_size or min(preset.crop_size)),
            "image_mean": [float(v) for v in preset.mean],
            "image_std": [float(v) for v in preset.std],
            "layer": layer,
        }
        if rgb_difference:
            if spec["clip_length"] < 2:
                raise ValueError(f"rgb_difference needs clips of at least 2 frames, got clip_length={spec['clip_length']}")
            spec["rgb_difference"] = True  # only when set: specs written before the option compare equal without it
        if spec["crop_size"] > spec["resize_size"]:
            raise ValueError(
                f"crop_size {spec['crop_size']} is larger than resize_size {spec['resize_size']}: frames are resized to a shorter "
                f"side of {spec['resize_size']} first, so a {spec['crop_size']} x {spec['crop_size']} crop would be mostly black "
                "padding; use resize_size >= crop_size"
            )
    else:
        if rgb_difference:
            raise ValueError(f"rgb_difference is for torchvision backbones; {name} takes exactly its num_frames frames")
        from transformers import AutoConfig

        model_config = AutoConfig.from_pretrained(name)
        size = getattr(model_config, "image_size", None)
        size = size[0] if isinstance(size, (list, tuple)) else size
        num_frames = getattr(model_config, "num_frames", None)
        if size is None or num_frames is None:
            raise ValueError(
                f"{name}: a transformers video backbone needs `image_size` and `num_frames` in its config "
                f"(VideoMAE, ViViT, TimeSformer have them); {type(model_config).__name__} does not"
            )
        if clip_length is not None and int(clip_length) != int(num_frames):
            raise ValueError(f"{name} takes clips of exactly num_frames={num_frames} frames, got clip_length={clip_length}")
        if crop_size is not None and int(crop_size) != int(size):
            raise ValueError(f"{name} takes {size} x {size} frames (its image_size), got crop_size={crop_size}")
        layer = layer or "last_hidden_state"
        if layer != "last_hidden_state" and not (layer.startswith("hidden_states.") and layer.split(".", 1)[1].lstrip("-").isdigit()):
            raise ValueError(f"{name}: layer must be 'last_hidden_state' or 'hidden_states.N', got {layer!r}")
        mean, std = _hf_normalisation(name)
        spec = {
            "name": name,
            "library": "transformers",
            "weights": name if pretrained else None,
            "clip_length": int(num_frames),
            "fps": fps,
            "resize_size": int(resize_size or size),
            "crop_size": int(size),
            "image_mean": mean,
            "image_std": std,
            "layer": layer,
            "model_config": model_config.to_dict(),
        }
    # P and D from a shape-only forward pass on the meta device (no memory, no compute, no weights).
    with torch.device("meta"):
        backbone = VGDVideoBackbone(spec)
        clip = torch.empty(1, spec["clip_length"], 3, spec["crop_size"], spec["crop_size"])
        grid = backbone(clip)
    spec["num_regions"], spec["feature_dim"] = int(grid.shape[1]), int(grid.shape[2])
    return spec


def _hf_normalisation(name: str) -> tuple[list[float], list[float]]:
    """Mean / std of a transformers video model's own processor config, else ImageNet's (VideoMAE's default)."""
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    for loader in ("AutoVideoProcessor", "AutoImageProcessor"):
        try:
            import transformers

            processor = getattr(transformers, loader).from_pretrained(name)
        except Exception:  # no processor config saved with the model: fall back below
            continue
        mean, std = getattr(processor, "image_mean", None), getattr(processor, "image_std", None)
        if mean is not None and std is not None:
            return [float(v) for v in mean], [float(v) for v in std]
    return list(IMAGENET_DEFAULT_MEAN), list(IMAGENET_DEFAULT_STD)


def video_processor_settings(spec: dict[str, Any]) -> dict[str, Any]:
    """The [`VGDVideoProcessor`] arguments matching a backbone spec."""
    return {
        "video_backbone": spec,
        "clip_length": spec["clip_length"],
        "fps": spec.get("fps"),
        "size": {"shortest_edge": spec["resize_size"]},
        "crop_size": {"height": spec["crop_size"], "width": spec["crop_size"]},
        "image_mean": spec["image_mean"],
        "image_std": spec["image_std"],
        "num_regions": spec["num_regions"],
    }


def same_backbone(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two specs give the same features (name, weights, clip length, rate, sizes, layer, standardisation)."""
    keys = ("name", "weights", "clip_length", "fps", "resize_size", "crop_size", "layer", "random_init_seed",
            "rgb_difference", "feature_mean", "feature_std")
    return all(a.get(key) == b.get(key) for key in keys)


def with_feature_standardization(spec: dict[str, Any], mean, std, fitted_on: str | None = None) -> dict[str, Any]:
    """A copy of `spec` whose backbone standardises its output per channel: `(features - mean) / std` (D values
    each, e.g. fitted once on the training videos' features with `avsd_dataset.extract_features.fit_feature_statistics`).

    The statistics are part of the spec (backbone.json, the model's `config.video_backbone`), so features extracted
    with it and the model's own backbone path (`processor(videos=...)`) give the same standardised features."""
    mean, std = [float(v) for v in mean], [float(v) for v in std]
    if len(mean) != int(spec["feature_dim"]) or len(std) != int(spec["feature_dim"]):
        raise ValueError(f"feature standardisation needs {spec['feature_dim']} means and stds, got {len(mean)} and {len(std)}")
    if min(std) <= 0:
        raise ValueError("feature standardisation: every std must be > 0")
    spec = copy.deepcopy(dict(spec))
    spec["feature_mean"], spec["feature_std"] = mean, std
    if fitted_on is not None:
        spec["feature_standardization_fitted_on"] = fitted_on
    return spec


class VGDVideoBackbone(nn.Module):
    r"""
    A frozen video network that maps clips to grids of features.

    Built from a spec ([`resolve_video_backbone`]) without weights (random initialisation, seeded by the spec's
    `random_init_seed` when it has one, or the architecture for `from_pretrained` to fill); [`~VGDVideoBackbone.load_pretrained_weights`] loads the Kinetics weights the
    spec names. The backbone never trains: its parameters do not require gradients and it stays in eval mode
    (batch-norm statistics frozen) whatever `train()` is called with.

    Forward: `pixel_values_videos` `[N, T, 3, H, W]` (N clips of T frames, normalised) -> `[N, P, D]` float (with
    `rgb_difference` in the spec: the features of the frames, then those of their differences, D = 2 x the network's).
    """

    def __init__(self, spec: dict[str, Any]):
        super().__init__()
        self.spec = copy.deepcopy(dict(spec))
        seed = spec.get("random_init_seed") if spec.get("weights") is None else None
        if seed is None:
            self._build(spec)
        else:  # random weights that a seed fixes (features extracted with --random_init --seed N), RNG state kept
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                self._build(spec)
        self.requires_grad_(False)
        super().train(False)

    def _build(self, spec: dict[str, Any]) -> None:
        name, library = spec["name"], spec["library"]
        if library == "torchvision":
            if name not in TORCHVISION_VIDEO_BACKBONES:
                raise ValueError(f"unknown torchvision video backbone {name!r}; choose one of {TORCHVISION_VIDEO_BACKBONES}")
            self.model = _torchvision_models().get_model(name, weights=None)
        elif library == "transformers":
            from transformers import AutoConfig, AutoModel

            model_config = dict(spec["model_config"])
            model_type = model_config.pop("model_type")
            self.model = AutoModel.from_config(AutoConfig.for_model(model_type, **model_config))
        else:
            raise ValueError(f"video backbone library must be 'torchvision' or 'transformers', got {library!r}")
        self._drop_classifier()

    def _drop_classifier(self) -> None:
        """Remove the classification head (never used): smaller checkpoints, no unused weights."""
        model, name = self.model, self.spec["name"]
        if self.spec["library"] != "torchvision":
            return
        if name in _VIDEO_RESNETS:
            model.fc = nn.Identity()
            for layer in _RESNET_LAYERS[_RESNET_LAYERS.index(self.spec["layer"]) + 1 :]:
                setattr(model, layer, nn.Identity())
        elif name == "s3d":
            model.classifier = nn.Identity()
        else:  # mvit, swin3d
            model.head = nn.Identity()

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: batch norm / dropout always in inference mode

    def load_pretrained_weights(self) -> None:
        """Load the weights the spec names (downloads them on first use; needs the network or a warm cache)."""
        weights = self.spec.get("weights")
        if weights is None:
            raise ValueError(f"the backbone spec of {self.spec['name']} names no weights (built with random init)")
        if self.spec["library"] == "torchvision":
            member = _torchvision_models().get_model_weights(self.spec["name"])[weights]
            state = member.get_state_dict(progress=False, check_hash=True)
            missing, unexpected = self.model.load_state_dict(state, strict=False)
        else:
            from transformers import AutoModel

            state = AutoModel.from_pretrained(weights).state_dict()
            missing, unexpected = self.model.load_state_dict(state, strict=False)
        missing = [key for key in missing if not key.startswith(("fc.", "head.", "classifier."))]
        if missing:
            raise ValueError(f"pretrained weights of {self.spec['name']} lack {missing[:5]}")

    @property
    def num_regions(self) -> int:
        return int(self.spec["num_regions"])

    @property
    def feature_dim(self) -> int:
        return int(self.spec["feature_dim"])

    def forward(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        """`[N, T, 3, H, W]` clips -> `[N, P, D]` grid features (the feature map averaged over its time steps)."""
        if pixel_values_videos.ndim != 5 or pixel_values_videos.shape[2] != 3:
            raise ValueError(
                f"video backbone input must be clips [clips, frames, 3, height, width], got {tuple(pixel_values_videos.shape)}"
            )
        parameter = next(self.model.parameters())
        pixel_values_videos = pixel_values_videos.to(device=parameter.device, dtype=parameter.dtype)
        if self.spec["library"] == "transformers":
            return self.standardize(self._transformers_grid(pixel_values_videos))
        clips = pixel_values_videos.transpose(1, 2)  # torchvision: [N, 3, T, H, W]
        # grid: [N, D, T', H', W'] -> mean over T' -> [N, H' * W', D]
        features = self._torchvision_grid(clips).mean(dim=2).flatten(2).transpose(1, 2)
        if self.spec.get("rgb_difference"):  # the same network on the frame-to-frame differences: [N, P, 2 * D]
            motion = self._torchvision_grid(clips[:, :, 1:] - clips[:, :, :-1]).mean(dim=2).flatten(2).transpose(1, 2)
            features = torch.cat([features, motion], dim=-1)
        return self.standardize(features)

    def standardize(self, features: torch.Tensor) -> torch.Tensor:
        """`(features - feature_mean) / feature_std` per channel when the spec records them (else unchanged).

        Computed in float32 from the spec's lists (not buffers: nothing to save or initialise), as
        `avsd_dataset.extract_features.standardize_features` does on saved arrays."""
        if self.spec.get("feature_mean") is None:
            return features
        mean = torch.tensor(self.spec["feature_mean"], dtype=torch.float32, device=features.device)
        std = torch.tensor(self.spec["feature_std"], dtype=torch.float32, device=features.device)
        return ((features.float() - mean) / std).to(features.dtype)

    def _torchvision_grid(self, clips: torch.Tensor) -> torch.Tensor:
        model, name = self.model, self.spec["name"]
        if name in _VIDEO_RESNETS:
            x = model.layer1(model.stem(clips))
            for layer in _RESNET_LAYERS[: _RESNET_LAYERS.index(self.spec["layer"]) + 1]:
                x = getattr(model, layer)(x)
            return x
        if name == "s3d":
            return model.features(clips)
        if name.startswith("swin3d"):
            x = model.patch_embed(clips)  # [N, T', H', W', C]
            x = model.pos_drop(x)
            x = model.features(x)
            x = model.norm(x)
            return x.permute(0, 4, 1, 2, 3)
        if name.startswith("mvit"):
            x = model.conv_proj(clips)
            x = x.flatten(2).transpose(1, 2)
            x = model.pos_encoding(x)
            thw = (model.pos_encoding.temporal_size,) + model.pos_encoding.spatial_size
            for block in model.blocks:
                x, thw = block(x, thw)
            x = model.norm(x)[:, 1:]  # drop the class token
            return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *thw)
        raise ValueError(f"unknown torchvision video backbone {name!r}")

    def _transformers_grid(self, clips: torch.Tensor) -> torch.Tensor:
        layer = self.spec["layer"]
        outputs = self.model(pixel_values=clips, output_hidden_states=layer != "last_hidden_state")
        tokens = outputs.last_hidden_state if layer == "last_hidden_state" else outputs.hidden_states[int(layer.split(".", 1)[1])]
        config = self.model.config
        image_size = config.image_size[0] if isinstance(config.image_size, (list, tuple)) else config.image_size
        tubelet = getattr(config, "tubelet_size", None)
        if isinstance(tubelet, (list, tuple)):  # ViViT: [time, height, width]
            patch = tubelet[-1]
        else:
            patch = config.patch_size[-1] if isinstance(config.patch_size, (list, tuple)) else config.patch_size
        cells = (image_size // patch) ** 2
        extra = tokens.shape[1] % cells
        if extra:  # class / distillation tokens come first
            tokens = tokens[:, extra:]
        steps = tokens.shape[1] // cells
        if steps * cells != tokens.shape[1] or steps < 1:
            raise ValueError(
                f"{self.spec['name']}: {tokens.shape[1]} tokens do not form a grid of {int(math.sqrt(cells))}^2 cells per time step"
            )
        return tokens.reshape(tokens.shape[0], steps, cells, tokens.shape[2]).mean(dim=1)


__all__ = [
    "TORCHVISION_VIDEO_BACKBONES",
    "VGDVideoBackbone",
    "resolve_video_backbone",
    "same_backbone",
    "video_processor_settings",
    "with_feature_standardization",
]
