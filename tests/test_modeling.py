"""VGDGPT2ForDialogue on tiny configs built in-process (no processor needed: sequences are built by hand
following docs/design.md)."""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from configuration_vgd_gpt2 import MODALITY_CAP, MODALITY_SYS, MODALITY_USR, MODALITY_VIS, VGDGPT2Config
from modeling_vgd_gpt2 import VGDGPT2ForDialogue, compute_modality_and_turn_ids, compute_position_ids

VOCAB = 50
VIDEO, CAP, USR, SYS, CLS, MASK, PAD, EOS = 40, 41, 42, 43, 44, 45, 46, 0
DIM = 8


def tiny_config(**overrides):
    fields = dict(
        vocab_size=VOCAB, n_layer=2, n_embd=32, n_head=2, n_positions=64, video_feature_dim=DIM,
        max_video_frames=8, max_video_regions=4, max_turns=6,
        video_token_id=VIDEO, cap_token_id=CAP, usr_token_id=USR, sys_token_id=SYS, cls_token_id=CLS,
        mask_token_id=MASK, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=EOS,
    )
    fields.update(overrides)
    return VGDGPT2Config(**fields)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VGDGPT2ForDialogue(tiny_config()).eval()


def make_example(frames, regions, caption, history, question, answer=None, seed=0):
    """(token ids, video [F, P, D], labels) laid out as in docs/design.md."""
    ids = [VIDEO] * (frames * regions) + [CAP] + caption
    for q, a in history:
        ids += [USR] + q + [SYS] + a
    ids += [USR] + question + [SYS]
    labels = [-100] * len(ids)
    if answer is not None:
        ids += answer + [EOS]
        labels += answer + [EOS]
    video = torch.randn(frames, regions, DIM, generator=torch.Generator().manual_seed(seed))
    return ids, video, labels


EXAMPLES = [
    make_example(3, 2, [5, 6, 7], [([8, 9], [10, 11])], [12, 13], seed=1),
    make_example(2, 2, [5, 6], [], [14, 15, 16], seed=2),
    make_example(4, 2, [7], [([8], [9]), ([1, 2], [3])], [4], seed=3),
]


def collate(examples, padding_side="left", with_labels=False):
    length = max(len(ids) for ids, _, _ in examples)
    frames = max(v.shape[0] for _, v, _ in examples)
    regions = max(v.shape[1] for _, v, _ in examples)
    batch = len(examples)
    input_ids = torch.full((batch, length), PAD)
    attention_mask = torch.zeros(batch, length, dtype=torch.long)
    labels = torch.full((batch, length), -100)
    video = torch.zeros(batch, frames, regions, DIM)
    video_mask = torch.zeros(batch, frames, regions, dtype=torch.bool)
    for i, (ids, v, lab) in enumerate(examples):
        span = slice(length - len(ids), length) if padding_side == "left" else slice(0, len(ids))
        input_ids[i, span] = torch.tensor(ids)
        attention_mask[i, span] = 1
        labels[i, span] = torch.tensor(lab)
        video[i, : v.shape[0], : v.shape[1]] = v
        video_mask[i, : v.shape[0], : v.shape[1]] = True
    out = dict(input_ids=input_ids, attention_mask=attention_mask, video_features=video, video_mask=video_mask)
    if with_labels:
        out["labels"] = labels
    return out


# ---------------------------------------------------------------- encodings


def test_modality_and_turn_ids_follow_the_markers():
    ids, _, _ = make_example(1, 2, [5], [([8], [9])], [12])
    modality, turn = compute_modality_and_turn_ids(torch.tensor([ids]), tiny_config())
    assert modality[0].tolist() == [MODALITY_VIS] * 2 + [MODALITY_CAP] * 2 + [MODALITY_USR] * 2 + [MODALITY_SYS] * 2 + [MODALITY_USR] * 2 + [MODALITY_SYS]
    assert turn[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2]


