"""VGDGPT2ForDialogue against what transformers' common model / generation test batteries check
(`ModelTesterMixin`, `GenerationTesterMixin`): tuple outputs, 4-D masks, static cache with padding,
`torch.compile(fullgraph=True)`, `torch.export`, cache continuation, deprecations, padding sides, dtypes,
resizing the embeddings; and a clear error for every input the model cannot take. Tiny configs only."""

import warnings

import pytest
import torch
from transformers import CompileConfig, DynamicCache, LogitsProcessor, LogitsProcessorList, StaticCache

from configuration_vgd_gpt2 import VGDGPT2Config
from modeling_vgd_gpt2 import VGDGPT2ForDialogue, compute_modality_and_turn_ids, compute_position_ids
from test_modeling import CAP, CLS, DIM, EXAMPLES, MASK, PAD, SYS, USR, VIDEO, VOCAB, collate, make_example, tiny_config, training_batch

STRUCTURAL = [VIDEO, CAP, USR, SYS, CLS, MASK, PAD]
GREEDY = dict(max_new_tokens=6, do_sample=False, pad_token_id=PAD)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VGDGPT2ForDialogue(tiny_config(attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)).eval()


def real_positions_equal(a, b, mask_a, mask_b):
    torch.testing.assert_close(a[mask_a.bool()], b[mask_b.bool()], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- outputs


def test_return_dict_false_gives_the_tuple_of_the_output(model):
    batch = training_batch()
    with torch.no_grad():
        output = model(**batch)
        as_tuple = model(**batch, return_dict=False)
    assert isinstance(as_tuple, tuple)
    expected = output.to_tuple()
    assert len(as_tuple) == len(expected)
    torch.testing.assert_close(as_tuple[0], output.loss)  # loss first, as in GPT-2
    for got, want in zip(as_tuple, expected):
        if isinstance(want, torch.Tensor):
            torch.testing.assert_close(got, want)


def test_return_dict_false_in_the_config(model):
    torch.manual_seed(0)
    tuple_model = VGDGPT2ForDialogue(tiny_config(return_dict=False)).eval()
    tuple_model.load_state_dict(model.state_dict())
    batch = collate(EXAMPLES)
    with torch.no_grad():
        out = tuple_model(**batch)
        assert isinstance(out, tuple)
        torch.testing.assert_close(out[0], model(**batch).logits)  # no labels: logits first
        assert isinstance(tuple_model(**batch, return_dict=True).logits, torch.Tensor)


def test_hidden_states_are_returned_per_layer(model):
    with torch.no_grad():
        out = model(**collate(EXAMPLES), output_hidden_states=True)
    assert len(out.hidden_states) == model.config.n_layer + 1
    assert out.hidden_states[0].shape == (len(EXAMPLES), out.logits.shape[1], model.config.n_embd)


def test_logits_to_keep_keeps_the_last_positions(model):
    batch = collate(EXAMPLES)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch, logits_to_keep=1).logits, model(**batch).logits[:, -1:])


# ---------------------------------------------------------------- masks and padding


