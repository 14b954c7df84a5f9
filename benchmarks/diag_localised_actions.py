#!/usr/bin/env python
"""Diagnostic: the embedded demo with the actions in ONE region per video instead of every region, more feature
frames per action, or a stronger action.

    python benchmarks/diag_localised_actions.py --output_dir outputs/demo-localised --cache_dir outputs/localised-cache \
        --synthetic_answer_accuracy true                     # any run_vgd.py arguments (seed, pooling, epochs, ...)
    python benchmarks/diag_localised_actions.py --diag_action_regions all --diag_num_frames 12 --video_pooling temporal \
        --cache_dir outputs/f12-cache --synthetic_answer_accuracy true      # every region, 3 feature frames per action

The synthetic task adds each frame's action prototype to all P regions of the frame (avsd_dataset/synthetic.py). In a
video the action lives where the person is. This script runs `run_vgd.main` on a variant of the task whose
generator adds the action prototype (same norm) to one region per video (the "person's region", drawn per video,
fixed over time) and nothing else changed, to measure whether VGD-GPT2 learns a fact that is localised in space and
changes over time (docs/video.md, "Why the actions are not learned"). Its own options, taken off the command line
before the rest goes to `run_vgd.main`:

- `--diag_action_regions one|all` (default `one`): the localised variant, or the demo's own (every region).
- `--diag_action_gain G` (default 1): the action prototype multiplied by G (one region at G = 4 gives the
  region-mean token of temporal pooling the action at the demo's every-region strength).
- `--diag_num_frames F` (default the demo's 4): feature frames per video; the 4 actions then span F / 4 frames each.

Give it its own `--cache_dir`: the variant's data must not be mistaken for the demo's (the cache is keyed by the
generator's settings, not by these changes).
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import avsd_dataset.synthetic as synthetic  # noqa: E402


def render_with_localised_actions(rng, config, prototypes, facts, layout, action_gain=1.0):
    """`synthetic._render_video_features` with the action added to one region per video instead of all."""
    frames, regions, dim = config.num_frames, config.num_regions, config.feature_dim
    video = config.noise * rng.standard_normal((frames, regions, dim))
    video += prototypes["place"][facts["place"]]
    video[:, layout["object_regions"]] += prototypes["object"][facts["object"]] + prototypes["color"][facts["color"]]
    actions = np.asarray(facts["actions"])[synthetic._segment_of_frame(config)]  # action of every frame
    person = int(rng.integers(regions))
    video[:, person] += action_gain * prototypes["action"][actions]
    if config.audio_stream is not None:
        raise ValueError("the localised-action diagnostic covers the video stream only (no --demo audio stream)")
    return {config.video_stream: video.astype(np.float32)}


def pop_option(argv, name, default):
    """Remove `--name VALUE` / `--name=VALUE` from argv and return VALUE (or the default)."""
    for index, arg in enumerate(argv):
        if arg == name:
            value = argv[index + 1]
            del argv[index : index + 2]
            return value
        if arg.startswith(name + "="):
            del argv[index]
            return arg.split("=", 1)[1]
    return default


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(arg == "--cache_dir" or arg.startswith("--cache_dir=") for arg in argv):
        raise SystemExit("give --cache_dir: the variant's synthetic data must not land in the demo's cache")
    regions = pop_option(argv, "--diag_action_regions", "one")
    gain = float(pop_option(argv, "--diag_action_gain", "1"))
    num_frames = pop_option(argv, "--diag_num_frames", None)
    if regions not in ("one", "all"):
        raise SystemExit(f"--diag_action_regions must be 'one' or 'all', got {regions!r}")
    if regions == "one":
        synthetic._render_video_features = lambda *args: render_with_localised_actions(*args, action_gain=gain)
    elif gain != 1.0:
        raise SystemExit("--diag_action_gain applies to --diag_action_regions one")
    if num_frames is not None:
        generate = synthetic.generate_synthetic_avsd

        def generate_with_frames(*args, **kwargs):
            return generate(*args, **{**kwargs, "num_frames": int(num_frames)})

        synthetic.generate_synthetic_avsd = generate_with_frames
    import run_vgd

    return run_vgd.main(argv)


if __name__ == "__main__":
    main()
