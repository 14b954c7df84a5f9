import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

SHARED_AVSD_DIR = os.path.abspath(os.path.join(REPO_ROOT, "..", "shared", "avsd"))

TINY_CORPUS = [
    "a man opens a window and looks outside .",
    "a woman sits on a couch reading a book .",
    "is he alone ? yes he is alone in the room .",
    "what does she do next ? she puts the book on the table .",
    "how many people are there ? there are two people .",
    "what color is the cup ? the cup is red .",
    "does he say anything ? no , there is no sound .",
    "the person walks to the door and leaves the kitchen .",
] * 20


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory):
    """A plain, tiny GPT-2 checkpoint + tokenizer in a folder (stands in for "gpt2")."""
    from avsd_dataset.offline_gpt2 import build_offline_gpt2

    path = str(tmp_path_factory.mktemp("tiny_gpt2"))
    return build_offline_gpt2(TINY_CORPUS, path, vocab_size=400, n_positions=128, n_embd=32, n_layer=2, n_head=2)