def test_text_positions_start_after_the_video_and_video_tokens_get_their_region():
    short, _, _ = make_example(1, 2, [5, 6], [], [7])
    long, _, _ = make_example(3, 2, [5, 6], [], [7])
    pos_short = compute_position_ids(torch.tensor([short]), torch.ones(1, len(short)), VIDEO, torch.ones(1, 1, 2, dtype=torch.bool))
    pos_long = compute_position_ids(torch.tensor([long]), torch.ones(1, len(long)), VIDEO, torch.ones(1, 3, 2, dtype=torch.bool))
    assert pos_long[0, :6].tolist() == [0, 1, 0, 1, 0, 1]
    assert pos_long[0, 6:].tolist() == pos_short[0, 2:].tolist() == list(range(len(short) - 2))


def test_temporal_encoding_distinguishes_frames_with_identical_features(model):
    same = torch.ones(1, 3, 2, DIM)
    embeds = model.embed_video(same)
    frame_table = model.video_frame_embeddings.weight
    torch.testing.assert_close(embeds[0, 1, 0] - embeds[0, 0, 0], frame_table[1] - frame_table[0])
    assert not torch.allclose(embeds[0, 0], embeds[0, 1])
    torch.testing.assert_close(embeds[0, 0, 0], embeds[0, 0, 1])  # regions differ only through GPT-2's position table


def test_frame_order_changes_the_output(model):
    batch = collate(EXAMPLES[:1])
    swapped = dict(batch, video_features=batch["video_features"].flip(1))
    with torch.no_grad():
        assert not torch.allclose(model(**batch).logits[:, -1], model(**swapped).logits[:, -1])


def test_video_longer_than_the_text_positions_fits(model):
    config = tiny_config(n_positions=16, max_video_frames=8, max_video_regions=4)
    torch.manual_seed(0)
    small = VGDGPT2ForDialogue(config).eval()
    ids, video, _ = make_example(8, 4, [5, 6, 7], [], [8, 9])  # 32 video tokens + 8 text tokens > 16 positions
    out = small(**collate([(ids, video, [-100] * len(ids))]))
    assert out.logits.shape == (1, len(ids), VOCAB)


# ---------------------------------------------------------------- losses


def training_batch(model_config=None):
    examples = [
        make_example(3, 2, [5, 6, 7], [([8, 9], [10, 11])], [12, 13], answer=[20, 21, 22], seed=1),
        make_example(2, 2, [5, 6], [], [14, 15, 16], answer=[23, 24], seed=2),
    ]
    batch = collate([(ids + [CLS], v, lab + [-100]) for ids, v, lab in examples], padding_side="right", with_labels=True)
    mlm_labels = torch.full_like(batch["input_ids"], -100)
    for row, col in [(0, 7), (0, 11), (1, 5)]:  # caption / history tokens
        mlm_labels[row, col] = batch["input_ids"][row, col]
        batch["input_ids"][row, col] = MASK
    mvm_mask = torch.zeros_like(batch["video_mask"])
    mvm_mask[0, 1, 0] = mvm_mask[1, 0, 1] = True
    batch.update(mlm_labels=mlm_labels, mvm_mask=mvm_mask, mvt_labels=torch.tensor([1.0, 0.0]))
    return batch


def test_all_four_losses_and_loss_is_the_response_loss(model):
    batch = training_batch()
    out = model(**batch)
    assert out.loss is out.response_loss
    logits = out.logits
    shift_logits, shift_labels = logits[:, :-1].reshape(-1, VOCAB), batch["labels"][:, 1:].reshape(-1)
    torch.testing.assert_close(out.response_loss, torch.nn.functional.cross_entropy(shift_logits, shift_labels))
    masked = batch["mlm_labels"] != -100
    torch.testing.assert_close(out.mlm_loss, torch.nn.functional.cross_entropy(logits[masked], batch["mlm_labels"][masked]))
    assert out.mvt_logits.shape == (2,)
    torch.testing.assert_close(out.mvt_loss, torch.nn.functional.binary_cross_entropy_with_logits(out.mvt_logits, batch["mvt_labels"]))
    assert out.mvm_loss.ndim == 0 and out.mvm_loss > 0