def four_d_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Boolean [B, 1, L, L]: causal and not attending to padding (True = attend)."""
    length = attention_mask.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    return (causal[None, None] & attention_mask.bool()[:, None, None, :]).contiguous()


def test_4d_attention_mask_gives_the_2d_result(model):
    batch = collate(EXAMPLES)
    with torch.no_grad():
        reference = model(**batch).logits
        boolean = model(**dict(batch, attention_mask=four_d_mask(batch["attention_mask"]))).logits
        additive_mask = torch.zeros(four_d_mask(batch["attention_mask"]).shape).masked_fill(~four_d_mask(batch["attention_mask"]), torch.finfo(torch.float32).min)
        additive = model(**dict(batch, attention_mask=additive_mask)).logits
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(boolean[real], reference[real], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(additive[real], reference[real], rtol=1e-4, atol=1e-5)


def test_left_and_right_padding_give_the_same_logits(model):
    left, right = collate(EXAMPLES, padding_side="left"), collate(EXAMPLES, padding_side="right")
    with torch.no_grad():
        real_positions_equal(model(**left).logits, model(**right).logits, left["attention_mask"], right["attention_mask"])


def test_batched_forward_equals_one_by_one(model):
    batch = collate(EXAMPLES)
    with torch.no_grad():
        batched = model(**batch).logits
        for i, example in enumerate(EXAMPLES):
            single = collate([example])
            real_positions_equal(batched[i : i + 1], model(**single).logits, batch["attention_mask"][i : i + 1], single["attention_mask"])


def test_packed_sequences_are_rejected_and_a_mask_makes_position_ids_fine(model):
    first, _, _ = make_example(0, 0, [5, 6], [], [7])
    second, _, _ = make_example(0, 0, [8], [], [9, 10])
    packed = torch.tensor([first + second])
    restart = torch.tensor([list(range(len(first))) + list(range(len(second)))])
    with pytest.raises(ValueError, match=f"position_ids restart at row 0, position {len(first)} without an attention_mask: packed"):
        model(input_ids=packed, position_ids=restart)
    # the positions the model derives itself, given explicitly without a mask: not packed, same result
    ids = collate(EXAMPLES[:1])
    positions = compute_position_ids(ids["input_ids"], ids["attention_mask"], VIDEO, ids["video_mask"])
    with torch.no_grad():
        torch.testing.assert_close(
            model(input_ids=ids["input_ids"], position_ids=positions, video_features=ids["video_features"]).logits,
            model(**ids).logits,
        )


# ---------------------------------------------------------------- caches


@pytest.mark.parametrize("generation_kwargs", [dict(), dict(num_beams=3)])
def test_static_cache_with_a_left_padded_batch_equals_the_dynamic_cache(model, generation_kwargs):
    batch = collate(EXAMPLES)
    dynamic = model.generate(**batch, **GREEDY, **generation_kwargs)
    static = model.generate(**batch, cache_implementation="static", **GREEDY, **generation_kwargs)
    assert torch.equal(dynamic, static)


def test_forward_with_a_static_cache_equals_the_dynamic_cache(model):
    batch = collate(EXAMPLES)
    length = batch["input_ids"].shape[1]
    static = StaticCache(config=model.config, max_cache_len=length + 4)
    with torch.no_grad():
        dynamic_logits = model(**batch, cache=DynamicCache(config=model.config), use_cache=True).logits
        static_logits = model(**batch, cache=static, use_cache=True).logits
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(static_logits[real], dynamic_logits[real], rtol=1e-4, atol=1e-5)


def test_past_key_values_is_deprecated_for_cache_like_gpt2(model):
    batch = collate(EXAMPLES[:1])
    with torch.no_grad():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            old_name = model(**batch, past_key_values=DynamicCache(config=model.config), use_cache=True)
        new_name = model(**batch, cache=DynamicCache(config=model.config), use_cache=True)
    assert any("`past_key_values` is deprecated" in str(w.message) and "`cache`" in str(w.message) for w in caught)
    torch.testing.assert_close(old_name.logits, new_name.logits)
    assert old_name.cache.get_seq_length() == batch["input_ids"].shape[1]


class ForceTokenAt(LogitsProcessor):
    """Forces `token_id` as the token generated when the sequence is `length` long."""

    def __init__(self, length: int, token_id: int):
        self.length, self.token_id = length, token_id

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] == self.length:
            scores = torch.full_like(scores, -float("inf"))
            scores[:, self.token_id] = 0.0
        return scores


@pytest.mark.parametrize("continue_with_prompt_ids", [True, False])
def test_continuing_from_a_returned_cache_equals_one_shot_generation(model, continue_with_prompt_ids):
    """A `<usr>` marker among the generated tokens: the continued call (given the prompt's modality / turn ids
    or not) must derive the ids of the tokens after it exactly as the one-shot call does (scores compared,
    not only their argmax)."""
    batch = collate(EXAMPLES)
    modality_ids, turn_ids = compute_modality_and_turn_ids(batch["input_ids"], model.config)
    batch.update(modality_ids=modality_ids, turn_ids=turn_ids)  # what the processor returns with the prompt
    prompt_length = batch["input_ids"].shape[1]
    force_usr = LogitsProcessorList([ForceTokenAt(prompt_length + 1, USR)])  # the 2nd generated token
    greedy = dict(do_sample=False, pad_token_id=PAD, return_dict_in_generate=True, output_logits=True, logits_processor=force_usr)
    one_shot = model.generate(**batch, max_new_tokens=8, **greedy)
    assert (one_shot.sequences[:, prompt_length + 1] == USR).all()
    first = model.generate(**batch, max_new_tokens=4, **greedy)
    mask = torch.cat([batch["attention_mask"], torch.ones_like(first.sequences[:, prompt_length:])], dim=1)
    continuation = dict(batch, input_ids=first.sequences, attention_mask=mask)
    if not continue_with_prompt_ids:
        del continuation["modality_ids"], continuation["turn_ids"]
    continued = model.generate(**continuation, cache=first.cache, max_new_tokens=4, **greedy)
    assert continued.sequences.tolist() == one_shot.sequences.tolist()
    for step in range(4):  # the scores too, not only their argmax
        torch.testing.assert_close(continued.logits[step], one_shot.logits[4 + step], rtol=1e-4, atol=1e-5)


def test_generated_tokens_take_the_modality_of_the_markers(model):
    """Without given ids, in one-shot generation the fed modality / turn ids are those of the markers."""
    fed = []
    recorder = model.register_forward_pre_hook(lambda m, a, kw: fed.append((kw["modality_ids"], kw["turn_ids"])), with_kwargs=True)
    try:
        sequences = model.generate(**collate(EXAMPLES), max_new_tokens=6, do_sample=False, pad_token_id=PAD)
    finally:
        recorder.remove()
    expected_modality, expected_turn = compute_modality_and_turn_ids(sequences, model.config)
    for step, (modality, turn) in enumerate(fed[1:], start=1):
        column = sequences.shape[1] - 6 + step - 1
        assert modality[:, 0].tolist() == expected_modality[:, column].tolist()
        assert turn[:, 0].tolist() == expected_turn[:, column].tolist()


# ---------------------------------------------------------------- compile and export


def test_forward_compiles_with_fullgraph(model):
    torch._dynamo.reset()
    batch = collate(EXAMPLES)
    compiled = torch.compile(model.forward, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(**batch, use_cache=False).logits, model(**batch).logits)
    assert VGDGPT2ForDialogue._can_compile_fullgraph


def test_compiled_static_cache_generation_equals_eager_dynamic(model):
    torch._dynamo.reset()
    compile_config = CompileConfig(fullgraph=True, backend="eager")
    compile_config._compile_all_devices = True  # transformers compiles on accelerators only by default
    batch = collate(EXAMPLES)
    eager = model.generate(**batch, **GREEDY)
    compiled = model.generate(**batch, cache_implementation="static", compile_config=compile_config, **GREEDY)
    assert hasattr(model, "_compiled_call"), "the decoding steps did not go through the compiled forward"
    assert torch.equal(eager, compiled)
    del model._compiled_call


def test_beam_search_with_a_compiled_forward_and_static_cache_compiles_two_graphs(model):
    """transformers compiles the forward inside generate() for greedy search / sampling only; compiled by hand,
    beam search with a static cache needs one graph for the prefill and one for all decoding steps."""
    from torch._dynamo.utils import counters

    batch = collate(EXAMPLES)
    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=PAD, num_beams=2)
    eager = model.generate(**batch, **kwargs)
    torch._dynamo.reset()
    counters.clear()
    model.forward = torch.compile(model.forward, fullgraph=True, dynamic=False, backend="eager")
    try:
        compiled = model.generate(**batch, cache_implementation="static", **kwargs)
    finally:
        del model.forward
    assert counters["stats"]["unique_graphs"] == 2
    assert torch.equal(eager, compiled)


def test_forward_exports_with_torch_export(model):
    batch = collate(EXAMPLES)
    exported = torch.export.export(model, args=(), kwargs=dict(batch, use_cache=False))
    with torch.no_grad():
        out = exported.module()(**batch, use_cache=False)
        torch.testing.assert_close(out["logits"], model(**batch).logits)


# ---------------------------------------------------------------- dtypes, checkpointing, embeddings, saving


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_generation_runs_with_both_caches(model, dtype):
    torch.manual_seed(0)
    half = VGDGPT2ForDialogue(tiny_config()).to(dtype).eval()
    batch = collate(EXAMPLES)
    with torch.no_grad():
        assert half(**batch).logits.dtype == dtype
    dynamic = half.generate(**batch, **GREEDY)
    static = half.generate(**batch, cache_implementation="static", **GREEDY)
    assert dynamic.shape == static.shape == (len(EXAMPLES), batch["input_ids"].shape[1] + 6)


def test_resize_token_embeddings_keeps_weights_tied_and_the_model_usable():
    torch.manual_seed(0)
    model = VGDGPT2ForDialogue(tiny_config()).eval()
    old_rows = model.get_input_embeddings().weight[:VOCAB].clone()
    model.resize_token_embeddings(VOCAB + 7)
    assert model.config.vocab_size == VOCAB + 7
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    torch.testing.assert_close(model.get_input_embeddings().weight[:VOCAB], old_rows)
    batch = collate(EXAMPLES)
    batch["input_ids"][0, -2] = VOCAB + 5  # a new token is accepted
    with torch.no_grad():
        assert model(**batch).logits.shape[-1] == VOCAB + 7
    batch["input_ids"][0, -2] = VOCAB + 7
    with pytest.raises(ValueError, match="id 57 but the vocabulary has 57 entries"):
        model(**batch)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients_for_all_objectives():
    torch.manual_seed(0)
    model = VGDGPT2ForDialogue(tiny_config(attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)).train()
    batch = training_batch()
    out = model(**batch)
    (out.loss + out.mlm_loss + out.mvm_loss + out.mvt_loss).backward()
    reference = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.activation_checkpointing_enable()
    out = model(**batch)
    (out.loss + out.mlm_loss + out.mvm_loss + out.mvt_loss).backward()
    for name, p in model.named_parameters():
        if name in reference:
            torch.testing.assert_close(p.grad, reference[name], rtol=1e-4, atol=1e-6)


def test_save_and_load_in_bfloat16_keeps_dtype_and_outputs(model, tmp_path):
    half = VGDGPT2ForDialogue(model.config).to(torch.bfloat16).eval()
    half.load_state_dict({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()})
    half.save_pretrained(tmp_path)
    reloaded = VGDGPT2ForDialogue.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert reloaded.dtype == torch.bfloat16
    batch = collate(EXAMPLES)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, half(**batch).logits)


# ---------------------------------------------------------------- inputs the model cannot take


def test_generate_rejects_inputs_embeds_clearly(model):
    with pytest.raises(ValueError, match="takes input_ids .* not inputs_embeds"):
        model.generate(inputs_embeds=torch.zeros(1, 3, model.config.n_embd), max_new_tokens=2)
    with pytest.raises(ValueError, match="not inputs_embeds"):
        model(inputs_embeds=torch.zeros(1, 3, model.config.n_embd))


def test_generate_says_when_the_prompt_leaves_no_room(model):
    positions = model.config.n_positions
    full, video, _ = make_example(1, 2, [5] * (positions - 5), [], [6])  # text: <cap> + 59 + <usr> 6 <sys> = 63
    text_length = len(full) - 2
    batch = collate([(full, video, [-100] * len(full))])
    with pytest.raises(ValueError, match=f"only {positions - text_length} of the requested max_new_tokens=6 fit in the {positions} positions"):
        model.generate(**batch, **GREEDY)
    assert model.generate(**batch, max_new_tokens=positions - text_length, do_sample=False, pad_token_id=PAD).shape[1] <= len(full) + 1
    filled, video, _ = make_example(1, 2, [5] * (positions - 4), [], [6])
    batch = collate([(filled, video, [-100] * len(filled))])
    with pytest.raises(ValueError, match=f"fills all {positions} positions .* no room to generate"):
        model.generate(**batch, **GREEDY)


def test_video_mask_inconsistent_with_the_placeholders_in_generate(model):
    batch = collate(EXAMPLES)
    batch["video_mask"][0, 0, 0] = False  # one region fewer than example 0's placeholders
    with pytest.raises(ValueError, match=r"examples \[0\]: the number of <video> placeholders \[6\] differs from the number of video regions \[5\]"):
        model.generate(**batch, **GREEDY)


@pytest.mark.parametrize("shape", [(3, 4, 2), (3, 4), (3, 4, 2, 1), (2, 4, 2)])
def test_video_mask_of_the_wrong_shape(model, shape):
    batch = collate(EXAMPLES)  # video_features [3, 4, 2, DIM]
    batch["video_mask"] = torch.ones(shape, dtype=torch.bool)
    if shape == (3, 4, 2):
        batch["video_features"] = batch["video_features"][:, :, :1]  # [3, 4, 1, D]: the mask has 2 regions
    with pytest.raises(ValueError, match=r"video_mask has shape .* but video_features .* need \[batch, frames, regions\]"):
        model(**batch)


def test_non_float_video_features_are_rejected(model):
    batch = collate(EXAMPLES)
    batch["video_features"] = batch["video_features"].long()
    with pytest.raises(ValueError, match="video_features must be a floating-point tensor, got dtype torch.int64"):
        model(**batch)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("video_feature_dim", "big", "video_feature_dim must be a positive int, got 'big'"),
        ("max_video_frames", 0, "max_video_frames must be a positive int, got 0"),
        ("max_turns", 2.5, "max_turns must be a positive int, got 2.5"),
        ("max_video_regions", True, "max_video_regions must be a positive int, got True"),
    ],
)
def test_config_rejects_bad_sizes(field, value, message):
    with pytest.raises(ValueError, match=message):
        VGDGPT2Config(**{field: value})


# ---------------------------------------------------------------- issue 23: ports of ModelTesterMixin / GenerationTesterMixin
# Each runs on a video-input and a text-only configuration (no video features, no placeholders).

TEXT_ONLY_EXAMPLES = [
    make_example(0, 0, [5, 6, 7], [([8, 9], [10, 11])], [12, 13]),
    make_example(0, 0, [5, 6], [], [14, 15, 16]),
]


def inputs_of(kind: str, batch_size: int = 1) -> dict:
    if kind == "video":
        return collate(EXAMPLES[:batch_size])
    batch = collate(TEXT_ONLY_EXAMPLES[:batch_size])
    del batch["video_features"], batch["video_mask"]
    return batch


KINDS = ["video", "text"]


@pytest.mark.parametrize("kind", KINDS)
def test_from_pretrained_with_output_loading_info(model, tmp_path, kind):
    """ModelTesterMixin.test_model_weights_reload_no_missing_tied_weights / test_tied_weights_keys: `(model, info)`
    with nothing missing, unexpected or mismatched; weights tied; same outputs."""
    model.save_pretrained(tmp_path)
    loaded = VGDGPT2ForDialogue.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(loaded, tuple) and len(loaded) == 2
    reloaded, info = loaded
    assert isinstance(reloaded, VGDGPT2ForDialogue)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert not info.get("error_msgs")
    assert reloaded.lm_head.weight.data_ptr() == reloaded.transformer.wte.weight.data_ptr()
    batch = inputs_of(kind, 2)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(**batch).logits, model(**batch).logits)


def test_reload_without_the_tied_weight_reports_it_not_missing(model, tmp_path):
    """ModelTesterMixin.test_model_weights_reload_no_missing_tied_weights: a checkpoint without `lm_head.weight`
    (tied to the token embeddings) loads with no missing key."""
    from safetensors.torch import load_file, save_file

    model.save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    state = load_file(path)
    state.pop("lm_head.weight", None)
    save_file(state, path, metadata={"format": "pt"})
    reloaded, info = VGDGPT2ForDialogue.from_pretrained(tmp_path, output_loading_info=True)
    assert "lm_head.weight" not in set(info["missing_keys"])
    torch.testing.assert_close(reloaded.lm_head.weight, model.transformer.wte.weight)


def test_save_and_load_without_tied_weights(tmp_path):
    """ModelTesterMixin.test_load_save_without_tied_weights: `tie_word_embeddings=False` keeps two tensors that
    survive the round trip."""
    torch.manual_seed(0)
    untied = VGDGPT2ForDialogue(tiny_config(tie_word_embeddings=False)).eval()
    assert untied.lm_head.weight.data_ptr() != untied.transformer.wte.weight.data_ptr()
    untied.save_pretrained(tmp_path)
    reloaded, info = VGDGPT2ForDialogue.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert reloaded.lm_head.weight.data_ptr() != reloaded.transformer.wte.weight.data_ptr()
    torch.testing.assert_close(reloaded.lm_head.weight, untied.lm_head.weight)
    torch.testing.assert_close(reloaded.transformer.wte.weight, untied.transformer.wte.weight)


ASSISTED = dict(max_new_tokens=4, do_sample=False, num_beams=1, pad_token_id=PAD, eos_token_id=-1,
                return_dict_in_generate=True, output_logits=True, output_scores=True, use_cache=True)


def record_fed_lengths(model):
    lengths = []
    handle = model.register_forward_pre_hook(lambda m, a, kw: lengths.append(kw["input_ids"].shape[1]), with_kwargs=True)
    return lengths, handle


def check_same_generation(plain, assisted):
    """GenerationTesterMixin._check_similar_generate_outputs: same tokens, scores close."""
    assert assisted.sequences.tolist() == plain.sequences.tolist()
    assert len(assisted.logits) == len(plain.logits)
    for got, want in zip(assisted.logits, plain.logits):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("assistant", ["itself", "another"])
def test_assisted_decoding_matches_greedy_search(model, kind, assistant):
    """GenerationTesterMixin.test_assisted_decoding_matches_greedy_search: the candidates of an assistant are fed
    several at a time (their modality / turn / position ids derived for all of them); the output equals plain greedy
    search. "another" (different weights) has candidates rejected, so the cache is cropped too."""
    batch = inputs_of(kind)
    plain = model.generate(**batch, **ASSISTED)
    if assistant == "itself":
        helper = model
    else:
        torch.manual_seed(1)
        helper = VGDGPT2ForDialogue(tiny_config()).eval()
    helper.generation_config.num_assistant_tokens = 2
    helper.generation_config.num_assistant_tokens_schedule = "constant"
    lengths, handle = record_fed_lengths(model)
    try:
        assisted = model.generate(**batch, assistant_model=helper, **ASSISTED)
    finally:
        handle.remove()
    check_same_generation(plain, assisted)
    assert max(lengths[1:]) > 1, "the candidates were never verified several at a time"


@pytest.mark.parametrize("kind", KINDS)
def test_prompt_lookup_decoding_matches_greedy_search(model, kind):
    """GenerationTesterMixin.test_prompt_lookup_decoding_matches_greedy_search (candidates are n-grams of the
    prompt)."""
    batch = inputs_of(kind)
    # the prompt repeats its question, so that candidates are found
    ids = batch["input_ids"]
    question = ids[:, -3:-1]
    batch["input_ids"] = torch.cat([ids[:, :-1], question, question, ids[:, -1:]], dim=1)
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    plain = model.generate(**batch, **dict(ASSISTED, max_new_tokens=6))
    lengths, handle = record_fed_lengths(model)
    try:
        looked_up = model.generate(**batch, prompt_lookup_num_tokens=2, max_matching_ngram_size=1, **dict(ASSISTED, max_new_tokens=6))
    finally:
        handle.remove()
    check_same_generation(plain, looked_up)
    assert max(lengths[1:]) > 1, "no candidate was looked up"


@pytest.mark.parametrize("kind", KINDS)
def test_assisted_decoding_with_given_modality_and_turn_ids(model, kind):
    """GenerationTesterMixin.test_model_kwarg_assisted_decoding_decoder_only (there with token_type_ids): the
    prompt's given per-token ids are extended over the candidates as in plain greedy search."""
    batch = inputs_of(kind)
    batch["modality_ids"], batch["turn_ids"] = compute_modality_and_turn_ids(batch["input_ids"], model.config)
    plain = model.generate(**batch, **ASSISTED)
    model.generation_config.num_assistant_tokens = 2
    assisted = model.generate(**batch, assistant_model=model, **ASSISTED)
    check_same_generation(plain, assisted)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("new_tokens", [[USR, 7, 8], [9, SYS, 10, 11]])
