"""Talk to a trained VGD-GPT2 model about one video, in the terminal.

```bash
python -m vgd_apps.chat                                   # the demo model (outputs/demo) and its first test video
python -m vgd_apps.chat --model PATH_OR_HUB_ID --video clip_features.npy --caption "a man opens a window ."
```

Each answer is printed as it is generated. The history is kept as in the paper (every earlier question / answer
pair, oldest first; what the model cannot take is dropped oldest first, as in training, and said). Commands:
`/reset` (forget the history), `/video PATH_OR_ID [caption]` (another video: a `.npy` feature file, a video file
when the model decodes videos, or the id of a demo video), `/videos` (list the demo videos), `/caption TEXT`,
`/history`, `/relevance` (print where each answer looked: on / off), `/quit`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
from transformers import HfArgumentParser, TextStreamer

from chat_template_vgd import call_processor, load_feature_file, processor_takes_video_files

DEMO_MODEL_DIR = os.path.join("outputs", "demo")
HELP = (
    "commands: /reset  /video PATH_OR_ID [caption]  /videos  /caption TEXT  /history  /relevance  /help  /quit\n"
    "anything else is a question about the video"
)


@dataclass
class ChatArguments:
    model: str = field(default=DEMO_MODEL_DIR, metadata={"help": "A trained model folder or Hub id (with its processor)."})
    video: str | None = field(
        default=None,
        metadata={"help": "A .npy feature file, a video file (models that decode videos) or a demo video id. "
                  "Default: the first test video of the demo dataset."},
    )
    caption: str | None = field(default=None, metadata={"help": "The video's caption (a demo video brings its own)."})
    data_dir: str | None = field(
        default=None, metadata={"help": "Synthetic dataset folder with the demo videos. Default: <model>/data, else demo-cache/data beside the model folder."}
    )
    max_new_tokens: int = field(default=20, metadata={"help": "The longest answer, in tokens."})
    num_beams: int = field(default=1, metadata={"help": "Beam search width (answers are streamed only with 1)."})
    show_relevance: bool = field(default=False, metadata={"help": "Print where each answer looked in the video."})


# ------------------------------------------------------------------------------------------------ demo videos


def find_demo_videos(data_dir: str | None, video_files: bool = False) -> list[dict[str, str]]:
    """The test videos of a synthetic dataset folder: `[{"image_id", "caption", "path"}]` (empty if none).

    `video_files=False`: their feature files (`features/<stream>_testset/<id>.npy`); `True` (a model that decodes
    videos): their rendered `.mp4` files (`videos_testset/<id>.mp4`, written by `python -m avsd_dataset.synthetic_video`).
    """
    if not data_dir or not os.path.isdir(data_dir):
        return []
    from avsd_dataset.synthetic import FEATURES_DIR, TEST_DIR_SUFFIX, TEST_FILE, load_config
    from avsd_dataset.synthetic_video import TEST_VIDEO_DIR

    try:
        stream = load_config(data_dir).video_stream
        with open(os.path.join(data_dir, TEST_FILE), encoding="utf-8") as f:
            dialogs = json.load(f)["dialogs"]
    except (OSError, ValueError, KeyError):
        return []
    videos = []
    for dialog in dialogs:
        if video_files:
            path = os.path.join(data_dir, TEST_VIDEO_DIR, f"{dialog['image_id']}.mp4")
        else:
            path = os.path.join(data_dir, FEATURES_DIR, stream + TEST_DIR_SUFFIX, f"{dialog['image_id']}.npy")
        if os.path.isfile(path):
            videos.append({"image_id": dialog["image_id"], "caption": dialog["caption"], "path": path})
    return videos


def default_data_dir(model: str) -> str | None:
    """The synthetic dataset of a demo model: `<model>/data`, else `demo-cache/data` beside the model folder (where
    `python run_vgd.py` keeps the demo's newest dataset, outside the model folder)."""
    for candidate in (os.path.join(model, "data"), os.path.join(os.path.dirname(os.path.abspath(model)), "demo-cache", "data")):
        if os.path.isdir(candidate):
            return candidate
    return None


# ------------------------------------------------------------------------------------------------ a dialogue


class DialogueSession:
    """One conversation about one video with a `video-grounded-dialogue` pipeline (used by the terminal chat and
    the web page): the video, its caption and the history `[(question, answer), ...]`, oldest first."""

    def __init__(self, chat_pipeline, demo_videos: list[dict[str, str]] | None = None):
        self.pipeline = chat_pipeline
        self.processor = chat_pipeline.processor
        self.demo_videos = {video["image_id"]: video for video in (demo_videos or [])}
        self.video: Any = None
        self.video_name: str | None = None
        self.caption: str | None = None
        self.history: list[tuple[str, str]] = []

    def load_video(self, video: Any, caption: str | None = None, name: str | None = None) -> str:
        """Start a conversation about `video` (a path, a demo id, frames or features); checks it fits the model.

        Returns a line describing the video. Raises `ValueError` / `FileNotFoundError` with a clear message.
        """
        if isinstance(video, str) and video in self.demo_videos and not os.path.exists(video):
            demo = self.demo_videos[video]
            name, video = video, demo["path"]
            caption = demo["caption"] if caption is None else caption
        label = video if isinstance(video, str) else (name or "the video")  # errors name the file
        if isinstance(video, str) and video.endswith(".npy"):
            name = name or os.path.basename(video)
            video = np.asarray(load_feature_file(video))
        # Check that the video fits the model now rather than at the first question.
        try:
            inputs = call_processor(self.processor, [{"video": video, "caption": caption, "question": "?"}], return_tensors="np")
        except ValueError as error:
            raise ValueError(f"{label}: {str(error).removeprefix('example 0: ')}") from None
        self._check_video_fits(inputs, label)
        self.video, self.caption, self.history = video, caption, []
        self.video_name = name or (video if isinstance(video, str) else "the video")
        frames, regions = self._video_shape(inputs)
        extractor = self.processor.feature_extractor
        if extractor.video_pooling == "spatial_and_temporal":  # P region tokens, then one token per clip
            shape = f"{extractor.num_video_regions} region tokens + {frames - extractor.num_video_regions} clip tokens"
        else:
            shape = f"{frames} frames x {regions} regions"
        return f"video {self.video_name}: {shape}" + (f"; caption: {caption}" if caption else "")

    def _video_shape(self, inputs) -> tuple[int, int]:
        """`(frames, regions)` of the video features the model sees: pre-extracted ones, or those its backbone
        computes from a video file's clips (one frame per clip; pooled like the model's `video_pooling`)."""
        if "video_mask" in inputs:
            return tuple(int(n) for n in inputs["video_mask"].shape[1:])
        if "video_clip_mask" in inputs:
            num_clips = int(np.asarray(inputs["video_clip_mask"]).sum())
            frames, regions = self.processor.video_processor.video_tokens(num_clips)
            return self.processor.feature_extractor.pooled_video_shape(frames, regions)
        return 0, 0

    def _check_video_fits(self, inputs, name: str) -> None:
        config = self.pipeline.model.config
        if "video_mask" not in inputs and "video_clip_mask" not in inputs:
            return
        frames, regions = self._video_shape(inputs)
        if frames > config.max_video_frames:
            raise ValueError(f"{name}: {frames} frames but the model takes at most max_video_frames={config.max_video_frames}")
        if regions > config.max_video_regions:
            raise ValueError(f"{name}: {regions} regions per frame but the model takes at most max_video_regions={config.max_video_regions}")

    def reset(self) -> None:
        self.history = []

    def ask(self, question: str, return_video_relevance: bool = False, **generate_kwargs) -> dict[str, Any]:
        """Answer `question` and add the turn to the history.

        Returns `{"answer", "video_relevance" (or None), "notice" (a line about a truncated history, or None)}`.
        """
        if not isinstance(question, str) or not question.strip():
            raise ValueError("the question is empty: type a question about the video")
        if self.video is None:
            raise ValueError("no video loaded: load one first")
        stats = self.processor.truncation_stats
        dropped_before = stats.history_turns_dropped
        output = self.pipeline(
            video=self.video,
            caption=self.caption,
            history=list(self.history),
            question=question.strip(),
            return_video_relevance=return_video_relevance,
            **generate_kwargs,
        )
        dropped = stats.history_turns_dropped - dropped_before
        notice = None
        if dropped:
            notice = (
                f"the history has {len(self.history)} turns; the model takes {len(self.history) - dropped}: the "
                f"{dropped} oldest were left out of this answer, as in training"
            )
        self.history.append((question.strip(), output["answer"]))
        return {"answer": output["answer"], "video_relevance": output.get("video_relevance"), "notice": notice}


def describe_relevance(relevance: np.ndarray | None) -> str:
    """One line: the share of the answer's attention on each frame, and the top region."""
    if relevance is None:
        return "where it looked: (no video)"
    shares = relevance.sum(axis=1)
    frame, region = np.unravel_index(int(np.argmax(relevance)), relevance.shape)
    per_frame = "  ".join(f"f{f + 1} {share:.0%}" for f, share in enumerate(shares))
    return f"where it looked: {per_frame}  (top region: frame {frame + 1}, region {region + 1})"


# ------------------------------------------------------------------------------------------------ terminal


class _AnswerStreamer(TextStreamer):
    """Prints the answer's tokens to `stream` as they are generated (the prompt and special tokens skipped)."""

    def __init__(self, tokenizer, stream: TextIO):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.stream = stream
        self.started = False

    def on_finalized_text(self, text: str, stream_end: bool = False):
        if not self.started:
            text = text.lstrip()
            self.started = bool(text)
        self.stream.write(text + ("\n" if stream_end else ""))
        self.stream.flush()


def load_chat_pipeline(model: str):
    """`pipeline("video-grounded-dialogue", model=model, trust_remote_code=True)` with a clear error when the model
    folder is missing."""
    from transformers import pipeline

    from vgd_training.hub_access import check_model_source

    if model == DEMO_MODEL_DIR and not os.path.exists(model):
        raise FileNotFoundError(f"no model at {model}: train the demo with `python run_vgd.py` or pass --model PATH_OR_HUB_ID")
    check_model_source(model, flag="--model")  # a missing folder / unreachable Hub in one line, not as a bad repo id
    return pipeline("video-grounded-dialogue", model=model, trust_remote_code=True)


def run_chat(session: DialogueSession, args: ChatArguments, stdin: TextIO, stdout: TextIO) -> None:
    """The read-answer loop (reads until `/quit` or the end of input)."""
    show_relevance = args.show_relevance
    generate_kwargs = {"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams}
    stdout.write(HELP + "\n")
    while True:
        stdout.write("you> ")
        stdout.flush()
        line = stdin.readline()
        if not line:
            stdout.write("\n")
            return
        line = line.strip()
        if not line:
            stdout.write("(the question is empty: type a question about the video, or /help)\n")
            continue
        answering = False
        try:
            if line.startswith("/"):
                command, _, rest = line.partition(" ")
                rest = rest.strip()
                if command in ("/quit", "/exit"):
                    return
                if command == "/help":
                    stdout.write(HELP + "\n")
                elif command == "/reset":
                    session.reset()
                    stdout.write("(history cleared)\n")
                elif command == "/videos":
                    for video in session.demo_videos.values():
                        stdout.write(f"  {video['image_id']}: {video['caption']}\n")
                    if not session.demo_videos:
                        stdout.write("(no demo videos found; pass --data_dir)\n")
                elif command == "/video":
                    if not rest:
                        raise ValueError("usage: /video PATH_OR_ID [caption]")
                    target, _, caption = rest.partition(" ")
                    stdout.write("(" + session.load_video(target, caption.strip() or None) + ")\n")
                elif command == "/caption":
                    session.caption = rest or None
                    stdout.write(f"(caption: {session.caption})\n")
                elif command == "/history":
                    for question, answer in session.history:
                        stdout.write(f"  you> {question}\n  model> {answer}\n")
                    if not session.history:
                        stdout.write("(no history)\n")
                elif command == "/relevance":
                    show_relevance = not show_relevance
                    stdout.write(f"(relevance {'on' if show_relevance else 'off'})\n")
                else:
                    stdout.write(f"(unknown command {command})\n{HELP}\n")
                continue
            stdout.write("model> ")
            stdout.flush()
            answering = True
            streamer = _AnswerStreamer(session.processor.tokenizer, stdout) if args.num_beams == 1 else None
            result = session.ask(
                line, return_video_relevance=show_relevance, **generate_kwargs, **({"streamer": streamer} if streamer else {})
            )
            if streamer is None:
                stdout.write(result["answer"] + "\n")
            elif not streamer.started:
                stdout.write("\n")
            if result["notice"]:
                stdout.write(f"(note: {result['notice']})\n")
            if show_relevance:
                stdout.write(describe_relevance(result["video_relevance"]) + "\n")
        except (ValueError, FileNotFoundError, OSError) as error:
            stdout.write(("\n" if answering else "") + f"(error: {error})\n")


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(ChatArguments).parse_args_into_dataclasses(args=argv)
    # The chat prints its own notes (e.g. about a truncated history) between the streamed answers.
    for name in ("transformers", "transformers_modules", "pipeline_vgd"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        chat_pipeline = load_chat_pipeline(args.model)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    demo_videos = find_demo_videos(args.data_dir or default_data_dir(args.model), processor_takes_video_files(chat_pipeline.processor))
    session = DialogueSession(chat_pipeline, demo_videos)
    video = args.video
    if video is None:
        if not demo_videos:
            print("error: no --video given and no demo videos found (pass --video PATH or --data_dir)", file=sys.stderr)
            return 1
        video = demo_videos[0]["image_id"]
    try:
        print(session.load_video(video, args.caption))
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    run_chat(session, args, sys.stdin, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