def test_losses_are_none_without_their_labels(model):
    out = model(**collate(EXAMPLES[:2]))
    assert out.loss is None and out.response_loss is None and out.mlm_loss is None
    assert out.mvm_loss is None and out.mvt_loss is None and out.mvt_logits is None


def test_mvm_targets_are_the_original_features_and_gradients_reach_the_projection():
    torch.manual_seed(0)
    model = VGDGPT2ForDialogue(tiny_config())
    batch = training_batch()
    out = model(**batch)
    out.mvm_loss.backward()
    assert model.video_projection.weight.grad.abs().sum() > 0
    assert model.mvm_head.weight.grad.abs().sum() > 0
    # the masked region's input is replaced by zeros: changing its features changes the target only
    model.eval()
    changed = dict(batch, video_features=batch["video_features"].clone())
    changed["video_features"][0, 1, 0] += 5.0
    with torch.no_grad():
        a, b = model(**batch), model(**changed)
    torch.testing.assert_close(a.logits, b.logits)
    assert not torch.allclose(a.mvm_loss, b.mvm_loss)


def test_mvt_and_mlm_gradients_reach_their_heads():
    torch.manual_seed(0)
    model = VGDGPT2ForDialogue(tiny_config())
    out = model(**training_batch())
    (out.mvt_loss + out.mlm_loss).backward()
    assert model.mvt_head.weight.grad.abs().sum() > 0
    assert model.transformer.wte.weight.grad.abs().sum() > 0


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = VGDGPT2ForDialogue(tiny_config(attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0))
    batch = training_batch()
    model(**batch).loss.backward()
    reference = model.video_projection.weight.grad.clone()
    model.zero_grad()
    model.activation_checkpointing_enable()
    model.train()
    model(**batch).loss.backward()
    torch.testing.assert_close(model.video_projection.weight.grad, reference)


def test_sdpa_by_default_and_bfloat16_runs():
    model = VGDGPT2ForDialogue(tiny_config())
    assert model.config._attn_implementation == "sdpa"
    model = model.to(torch.bfloat16).eval()
    out = model(**training_batch())
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.response_loss)


# ---------------------------------------------------------------- generate


@pytest.mark.parametrize("generation_kwargs", [dict(), dict(num_beams=3), dict(num_beams=3, length_penalty=0.5)])
def test_batched_left_padded_generation_equals_one_by_one(model, generation_kwargs):
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=PAD, **generation_kwargs)
    batched = model.generate(**collate(EXAMPLES), **kwargs)[:, -6:]
    for i, example in enumerate(EXAMPLES):
        single = model.generate(**collate([example]), **kwargs)[0, -6:]
        assert batched[i].tolist() == single.tolist()


@pytest.mark.parametrize("generation_kwargs", [dict(), dict(num_beams=3)])
def test_generation_with_and_without_cache_is_identical(model, generation_kwargs):
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=PAD, **generation_kwargs)
    with_cache = model.generate(**collate(EXAMPLES), use_cache=True, **kwargs)
    without_cache = model.generate(**collate(EXAMPLES), use_cache=False, **kwargs)
    assert torch.equal(with_cache, without_cache)


def test_sampling_is_reproducible_for_a_seed(model):
    kwargs = dict(max_new_tokens=5, do_sample=True, top_k=10, pad_token_id=PAD)
    torch.manual_seed(3)
    first = model.generate(**collate(EXAMPLES), **kwargs)
    torch.manual_seed(3)
    assert torch.equal(first, model.generate(**collate(EXAMPLES), **kwargs))


def test_video_is_projected_once_and_new_tokens_are_sys_of_the_current_turn(model):
    projections, fed = [], []
    hook = model.video_projection.register_forward_hook(lambda *args: projections.append(1))
    def record(module, args, kwargs):
        fed.append((kwargs["input_ids"].shape[1], kwargs["modality_ids"].clone(), kwargs["turn_ids"].clone()))

    recorder = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        # the structural tokens suppressed as from_gpt2_pretrained does: a response holds none of them
        structural = [VIDEO, CAP, USR, SYS, CLS, MASK, PAD]
        model.generate(**collate(EXAMPLES), max_new_tokens=4, do_sample=False, num_beams=2, pad_token_id=PAD, suppress_tokens=structural)
    finally:
        recorder.remove()
        hook.remove()
    assert len(projections) == 1
    assert len(fed) == 4 and fed[0][0] > 1 and all(length == 1 for length, _, _ in fed[1:])
    for _, modality, turn in fed[1:]:
        assert (modality == MODALITY_SYS).all()
        assert turn.view(len(EXAMPLES), 2).tolist() == [[2, 2], [1, 1], [3, 3]]