def test_several_new_tokens_with_a_cache_equal_the_full_forward(model, kind, new_tokens):
    """What assisted decoding does on every step: a forward of several new tokens (here crossing a `<usr>` / `<sys>`
    marker) after a cached prefix, with the ids `prepare_inputs_for_generation` derives, gives the logits of the
    full forward at those positions."""
    batch = inputs_of(kind, 2)
    new = torch.tensor([new_tokens] * batch["input_ids"].shape[0])
    full_ids = torch.cat([batch["input_ids"], new], dim=1)
    full_mask = torch.cat([batch["attention_mask"], torch.ones_like(new)], dim=1)
    video = {key: batch[key] for key in ("video_features", "video_mask") if key in batch}
    with torch.no_grad():
        full = model(input_ids=full_ids, attention_mask=full_mask, **video).logits
        prefix = model(**batch, cache=DynamicCache(config=model.config), use_cache=True)
        inputs = model.prepare_inputs_for_generation(
            full_ids, next_sequence_length=new.shape[1], cache=prefix.cache, attention_mask=full_mask, use_cache=True, **video
        )
        assert inputs["input_ids"].shape[1] == inputs["modality_ids"].shape[1] == inputs["turn_ids"].shape[1] == new.shape[1]
        modality, turn = compute_modality_and_turn_ids(full_ids, model.config)
        assert inputs["modality_ids"].tolist() == modality[:, -new.shape[1] :].tolist()
        assert inputs["turn_ids"].tolist() == turn[:, -new.shape[1] :].tolist()
        stepped = model(**inputs).logits
    torch.testing.assert_close(stepped, full[:, -new.shape[1] :], rtol=1e-4, atol=1e-5)


