"""A web page to talk to a trained VGD-GPT2 model about a video and see where each answer looked (Gradio).

```bash
python -m vgd_apps.web                          # the demo model (outputs/demo) and its synthetic test videos
python -m vgd_apps.web --model PATH_OR_HUB_ID --data_dir FOLDER --port 7860
```
Pick a demo video (or upload a `.npy` feature file, or a video file for a model that decodes videos), ask
questions; next to each answer the page draws the video relevance map of that answer over the sampled frames (the
region heatmap alone when the video is pre-extracted features). Runs offline.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from transformers import HfArgumentParser

from chat_template_vgd import processor_takes_video_files
from vgd_apps.chat import DEMO_MODEL_DIR, DialogueSession, default_data_dir, describe_relevance, find_demo_videos, load_chat_pipeline

logger = logging.getLogger(__name__)


@dataclass
class AppArguments:
    model: str = field(default=DEMO_MODEL_DIR, metadata={"help": "A trained model folder or Hub id (with its processor)."})
    data_dir: str | None = field(default=None, metadata={"help": "Synthetic dataset folder with the demo videos. Default: <model>/data, else demo-cache/data beside the model folder."})
    host: str = field(default="127.0.0.1", metadata={"help": "Address to serve on."})
    port: int = field(default=7860, metadata={"help": "Port to serve on."})
    max_new_tokens: int = field(default=20, metadata={"help": "The longest answer, in tokens."})
    num_beams: int = field(default=1, metadata={"help": "Beam search width."})
    max_demo_videos: int = field(default=50, metadata={"help": "How many demo videos the picker lists."})


def sample_frames(video: Any, num_frames: int, video_processor=None) -> np.ndarray | None:
    """Frames `[F, H, W, 3]` to draw under a relevance map of `num_frames` rows: with the processor's video
    processor (a model that decodes videos), the middle frame of each clip it feeds the backbone (one per feature
    frame, decoded and resampled exactly as for the answer); otherwise `num_frames` frames spread uniformly over
    the file / frames array. `None` for features (nothing to draw under the heatmap) or a file that cannot be
    decoded here."""
    try:
        if isinstance(video, str) and video.endswith(".npy") or not isinstance(video, (str, np.ndarray)):
            return None
        if isinstance(video, np.ndarray) and video.ndim != 4:
            return None
        if getattr(video_processor, "video_backbone", None) is not None:
            from video_processing_vgd import clip_frame_indices

            frames, _ = video_processor.load_frames(video, fps=video_processor.fps)
            clips = clip_frame_indices(len(frames), int(video_processor.clip_length), int(video_processor.max_clips))
            if len(clips) == num_frames:
                return np.asarray(frames)[clips[:, clips.shape[1] // 2]]
            if len(clips) > num_frames:  # the model keeps fewer frames (max_video_frames): spread like it does
                from feature_extraction_vgd import uniform_frame_indices

                return np.asarray(frames)[clips[uniform_frame_indices(len(clips), num_frames), clips.shape[1] // 2]]
            return None
        if isinstance(video, np.ndarray):
            frames = video
        else:
            from transformers.video_utils import load_video

            frames, _ = load_video(video, backend="pyav")
        from feature_extraction_vgd import uniform_frame_indices

        return np.asarray(frames)[uniform_frame_indices(len(frames), num_frames)]
    except Exception:  # drawing without frames is fine; the answer does not depend on this
        logger.warning("could not decode frames of %r for drawing", video, exc_info=True)
        return None


def relevance_png(relevance: np.ndarray, frames: np.ndarray | None, title: str, folder: str) -> str:
    """Draw the map into a new PNG in `folder`; returns its path."""
    import matplotlib.pyplot as plt

    from vgd_apps.visualization import plot_video_relevance

    handle, path = tempfile.mkstemp(suffix=".png", prefix="relevance-", dir=folder)
    os.close(handle)
    figure = plot_video_relevance(relevance, frames=frames if frames is not None and len(frames) == len(relevance) else None, path=path, title=title)
    plt.close(figure)
    return path


def build_demo(chat_pipeline, demo_videos: list[dict[str, str]], max_new_tokens: int = 20, num_beams: int = 1):
    """The Gradio Blocks of the page. Handlers never raise: every problem is shown in the status line."""
    import gradio as gr

    figure_dir = tempfile.mkdtemp(prefix="vgd-app-")
    session = DialogueSession(chat_pipeline, demo_videos)  # knows the demo ids; holds no per-visitor state
    choices = [(f"{video['image_id']}: {video['caption']}", video["image_id"]) for video in demo_videos]
    first = demo_videos[0] if demo_videos else None

    def fail(error: Exception) -> str:
        if isinstance(error, (ValueError, OSError)):
            return f"**Error:** {error}"
        logger.exception("unexpected error")
        return f"**Internal error** ({type(error).__name__}): {error}"

    def current_video(demo_id, upload):
        if upload:
            return upload if isinstance(upload, str) else getattr(upload, "name", upload)
        if demo_id:
            return demo_id
        raise ValueError("no video: pick a demo video or upload a .npy feature file or a video file")

    def select_video(demo_id, upload):
        """A new video (picked or uploaded): check it, show its caption, start a new conversation."""
        try:
            video = current_video(demo_id, upload)
            caption = session.demo_videos[video]["caption"] if video in session.demo_videos else ""
            line = session.load_video(video, caption or None, name=None if video in session.demo_videos else os.path.basename(video))
            return caption, [], [], None, line
        except Exception as error:
            return gr.update(), [], [], None, fail(error)

    def ask(question, demo_id, upload, caption, messages, history):
        messages = list(messages or [])
        history = [tuple(turn) for turn in (history or [])]
        try:
            if not question or not question.strip():
                raise ValueError("the question is empty: type a question about the video")
            video = current_video(demo_id, upload)
            name = video if video in session.demo_videos else os.path.basename(video)
            session.load_video(video, (caption or "").strip() or None, name=name)
            session.history = list(history)
            result = session.ask(question, return_video_relevance=True, max_new_tokens=max_new_tokens, num_beams=num_beams)
            answer, relevance = result["answer"], result["video_relevance"]
            image = None
            messages.append({"role": "user", "content": question.strip()})
            messages.append({"role": "assistant", "content": answer})
            status = f"Turn {len(session.history)}: answered from {name}."
            if relevance is not None:
                frames = sample_frames(session.video, len(relevance), getattr(session.processor, "video_processor", None))
                image = relevance_png(relevance, frames, f"Q: {question.strip()}   A: {answer}", figure_dir)
                messages.append({"role": "assistant", "content": gr.Image(image, show_label=False)})
                status += " " + describe_relevance(relevance)
            if result["notice"]:
                status += f"\n\nNote: {result['notice']}"
            return "", messages, session.history, image, status
        except Exception as error:
            return gr.update(), messages, history, gr.update(), fail(error)

    def reset():
        return [], [], None, "History cleared."

    with gr.Blocks(title="VGD-GPT2: talk about a video") as demo:
        gr.Markdown(
            "## VGD-GPT2: talk about a video\nPick a video, ask a question; next to each answer, the video relevance "
            "map: how much the answer's tokens attended to each frame and region (attention averaged over layers and heads)."
        )
        history_state = gr.State([])
        with gr.Row():
            with gr.Column(scale=1):
                demo_video = gr.Dropdown(choices=choices, value=first["image_id"] if first else None, label="Demo video", elem_id="demo-video")
                upload = gr.File(label="...or upload features (.npy) / a video file", file_types=[".npy", "video"], type="filepath", elem_id="upload")
                caption = gr.Textbox(value=first["caption"] if first else "", label="Caption", elem_id="caption")
                reset_button = gr.Button("New conversation", elem_id="reset")
            with gr.Column(scale=2):
                chatbot = gr.Chatbot(label="Dialogue", elem_id="chatbot", height=420, render_markdown=False)
                question = gr.Textbox(label="Question", placeholder="what does she do first ?", elem_id="question")
                ask_button = gr.Button("Ask", variant="primary", elem_id="ask")
                status = gr.Markdown("", elem_id="status")
            with gr.Column(scale=2):
                relevance_image = gr.Image(label="Where the last answer looked", type="filepath", elem_id="relevance", interactive=False)

        inputs = [question, demo_video, upload, caption, chatbot, history_state]
        outputs = [question, chatbot, history_state, relevance_image, status]
        ask_button.click(ask, inputs, outputs)
        question.submit(ask, inputs, outputs)
        reset_button.click(reset, None, [chatbot, history_state, relevance_image, status])
        for component in (demo_video, upload):
            component.change(select_video, [demo_video, upload], [caption, chatbot, history_state, relevance_image, status])
    return demo


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(AppArguments).parse_args_into_dataclasses(args=argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        chat_pipeline = load_chat_pipeline(args.model)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    video_files = processor_takes_video_files(chat_pipeline.processor)
    demo_videos = find_demo_videos(args.data_dir or default_data_dir(args.model), video_files)[: args.max_demo_videos]
    demo = build_demo(chat_pipeline, demo_videos, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams)
    print(f"serving on http://{args.host}:{args.port}", flush=True)
    demo.launch(server_name=args.host, server_port=args.port, show_error=False, ssr_mode=False, quiet=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