def test_generate_accepts_given_modality_and_turn_ids(model):
    batch = collate(EXAMPLES)
    modality, turn = compute_modality_and_turn_ids(batch["input_ids"], model.config)
    kwargs = dict(max_new_tokens=5, do_sample=False, pad_token_id=PAD)
    assert torch.equal(model.generate(**batch, **kwargs), model.generate(**batch, modality_ids=modality, turn_ids=turn, **kwargs))


# ---------------------------------------------------------------- pooling modes


def test_pooling_modes_accept_the_pooled_shapes_only():
    torch.manual_seed(0)
    spatial = VGDGPT2ForDialogue(tiny_config(video_pooling="spatial")).eval()
    temporal = VGDGPT2ForDialogue(tiny_config(video_pooling="temporal")).eval()
    one_frame = make_example(1, 4, [5], [], [6])
    one_region = make_example(5, 1, [5], [], [6])
    assert spatial(**collate([one_frame])).logits.shape[1] == 4 + 5
    assert temporal(**collate([one_region])).logits.shape[1] == 5 + 5
    with pytest.raises(ValueError, match="spatial.*5 frames"):
        spatial(**collate([one_region]))
    with pytest.raises(ValueError, match="temporal.*4 regions"):
        temporal(**collate([one_frame]))


def test_spatial_and_temporal_pooling_reads_region_then_clip_rows_and_records_p(tmp_path):
    """`video_pooling="spatial_and_temporal"`: rows of one token (P region tokens, then the clips), at least one clip
    row after the P region rows; `num_video_regions` is required and saved with the config."""
    torch.manual_seed(0)
    model = VGDGPT2ForDialogue(tiny_config(video_pooling="spatial_and_temporal", num_video_regions=3)).eval()
    rows = make_example(3 + 4, 1, [5], [], [6])
    assert model(**collate([rows])).logits.shape[1] == 7 + 5
    with pytest.raises(ValueError, match="one token per row.*4 regions"):
        model(**collate([make_example(2, 4, [5], [], [6])]))
    with pytest.raises(ValueError, match="the 3 region tokens then at least one clip token.*got 3 rows"):
        model(**collate([make_example(3, 1, [5], [], [6])]))
    with pytest.raises(ValueError, match="needs num_video_regions"):
        tiny_config(video_pooling="spatial_and_temporal")
    model.config.save_pretrained(tmp_path)
    assert VGDGPT2Config.from_pretrained(tmp_path).num_video_regions == 3


def test_frames_by_dim_features_mean_one_region(model):
    ids, video, labels = make_example(3, 1, [5], [], [6])
    batch = collate([(ids, video, labels)])
    flat = dict(batch, video_features=batch["video_features"][:, :, 0], video_mask=batch["video_mask"][:, :, 0])
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, model(**flat).logits)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b.update(video_features=b["video_features"][..., :5]), "dim 5 but config.video_feature_dim is 8"),
        (lambda b: b.update(video_features=torch.zeros(1, 9, 2, DIM), video_mask=torch.ones(1, 9, 2, dtype=torch.bool)), "9 frames.*max_video_frames=8"),
        (lambda b: b.update(video_features=torch.zeros(1, 3, 5, DIM), video_mask=torch.ones(1, 3, 5, dtype=torch.bool)), "5 regions.*max_video_regions=4"),
        (lambda b: b.pop("video_features"), "placeholders per example but no video_features"),
        (lambda b: b.update(video_mask=torch.ones(1, 4, 2, dtype=torch.bool), video_features=torch.zeros(1, 4, 2, DIM)), "differs from the number of video regions"),
        (lambda b: b.update(input_ids=torch.full_like(b["input_ids"], VOCAB + 3)), "id 53 but the vocabulary has 50"),
    ],
)
def test_bad_inputs_raise_a_value_error_naming_the_sizes(model, mutate, message):
    batch = collate(EXAMPLES[:1])
    mutate(batch)
    with pytest.raises(ValueError, match=message):
        model(**batch)


