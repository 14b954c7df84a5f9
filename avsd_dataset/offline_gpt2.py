"""Build a plain GPT-2 checkpoint and tokenizer offline.

The embedded demo and the tests cannot download `gpt2` from the Hub. These helpers write a folder
that looks exactly like a downloaded GPT-2 checkpoint (a byte-level BPE tokenizer trained on the
given texts, and a randomly initialised `GPT2LMHeadModel`), so that the real
`VGDProcessor.from_gpt2_pretrained` / `VGDGPT2ForDialogue.from_gpt2_pretrained` code paths run on it.
"""

from __future__ import annotations

import os
from typing import Iterable

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

EOS_TOKEN = "<|endoftext|>"


def train_gpt2_tokenizer(
    texts: Iterable[str], output_dir: str, vocab_size: int = 1000, model_max_length: int = 1024
) -> GPT2Tokenizer:
    """Train a byte-level BPE on `texts` and save it in `output_dir` as a plain GPT-2 tokenizer.

    Takes milliseconds for a few thousand sentences. The result loads with
    `GPT2Tokenizer.from_pretrained(output_dir)` like the real `gpt2` tokenizer.
    """
    os.makedirs(output_dir, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1, special_tokens=[EOS_TOKEN], show_progress=False)
    bpe.save_model(output_dir)
    tokenizer = GPT2Tokenizer.from_pretrained(output_dir, model_max_length=model_max_length)
    tokenizer.save_pretrained(output_dir)
    return tokenizer


def save_random_gpt2(
    output_dir: str,
    vocab_size: int,
    n_positions: int = 1024,
    n_embd: int = 768,
    n_layer: int = 12,
    n_head: int = 12,
    seed: int = 0,
    dropout: float = 0.1,
    activation_function: str = "gelu_new",
) -> GPT2LMHeadModel:
    """Save a randomly initialised `GPT2LMHeadModel` of the given shape (dropout, MLP activation) in `output_dir`.

    `activation_function` is GPT-2's `gelu_new` by default; `gelu_pytorch_tanh` is the same tanh approximation as one
    fused kernel instead of several element-wise ones (a few percent faster on a CPU for the demo's small model)."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        activation_function=activation_function,
    )
    model = GPT2LMHeadModel(config)
    model.save_pretrained(output_dir)
    return model


def build_offline_gpt2(
    texts: Iterable[str],
    output_dir: str,
    vocab_size: int = 1000,
    n_positions: int = 1024,
    n_embd: int = 768,
    n_layer: int = 12,
    n_head: int = 12,
    seed: int = 0,
    dropout: float = 0.1,
    activation_function: str = "gelu_new",
) -> str:
    """Write a tokenizer trained on `texts` and a random GPT-2 of the given shape into `output_dir`.

    Returns `output_dir`, which then stands in for `"gpt2"` in every `from_gpt2_pretrained` call.
    """
    tokenizer = train_gpt2_tokenizer(texts, output_dir, vocab_size=vocab_size, model_max_length=n_positions)
    if tokenizer.convert_tokens_to_ids(EOS_TOKEN) != 0:
        raise RuntimeError(f"expected {EOS_TOKEN} to get id 0 in the trained tokenizer")
    save_random_gpt2(output_dir, len(tokenizer), n_positions, n_embd, n_layer, n_head, seed, dropout, activation_function)
    return output_dir
