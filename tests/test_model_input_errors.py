"""A wrong model configuration or a model without weights fails with a message naming the problem, not deep inside
a tensor op (issue 22, item 5)."""

import pytest
import torch

from configuration_vgd_gpt2 import VGDGPT2Config
from modeling_vgd_gpt2 import VGDGPT2ForDialogue

TINY = dict(n_layer=1, n_head=2, n_embd=8, n_positions=64, vocab_size=300, video_feature_dim=4, bos_token_id=0, eos_token_id=0)


@pytest.mark.parametrize("name, value", [("n_embd", -5), ("n_layer", 0), ("n_head", 0), ("vocab_size", -1), ("n_positions", 0)])
def test_a_non_positive_size_is_named(name, value):
    with pytest.raises(ValueError, match=rf"VGDGPT2Config: {name} must be a positive int, got {value}"):
        VGDGPT2Config(**{**TINY, name: value})


def test_a_width_that_the_heads_do_not_divide_is_named():
    with pytest.raises(ValueError, match=r"n_embd \(10\) must be a multiple of n_head \(4\)"):
        VGDGPT2Config(**{**TINY, "n_embd": 10, "n_head": 4})


def test_a_meta_device_model_says_its_weights_are_not_loaded():
    with torch.device("meta"):
        model = VGDGPT2ForDialogue(VGDGPT2Config(**TINY))
    with pytest.raises(RuntimeError, match="weights are on the meta device"):
        model(input_ids=torch.zeros(1, 3, dtype=torch.long))