def test_video_without_placeholders_is_rejected(model):
    ids = [CAP, 5, USR, 6, SYS]
    batch = dict(input_ids=torch.tensor([ids]), video_features=torch.zeros(1, 2, 2, DIM))
    with pytest.raises(ValueError, match=r"placeholders \[0\].*regions \[4\]"):
        model(**batch)


def test_text_longer_than_the_positions_is_rejected(model):
    ids, video, _ = make_example(1, 2, list(range(1, 30)) * 3, [], [5])
    with pytest.raises(ValueError, match="text of 91 tokens exceeds the 64 positions"):
        model(**collate([(ids, video, [-100] * len(ids))]))


# ---------------------------------------------------------------- saving and loading


def test_save_and_reload_round_trip(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert (tmp_path / "modeling_vgd_gpt2.py").exists() and (tmp_path / "configuration_vgd_gpt2.py").exists()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "vgd_gpt2"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_vgd_gpt2.VGDGPT2Config",
        "AutoModel": "modeling_vgd_gpt2.VGDGPT2ForDialogue",
        "AutoModelForCausalLM": "modeling_vgd_gpt2.VGDGPT2ForDialogue",
    }
    reloaded = VGDGPT2ForDialogue.from_pretrained(tmp_path).eval()
    batch = collate(EXAMPLES)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, reloaded(**batch).logits)


