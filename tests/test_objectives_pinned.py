"""The model pinned to the paper's Eq. 1-3 and to the four losses, and the trainer to its weighting and
per-objective normalisation, by exact values computed independently in the test: the input embedding of every
token from a reference formula over the model's tables, and every loss from its definition over the final hidden
states. Sequences, modality / turn / position ids and the positions of `<cls>`, of the masked tokens and of the
masked regions are written out by hand (docs/design.md), not derived with the library's helpers.

Eq. 1-2, a video region at frame f, region p:  ReLU(W x_fp + b) + E_mod[vis] + E_frame[f] + E_pos[p]
Eq. 3, a text token at text position t:        E_tok[w] + E_mod[m] + E_turn[k] + E_pos[t]
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from configuration_vgd_gpt2 import VGDGPT2Config
from modeling_vgd_gpt2 import VGDGPT2ForDialogue
from vgd_training import VGDTrainer, VGDTrainingArguments

VOCAB, DIM = 50, 5
VIDEO, CAP, USR, SYS, CLS, MASK, PAD, EOS = 40, 41, 42, 43, 44, 45, 46, 0
VIS_, CAP_, USR_, SYS_ = 0, 1, 2, 3  # modality ids of docs/design.md


def tiny_model(seed=0):
    config = VGDGPT2Config(
        vocab_size=VOCAB, n_layer=2, n_embd=16, n_head=2, n_positions=32, video_feature_dim=DIM, max_video_frames=4,
        max_video_regions=3, max_turns=4, video_token_id=VIDEO, cap_token_id=CAP, usr_token_id=USR, sys_token_id=SYS,
        cls_token_id=CLS, mask_token_id=MASK, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=EOS,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    torch.manual_seed(seed)
    model = VGDGPT2ForDialogue(config).eval()
    with torch.no_grad():  # every table clearly non-zero, so a dropped term is visible
        for table in (model.modality_embeddings, model.turn_embeddings, model.video_frame_embeddings, model.transformer.wpe, model.transformer.wte):
            table.weight.normal_(0.0, 1.0)
        model.video_projection.bias.normal_(0.0, 1.0)
        for block in model.transformer.h:  # attention that mixes the context noticeably
            block.attn.c_attn.weight.normal_(0.0, 0.3)
            block.attn.c_proj.weight.normal_(0.0, 0.3)
    return model


# Two training sequences, written out token by token: (token, modality, turn, position) for the text;
# the video first, one <video> per region in frame-major order. Row 0: 2 frames x 3 regions, a caption, one
# history turn, the question, the answer 7 8, <|endoftext|>, <cls>. Row 1: 2 frames x 2 regions (padded to 3
# regions in the batch), shorter text, right-padded.
ROW0_TEXT = [
    (CAP, CAP_, 0, 0), (5, CAP_, 0, 1), (6, CAP_, 0, 2),
    (USR, USR_, 1, 3), (9, USR_, 1, 4), (SYS, SYS_, 1, 5), (10, SYS_, 1, 6),
    (USR, USR_, 2, 7), (11, USR_, 2, 8), (12, USR_, 2, 9), (SYS, SYS_, 2, 10),
    (7, SYS_, 2, 11), (8, SYS_, 2, 12), (EOS, SYS_, 2, 13), (CLS, SYS_, 2, 14),
]
ROW1_TEXT = [
    (CAP, CAP_, 0, 0), (13, CAP_, 0, 1),
    (USR, USR_, 1, 2), (14, USR_, 1, 3), (SYS, SYS_, 1, 4),
    (15, SYS_, 1, 5), (EOS, SYS_, 1, 6), (CLS, SYS_, 1, 7),
]
FRAMES, REGIONS = (2, 2), (3, 2)
ANSWER_START = (6 + 11, 4 + 5)  # index in the row of the first answer token
CLS_INDEX = (6 + 14, 4 + 7)
MLM_MASKED = ((0, 6 + 1), (0, 6 + 6), (1, 4 + 3))  # (row, index): caption word 5, history answer 10, question word 14
MVM_MASKED = ((0, 1, 2), (0, 0, 0), (1, 1, 1))  # (row, frame, region)


def training_batch():
    rng = np.random.default_rng(0)
    length = max(FRAMES[0] * REGIONS[0] + len(ROW0_TEXT), FRAMES[1] * REGIONS[1] + len(ROW1_TEXT))
    batch = {
        "input_ids": torch.full((2, length), PAD), "attention_mask": torch.zeros(2, length, dtype=torch.long),
        "labels": torch.full((2, length), -100), "mlm_labels": torch.full((2, length), -100),
        "video_features": torch.zeros(2, 2, 3, DIM), "video_mask": torch.zeros(2, 2, 3, dtype=torch.bool),
        "mvm_mask": torch.zeros(2, 2, 3, dtype=torch.bool), "mvt_labels": torch.tensor([1.0, 0.0]),
    }
    for row, text in enumerate((ROW0_TEXT, ROW1_TEXT)):
        regions = FRAMES[row] * REGIONS[row]
        ids = [VIDEO] * regions + [token for token, *_ in text]
        batch["input_ids"][row, : len(ids)] = torch.tensor(ids)
        batch["attention_mask"][row, : len(ids)] = 1
        answer = slice(ANSWER_START[row], CLS_INDEX[row])  # answer tokens and <|endoftext|>
        batch["labels"][row, answer] = batch["input_ids"][row, answer]
        batch["video_features"][row, : FRAMES[row], : REGIONS[row]] = torch.from_numpy(
            rng.normal(size=(FRAMES[row], REGIONS[row], DIM)).astype(np.float32)
        )
        batch["video_mask"][row, : FRAMES[row], : REGIONS[row]] = True
    for row, index in MLM_MASKED:
        batch["mlm_labels"][row, index] = batch["input_ids"][row, index]
        batch["input_ids"][row, index] = MASK
    for row, frame, region in MVM_MASKED:
        batch["mvm_mask"][row, frame, region] = True
    return batch


def reference_embeddings(model, batch):
    """Eq. 1-3 for every real token, from the model's tables (the masked regions' features set to zero)."""
    rows = []
    for row, text in enumerate((ROW0_TEXT, ROW1_TEXT)):
        vectors = []
        for frame in range(FRAMES[row]):
            for region in range(REGIONS[row]):
                x = batch["video_features"][row, frame, region]
                if (row, frame, region) in MVM_MASKED:
                    x = torch.zeros_like(x)
                vectors.append(
                    torch.relu(model.video_projection.weight @ x + model.video_projection.bias)
                    + model.modality_embeddings.weight[VIS_]
                    + model.video_frame_embeddings.weight[frame]
                    + model.transformer.wpe.weight[region]
                )
        offset = len(vectors)
        for index, (_, modality, turn, position) in enumerate(text):
            token = int(batch["input_ids"][row, offset + index])  # <mask> where masked
            vectors.append(
                model.transformer.wte.weight[token]
                + model.modality_embeddings.weight[modality]
                + model.turn_embeddings.weight[turn]
                + model.transformer.wpe.weight[position]
            )
        rows.append(torch.stack(vectors))
    return rows


def run_with_probes(model, batch):
    """The model's output, the embedding GPT-2's blocks receive (positions included) and the final hidden states."""
    seen = {}
    hooks = [
        model.transformer.drop.register_forward_pre_hook(lambda module, args: seen.__setitem__("embeddings", args[0])),
        model.transformer.register_forward_hook(lambda module, args, output: seen.__setitem__("hidden", output[0])),
    ]
    try:
        with torch.no_grad():
            out = model(**batch)
    finally:
        for hook in hooks:
            hook.remove()
    return out, seen["embeddings"], seen["hidden"]


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.mark.parametrize("given_ids", [False, True], ids=["derived-ids", "given-ids"])
def test_input_embeddings_follow_eq_1_to_3(model, given_ids):
    batch = training_batch()
    if given_ids:  # the collator's path: modality and turn ids given, not derived
        batch["modality_ids"] = torch.zeros_like(batch["input_ids"])
        batch["turn_ids"] = torch.zeros_like(batch["input_ids"])
        for row, text in enumerate((ROW0_TEXT, ROW1_TEXT)):
            offset = FRAMES[row] * REGIONS[row]
            for index, (_, modality, turn, _) in enumerate(text):
                batch["modality_ids"][row, offset + index] = modality
                batch["turn_ids"][row, offset + index] = turn
    _, embeddings, _ = run_with_probes(model, batch)
    for row, expected in enumerate(reference_embeddings(model, batch)):
        torch.testing.assert_close(embeddings[row, : len(expected)], expected, atol=1e-5, rtol=1e-5)


def test_each_encoding_term_is_visible(model):
    """Sanity of the reference itself: each term it adds is far from zero, so leaving one out cannot pass."""
    for table in (model.modality_embeddings.weight, model.turn_embeddings.weight, model.video_frame_embeddings.weight):
        assert table.abs().min(dim=-1).values.max() > 0 and table.norm(dim=-1).min() > 1.0
    assert (model.transformer.wpe.weight[:3] - model.transformer.wpe.weight[0]).norm(dim=-1)[1:].min() > 1.0


def test_the_four_losses_match_their_definitions(model):
    batch = training_batch()
    out, _, hidden = run_with_probes(model, batch)

    # response: next-token cross-entropy on the answer, mean over answer tokens (7, 8, eos | 15, eos)
    terms = []
    for row in range(2):
        for index in range(ANSWER_START[row], CLS_INDEX[row]):
            logits = model.lm_head(hidden[row, index - 1])  # the token before predicts it
            terms.append(F.cross_entropy(logits[None], batch["input_ids"][row, index][None]))
    assert len(terms) == 5
    torch.testing.assert_close(out.response_loss, torch.stack(terms).mean())
    assert out.loss is out.response_loss

    # MLM: the hidden state AT a masked position predicts ITS original token (no shift); mean over masks
    terms = [F.cross_entropy(model.lm_head(hidden[row, index])[None], batch["mlm_labels"][row, index][None]) for row, index in MLM_MASKED]
    torch.testing.assert_close(out.mlm_loss, torch.stack(terms).mean())

    # MVM: L1 between mvm_head(hidden at the masked region's placeholder) and the ORIGINAL features, mean over regions x D
    terms = []
    for row, frame, region in MVM_MASKED:
        position = frame * REGIONS[row] + region  # frame-major placeholders
        terms.append((model.mvm_head(hidden[row, position]) - batch["video_features"][row, frame, region]).abs())
    torch.testing.assert_close(out.mvm_loss, torch.cat(terms).mean())

    # MVT: mvt_head on the hidden state at <cls> (not the first or the last position of the padded row)
    expected_logits = torch.stack([model.mvt_head(hidden[row, CLS_INDEX[row]])[0] for row in range(2)])
    torch.testing.assert_close(out.mvt_logits, expected_logits)
    torch.testing.assert_close(out.mvt_loss, F.binary_cross_entropy_with_logits(expected_logits, batch["mvt_labels"]))


def test_training_path_without_full_logits_gives_the_same_losses_and_gradients(model):
    """`skip_logits=True` (what VGDTrainer passes in training) runs the LM head on the answer positions only: the
    same response loss as the definition above and as the full-logits path, the same gradients, no logits."""
    batch = training_batch()
    _, _, hidden = run_with_probes(model, batch)
    terms = [
        F.cross_entropy(model.lm_head(hidden[row, index - 1])[None], batch["input_ids"][row, index][None])
        for row in range(2)
        for index in range(ANSWER_START[row], CLS_INDEX[row])
    ]
    gradients = []
    for skip_logits in (False, True):
        model.zero_grad()
        out = model(**batch, skip_logits=skip_logits)
        assert (out.logits is None) == skip_logits
        torch.testing.assert_close(out.response_loss, torch.stack(terms).mean())
        (out.response_loss + out.mlm_loss + out.mvm_loss + out.mvt_loss).backward()
        gradients.append({name: parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.grad is not None})
    model.zero_grad()
    assert gradients[0].keys() == gradients[1].keys()
    for name in gradients[0]:
        torch.testing.assert_close(gradients[1][name], gradients[0][name], atol=1e-6, rtol=1e-5, msg=name)


def test_masked_region_input_is_zero_and_its_target_the_original(model):
    """Changing a masked region's features changes nothing the model sees, and changes the MVM loss exactly as
    the L1 distance to the new features says."""
    batch = training_batch()
    out, embeddings, hidden = run_with_probes(model, batch)
    moved = dict(batch, video_features=batch["video_features"].clone())
    moved["video_features"][0, 1, 2] += 3.0
    out_moved, embeddings_moved, _ = run_with_probes(model, moved)
    torch.testing.assert_close(embeddings_moved, embeddings)
    predicted = model.mvm_head(hidden[0, 1 * 3 + 2])
    delta = ((predicted - moved["video_features"][0, 1, 2]).abs() - (predicted - batch["video_features"][0, 1, 2]).abs()).sum()
    torch.testing.assert_close(out_moved.mvm_loss - out.mvm_loss, delta / (len(MVM_MASKED) * DIM))


# ---------------------------------------------------------------------------------------------- trainer


def clean_copy(batch):
    """The batch without MLM / MVM corruption: original tokens at the masked positions, no masked region."""
    clean = {key: value for key, value in batch.items() if key not in ("mlm_labels", "mvm_mask", "mvt_labels")}
    clean["input_ids"] = torch.where(batch["mlm_labels"] != -100, batch["mlm_labels"], batch["input_ids"])
    return clean


@pytest.mark.parametrize("response_context", ["clean", "masked"])
def test_trainer_weights_and_normalises_each_objective_by_its_own_items(model, tmp_path, response_context):
    """Over two accumulated micro-batches with different item counts per objective, the summed training loss is
    sum_o w_o * (sum of o's per-item losses) / (o's items over both), with w = (1.5, 1, 1, 1); the response loss
    is that of the unmasked batch (`response_context="clean"`) or of the masked one ("masked")."""
    first = training_batch()
    second = {key: value[1:] for key, value in training_batch().items()}  # row 1 alone: other proportions
    second["mvt_labels"] = torch.tensor([1.0])

    def items(batch):  # answer tokens, masked tokens, masked regions x D, pairs: counted by hand
        return {
            "response": int((batch["labels"][:, 1:] != -100).sum()),
            "mlm": int((batch["mlm_labels"] != -100).sum()),
            "mvm": int(batch["mvm_mask"].sum()) * DIM,
            "mvt": len(batch["mvt_labels"]),
        }

    assert items(first) == {"response": 5, "mlm": 3, "mvm": 15, "mvt": 2}
    assert items(second) == {"response": 2, "mlm": 1, "mvm": 5, "mvt": 1}
    weights = {"response": 1.5, "mlm": 1.0, "mvm": 1.0, "mvt": 1.0}
    losses = []
    for batch in (first, second):
        out = run_with_probes(model, batch)[0]
        response = run_with_probes(model, clean_copy(batch))[0].response_loss if response_context == "clean" else out.response_loss
        losses.append({"response": response, "mlm": out.mlm_loss, "mvm": out.mvm_loss, "mvt": out.mvt_loss})
    if response_context == "clean":
        assert not torch.allclose(losses[0]["response"], run_with_probes(model, first)[0].response_loss)
    expected = sum(
        weights[name] * sum(loss[name] * items(batch)[name] for loss, batch in zip(losses, (first, second)))
        / (items(first)[name] + items(second)[name])
        for name in weights
    )

    args = VGDTrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", gradient_accumulation_steps=2, response_context=response_context
    )
    trainer = VGDTrainer(model=model, args=args)
    batches, num_items = trainer.get_batch_samples(iter([first, second]), 2, torch.device("cpu"))
    assert int(num_items) == 7  # the response count, as the Trainer expects
    model.train()  # dropout is 0: training mode changes nothing but the normalisation path
    try:
        with torch.no_grad():
            total = sum(trainer.compute_loss(model, dict(batch), num_items_in_batch=num_items) for batch in batches)
    finally:
        model.eval()
    torch.testing.assert_close(total, expected)

    # a single batch in evaluation: the weighted sum of the means
    with torch.no_grad():
        single = trainer.compute_loss(model, dict(first))
    loss = losses[0]
    torch.testing.assert_close(single, 1.5 * loss["response"] + loss["mlm"] + loss["mvm"] + loss["mvt"])


def test_matching_rows_labelled_minus_100_are_ignored(model):
    batch = training_batch()
    out = run_with_probes(model, batch)[0]
    ignored = run_with_probes(model, dict(batch, mvt_labels=torch.tensor([1.0, -100.0])))[0]
    torch.testing.assert_close(ignored.mvt_loss, F.binary_cross_entropy_with_logits(out.mvt_logits[:1], torch.tensor([1.0])))
