"""A tiny saved VGD-GPT2 model (random weights) with its processor and a small synthetic dataset in `<model>/data`,
laid out like the demo (`python run_vgd.py` writes `outputs/demo` and `outputs/demo/data`). Shared by the chat,
pipeline and web-page tests."""

import os

import torch

FEATURE_DIM = 16
MAX_NEW_TOKENS = 5


def build_tiny_chat_model(folder: str, max_turns: int = 6, n_layer: int = 2) -> str:
    """Write the synthetic data, a tiny GPT-2 on its texts, and a VGD-GPT2 model + processor into `folder`."""
    from avsd_dataset.offline_gpt2 import build_offline_gpt2
    from avsd_dataset.synthetic import corpus_texts, generate_synthetic_avsd
    from modeling_vgd_gpt2 import VGDGPT2ForDialogue
    from processing_vgd import VGDProcessor

    data_dir = os.path.join(folder, "data")
    generate_synthetic_avsd(
        data_dir, num_train_dialogs=12, num_valid_dialogs=4, num_test_dialogs=8, feature_dim=FEATURE_DIM, num_regions=4, seed=3
    )
    gpt2_dir = os.path.join(folder, "gpt2")
    build_offline_gpt2(corpus_texts(data_dir), gpt2_dir, vocab_size=300, n_positions=128, n_embd=32, n_layer=n_layer, n_head=2)
    processor = VGDProcessor.from_gpt2_pretrained(gpt2_dir, video_feature_dim=FEATURE_DIM, max_video_frames=8, max_turns=max_turns)
    torch.manual_seed(0)
    model = VGDGPT2ForDialogue.from_gpt2_pretrained(gpt2_dir, processor=processor, max_video_regions=8).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