def test_fresh_process_loads_the_folder_with_remote_code(model, tmp_path):
    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)
    batch = collate(EXAMPLES)
    torch.save(batch, tmp_path / "batch.pt")
    expected = model.generate(**batch, max_new_tokens=5, do_sample=False, num_beams=2, pad_token_id=PAD)
    script = textwrap.dedent(
        f"""
        import sys, torch
        assert {repr(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))} not in sys.path
        from transformers import AutoModel, AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        assert type(model).__name__ == "VGDGPT2ForDialogue", type(model)
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        assert type(AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True)).__name__ == "VGDGPT2ForDialogue"
        batch = torch.load({str(tmp_path / "batch.pt")!r})
        out = model.generate(**batch, max_new_tokens=5, do_sample=False, num_beams=2, pad_token_id={PAD})
        print(out.tolist())
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected.tolist()


def test_video_frame_init_std_sets_the_initial_temporal_encoding_only(tmp_path):
    """`video_frame_init_std` draws a new model's temporal encoding with that std (GPT-2's initializer_range
    otherwise); loading a trained model keeps its weights; a non-positive value is refused."""
    torch.manual_seed(0)
    default = VGDGPT2ForDialogue(tiny_config(max_video_frames=256))
    wide = VGDGPT2ForDialogue(tiny_config(max_video_frames=256, video_frame_init_std=0.5))
    assert default.video_frame_embeddings.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert wide.video_frame_embeddings.weight.std().item() == pytest.approx(0.5, rel=0.1)
    # the other new layers keep GPT-2's initialisation
    assert wide.modality_embeddings.weight.std().item() == pytest.approx(0.02, rel=0.5)
    with torch.no_grad():
        wide.video_frame_embeddings.weight.fill_(3.0)
    wide.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["video_frame_init_std"] == 0.5
    reloaded = VGDGPT2ForDialogue.from_pretrained(tmp_path)
    assert torch.equal(reloaded.video_frame_embeddings.weight, torch.full_like(reloaded.video_frame_embeddings.weight, 3.0))
    for bad in (0, -0.1, True):
        with pytest.raises(ValueError, match="video_frame_init_std"):
            tiny_config(video_frame_init_std=bad)


def test_sinusoidal_video_frame_init_starts_from_the_sine_table_at_the_given_std(tmp_path):
    """`video_frame_init="sinusoidal"`: row t of a new model's temporal encoding is the sine / cosine of t at
    wavelengths 2 pi .. 2 pi x 100, its entries of std `video_frame_init_std`; neighbouring frames start closer than
    distant ones (random rows do not); no random draw; a trained model loads its own rows; unknown modes are refused."""
    from modeling_vgd_gpt2 import sinusoidal_frame_table

    torch.manual_seed(0)
    model = VGDGPT2ForDialogue(tiny_config(max_video_frames=64, video_frame_init_std=0.5, video_frame_init="sinusoidal"))
    rows = model.video_frame_embeddings.weight.detach()
    dim = rows.shape[1]
    t = 5
    expected = [math.sin(t / 100.0 ** (2 * (j // 2) / dim)) if j % 2 == 0 else math.cos(t / 100.0 ** (2 * (j // 2) / dim))
                for j in range(dim)]
    assert rows[t].tolist() == pytest.approx([0.5 * math.sqrt(2.0) * value for value in expected], abs=1e-5)
    assert rows.std().item() == pytest.approx(0.5, rel=0.1)
    assert torch.allclose(sinusoidal_frame_table(3, 5)[:, 1::2], torch.cos(torch.arange(3.0)[:, None] * torch.tensor([1.0, 100.0 ** -0.4])))  # odd width
    # neighbours alike, distant frames not: the cosine similarity falls with the distance
    unit = torch.nn.functional.normalize(rows, dim=-1)
    assert (unit[10] @ unit[11]).item() > (unit[10] @ unit[20]).item() + 0.2 > (unit[10] @ unit[40]).item() + 0.2
    torch.manual_seed(0)
    again = VGDGPT2ForDialogue(tiny_config(max_video_frames=64, video_frame_init_std=0.5, video_frame_init="sinusoidal"))
    assert torch.equal(again.video_frame_embeddings.weight, model.video_frame_embeddings.weight)
    # without a std, GPT-2's initializer_range
    small = VGDGPT2ForDialogue(tiny_config(max_video_frames=64, video_frame_init="sinusoidal"))
    assert small.video_frame_embeddings.weight.std().item() == pytest.approx(0.02, rel=0.1)
    with torch.no_grad():
        model.video_frame_embeddings.weight.fill_(3.0)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["video_frame_init"] == "sinusoidal"
    reloaded = VGDGPT2ForDialogue.from_pretrained(tmp_path)
    assert reloaded.config.video_frame_init == "sinusoidal"
    assert torch.equal(reloaded.video_frame_embeddings.weight, torch.full_like(reloaded.video_frame_embeddings.weight, 3.0))
    with pytest.raises(ValueError, match="video_frame_init must be one of .*'learned'"):
        tiny_config(video_frame_init="learned")


def test_video_whitening_projects_whitened_features_keeps_the_mvm_target_and_is_saved(tmp_path):
    """`video_whitening_components` K: the projection reads K whitened components (`(x - mean) @ matrix`), the MVM
    head still predicts the D features as given; an unfitted whitening is refused before it projects zeros; the
    fitted buffers travel with the weights."""
    from vgd_training.video_whitening import fit_video_whitening

    torch.manual_seed(0)
    model = VGDGPT2ForDialogue(tiny_config(video_whitening_components=3)).eval()
    assert model.video_projection.in_features == 3 and model.mvm_head.out_features == DIM
    batch = collate(EXAMPLES, with_labels=True)
    with pytest.raises(ValueError, match="video whitening was never fitted"):
        model(**batch)
    rows = torch.randn(200, DIM, generator=torch.Generator().manual_seed(4)) @ torch.randn(DIM, DIM, generator=torch.Generator().manual_seed(5))
    mean, matrix = fit_video_whitening([rows.numpy()], 3)
    with pytest.raises(ValueError, match=r"matrix must have shape \(8, 3\)"):
        model.set_video_whitening(torch.from_numpy(mean), torch.zeros(DIM, 4))
    model.set_video_whitening(torch.from_numpy(mean), torch.from_numpy(matrix))

    video = batch["video_features"]
    whitened = (video - torch.from_numpy(mean)) @ torch.from_numpy(matrix)
    expected = torch.relu(model.video_projection(whitened)) + model.video_frame_embeddings.weight[: video.shape[1]][None, :, None] + model.modality_embeddings.weight[MODALITY_VIS]
    torch.testing.assert_close(model.embed_video(video), expected)
    # a masked region is zero after the whitening (the projection sees its bias only)
    mvm_mask = torch.zeros_like(batch["video_mask"])
    mvm_mask[0, 1, 0] = True
    embedded = model.embed_video(video, mvm_mask)
    torch.testing.assert_close(embedded[0, 1, 0], torch.relu(model.video_projection.bias) + model.video_frame_embeddings.weight[1] + model.modality_embeddings.weight[MODALITY_VIS])
    # masked visual modelling: the L1 distance to the D features as given, not to the whitened ones
    output = model(**batch, mvm_mask=mvm_mask)
    position = (batch["input_ids"][0] == VIDEO).nonzero()[2]  # frame 1, region 0 of a 2-region video
    with torch.no_grad():
        hidden_masked = model(**batch, mvm_mask=mvm_mask, output_hidden_states=True).hidden_states[-1]
    target = video[0, 1, 0]
    assert output.mvm_loss.item() == pytest.approx((model.mvm_head(hidden_masked[0, position]) - target).abs().mean().item(), rel=1e-5)

    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["video_whitening_components"] == 3
    reloaded = VGDGPT2ForDialogue.from_pretrained(tmp_path).eval()
    assert torch.equal(reloaded.video_whitening_matrix, model.video_whitening_matrix)
    assert torch.equal(reloaded.video_whitening_mean, model.video_whitening_mean)
    torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits)
    for bad in (0, DIM + 1, True, 2.0):
        with pytest.raises(ValueError, match="video_whitening_components"):
            tiny_config(video_whitening_components=bad)
    with pytest.raises(ValueError, match="reads the video features as they are"):
        VGDGPT2ForDialogue(tiny_config()).set_video_whitening(torch.from_numpy(mean), torch.from_numpy(matrix))


def test_fit_video_whitening_gives_unit_variance_on_the_largest_components_in_any_chunking():
    import numpy as np

    from vgd_training.video_whitening import fit_video_whitening

    rng = np.random.default_rng(0)
    scales = np.array([10.0, 5.0, 2.0, 1.0, 0.5, 0.1])
    rows = rng.normal(size=(4000, 6)) * scales @ np.linalg.qr(rng.normal(size=(6, 6)))[0] + 7.0
    mean, matrix = fit_video_whitening([rows[:1000].reshape(100, 10, 6), rows[1000:]], 3)
    assert mean.shape == (6,) and matrix.shape == (6, 3) and matrix.dtype == np.float32
    whitened = (rows - mean) @ matrix
    # unit variance, less the floor (1 % of the mean eigenvalue added before the division): lambda / (lambda + floor)
    eigenvalues = np.linalg.eigvalsh(np.cov(rows, rowvar=False))[::-1]
    expected = eigenvalues[:3] / (eigenvalues[:3] + 0.01 * eigenvalues.mean())
    np.testing.assert_allclose(np.cov(whitened, rowvar=False), np.diag(expected), atol=1e-3)
    # the largest first: the first component is the direction of the largest variance
    top = np.linalg.eigh(np.cov(rows, rowvar=False))[1][:, -1]
    assert abs(np.dot(matrix[:, 0] / np.linalg.norm(matrix[:, 0]), top)) > 0.999
    mean_whole, matrix_whole = fit_video_whitening([rows], 3)
    np.testing.assert_allclose(matrix, matrix_whole, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="between 1 and the feature dim 6"):
        fit_video_whitening([rows], 7)
    with pytest.raises(ValueError, match="do not vary"):
        fit_video_whitening([np.ones((10, 6))], 2)
    with pytest.raises(ValueError, match="feature dim 5, the first had 6"):
        fit_video_whitening([rows, rows[:, :5]], 2)
