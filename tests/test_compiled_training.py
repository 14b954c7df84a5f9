"""The training forward under `torch.compile`: one graph with all four objectives (no graph break, hence no
data-dependent shape and no host sync), and the same losses and gradients as the eager forward.

Eager, the heads run on the scored positions only (boolean-mask gathers); compiled, the losses are masked
reductions with fixed shapes over every position (modeling_vgd_gpt2.py, end of `forward`). These tests pin the two
paths to each other on the hand-written batch of tests/test_objectives_pinned.py, whose losses are pinned to their
definitions there.
"""

import pytest
import torch

from test_objectives_pinned import tiny_model, training_batch

OBJECTIVES = ("response_loss", "mlm_loss", "mvm_loss", "mvt_loss")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def losses_and_grads(forward, model, batch, weights=(1.5, 1.0, 1.0, 1.0)):
    """Each objective's loss and every parameter's gradient of the trainer's weighted sum."""
    model.zero_grad(set_to_none=True)
    out = forward(**batch)
    total = sum(w * out[name] for w, name in zip(weights, OBJECTIVES))
    total.backward()
    losses = {name: out[name].detach().clone() for name in OBJECTIVES}
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return losses, grads


@pytest.mark.parametrize("skip_logits", [True, False], ids=["skip_logits", "full_logits"])
def test_training_forward_has_no_graph_break(skip_logits):
    """All four objectives (labels, mlm_labels, mvm_mask, mvt_labels): 0 graph breaks (4 before issue 20: the
    boolean-mask indexing of the MLM / MVM losses), and `fullgraph=True` compiles and runs."""
    torch.set_num_threads(1)
    model = tiny_model().train()
    batch = {**training_batch(), "skip_logits": skip_logits}
    explanation = torch._dynamo.explain(model)(**batch)
    assert explanation.graph_break_count == 0, [str(reason) for reason in explanation.break_reasons]
    assert explanation.graph_count == 1
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    out = compiled(**batch)
    assert all(torch.isfinite(out[name]) for name in OBJECTIVES)


@pytest.mark.parametrize(
    "backend, skip_logits",
    [("aot_eager", True), ("aot_eager", False), ("inductor", True)],  # inductor (~1 min of compiles): the trainer's path
    ids=["aot_eager-skip_logits", "aot_eager-full_logits", "inductor-skip_logits"],
)
def test_compiled_losses_and_gradients_equal_eager(backend, skip_logits):
    """The compiled (fixed-shape) training step gives the eager losses and gradients, with and without
    `num_items_in_batch` (the Trainer's global normalisation of the response loss)."""
    torch.set_num_threads(1)
    model = tiny_model().train()
    for num_items in (None, torch.tensor(7)):
        batch = {**training_batch(), "skip_logits": skip_logits}
        if num_items is not None:
            batch["num_items_in_batch"] = num_items
        eager_losses, eager_grads = losses_and_grads(model, model, batch)
        torch._dynamo.reset()
        compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)
        compiled_losses, compiled_grads = losses_and_grads(compiled, model, batch)
        for name in OBJECTIVES:
            torch.testing.assert_close(compiled_losses[name], eager_losses[name], rtol=1e-5, atol=1e-6, msg=name)
        assert compiled_grads.keys() == eager_grads.keys()
        assert "mvm_head.weight" in eager_grads and "mvt_head.weight" in eager_grads
        for name, grad in eager_grads.items():
            torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)

