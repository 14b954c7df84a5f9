#!/usr/bin/env python
"""Diagnostic: the embedded demo with the actions in ONE region per video instead of every region.

    python benchmarks/diag_localised_actions.py --output_dir outputs/demo-localised --cache_dir outputs/localised-cache \
        --synthetic_answer_accuracy true                     # any run_vgd.py arguments (seed, pooling, epochs, ...)

The synthetic task adds each frame's action prototype to all P regions of the frame (avsd_dataset/synthetic.py). In a
video the action lives where the person is. This script runs `run_vgd.main` on a variant of the task whose
generator adds the action prototype (same norm) to one region per video (the "person's region", drawn per video,
fixed over time) and nothing else changed, to measure whether VGD-GPT2 learns a fact that is localised in space and
changes over time (docs/video.md, "Why the actions are not learned"). Give it its own `--cache_dir`: the variant's
data must not be mistaken for the demo's (the cache is keyed by the generator's settings, not by this change).
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import avsd_dataset.synthetic as synthetic  # noqa: E402


def render_with_localised_actions(rng, config, prototypes, facts, layout):
    """`synthetic._render_video_features` with the action added to one region per video instead of all."""
    frames, regions, dim = config.num_frames, config.num_regions, config.feature_dim
    video = config.noise * rng.standard_normal((frames, regions, dim))
    video += prototypes["place"][facts["place"]]
    video[:, layout["object_regions"]] += prototypes["object"][facts["object"]] + prototypes["color"][facts["color"]]
    actions = np.asarray(facts["actions"])[synthetic._segment_of_frame(config)]  # action of every frame
    person = int(rng.integers(regions))
    video[:, person] += prototypes["action"][actions]
    if config.audio_stream is not None:
        raise ValueError("the localised-action diagnostic covers the video stream only (no --demo audio stream)")
    return {config.video_stream: video.astype(np.float32)}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not any(arg == "--cache_dir" or arg.startswith("--cache_dir=") for arg in argv):
        raise SystemExit("give --cache_dir: the variant's synthetic data must not land in the demo's cache")
    synthetic._render_video_features = render_with_localised_actions
    import run_vgd

    return run_vgd.main(argv)


if __name__ == "__main__":
    main()