def test_get_video_features_follows_the_transformers_contract(model):
    """transformers 5.x `get_video_features`: the model's video input in, a `BaseModelOutputWithPooling` out, with
    `return_dict`, `output_hidden_states`, `output_attentions` honoured; `pooler_output` is what the `<video>`
    placeholders receive."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    batch = collate(EXAMPLES)
    with torch.no_grad():
        out = model.get_video_features(video_features=batch["video_features"], video_mask=batch["video_mask"])
        assert isinstance(out, BaseModelOutputWithPooling)
        torch.testing.assert_close(out.last_hidden_state, batch["video_features"])
        assert out.pooler_output.shape == (*batch["video_features"].shape[:3], model.config.n_embd)
        assert out.video_mask.tolist() == batch["video_mask"].tolist()
        assert out.hidden_states is None and out.attentions is None
        # the embeddings forward() places at the placeholders
        modality, turn = compute_modality_and_turn_ids(batch["input_ids"], model.config)
        embeds = model.embed_inputs(batch["input_ids"], modality, turn, batch["video_features"], batch["video_mask"])
        is_video = batch["input_ids"] == VIDEO
        torch.testing.assert_close(embeds[is_video], out.pooler_output[batch["video_mask"]])

        detailed = model.get_video_features(
            video_features=batch["video_features"], video_mask=batch["video_mask"], output_hidden_states=True, output_attentions=True
        )
        assert len(detailed.hidden_states) == 2 and detailed.attentions == ()
        as_tuple = model.get_video_features(video_features=batch["video_features"], return_dict=False)
        assert isinstance(as_tuple, tuple)
        torch.testing.assert_close(as_tuple[0], out.last_hidden_state)
        torch.testing.assert_close(as_tuple[1], model.embed_video(batch["video_features"]))
        # [B, F, D] means one region per frame, as in forward()
        one_region = model.get_video_features(video_features=batch["video_features"][:, :, 0])
        assert one_region.last_hidden_state.shape == (3, 4, 1, DIM) and one_region.video_mask.all()
    with pytest.raises(ValueError, match="either pixel_values_videos .* or video_features"):
        model.get_video_features()
    with pytest.raises(ValueError, match="records no video backbone"):
        model.get_video_features(pixel_values_videos=torch.zeros(1, 1, 2, 3, 8, 8))
    with pytest.raises(ValueError, match="video_features have dim 3"):
        model.get_video_features(video_features=torch.zeros(1, 2, 1, 3))


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_generate_dict_outputs(model, kind):
    """GenerationTesterMixin.test_greedy_generate_dict_outputs(_use_cache) / _check_generate_outputs: one score,
    logit and hidden-state entry per new token; the first step sees the whole prompt, the others one token."""
    batch = inputs_of(kind, 2)
    out = model.generate(**batch, **dict(ASSISTED, output_hidden_states=True))
    length = batch["input_ids"].shape[1]
    assert out.sequences.shape == (2, length + 4)
    assert len(out.scores) == len(out.logits) == len(out.hidden_states) == 4
    assert all(score.shape == (2, VOCAB) for score in out.scores)
    assert [step[0].shape[1] for step in out.hidden_states] == [length, 1, 1, 1]
    assert all(len(step) == model.config.n_layer + 1 for step in out.hidden_states)


@pytest.mark.parametrize("kind", KINDS)
def test_beam_search_returns_several_sequences(model, kind):
    """GenerationTesterMixin.test_num_return_sequences / test_beam_search_generate_dict_output."""
    batch = inputs_of(kind, 2)
    out = model.generate(**batch, max_new_tokens=3, num_beams=3, num_return_sequences=2, do_sample=False, pad_token_id=PAD,
                         eos_token_id=-1, return_dict_in_generate=True, output_scores=True)
    assert out.sequences.shape == (4, batch["input_ids"].shape[1] + 3)
    assert out.sequences_scores.shape == (4,)


@pytest.mark.parametrize("kind", KINDS)
def test_attention_outputs_and_their_gradients(kind):
    """ModelTesterMixin.test_attention_outputs / test_retain_grad_hidden_states_attentions (eager attention)."""
    torch.manual_seed(0)
    eager = VGDGPT2ForDialogue(tiny_config(attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0))
    eager.set_attn_implementation("eager")
    batch = inputs_of(kind, 2)
    out = eager(**batch, output_attentions=True, output_hidden_states=True)
    length = batch["input_ids"].shape[1]
    assert len(out.attentions) == eager.config.n_layer
    assert all(a.shape == (2, eager.config.n_head, length, length) for a in out.attentions)
    out.hidden_states[0].retain_grad()
    out.attentions[0].retain_grad()
    out.logits.sum().backward()
    assert out.hidden_states[0].grad is not None and out.attentions[0].grad is not None


@pytest.mark.parametrize("kind", KINDS)
def test_determinism_and_eager_matches_sdpa(model, kind):
    """ModelTesterMixin.test_determinism and test_eager_matches_sdpa_inference (float32)."""
    batch = inputs_of(kind, 2)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        first, second = model(**batch).logits, model(**batch).logits
        torch.testing.assert_close(first, second, rtol=0, atol=0)
        previous = model.config._attn_implementation
        model.set_attn_implementation("eager")
        try:
            eager = model(**batch).logits
        finally:
            model.set_attn_implementation(previous)
    torch.testing.assert_close(eager[real], first[real], rtol=1e-4, atol=1e-5)
