"""The private `Trainer` methods that `VGDTrainer` and its mixins override or call exist with the signatures they were
written against: a transformers release that changes one fails here, not silently in a long run."""

import inspect

import pytest
from transformers import Trainer
from transformers.trainer_utils import rotate_checkpoints

from vgd_training import VGDTrainer
from vgd_training.checkpointing import AtomicCheckpointMixin
from vgd_training.exact_resume import ExactResumeMixin

# name -> the parameters (after self) of transformers' own method that our override relies on
PRIVATE_HOOKS = {
    "_get_output_dir": ["trial"],
    "_push_from_checkpoint": ["checkpoint_folder"],
    "_save_checkpoint": ["model", "trial"],
    "_get_train_sampler": ["train_dataset"],
    "_get_collator_with_removed_columns": ["data_collator", "description"],
    "_save_rng_state": ["output_dir"],
    "_get_num_items_in_batch": ["batch_samples", "device"],
    "_maybe_log_save_evaluate": ["tr_loss", "grad_norm", "model", "trial", "epoch", "ignore_keys_for_eval", "start_time", "learning_rate"],
    "_issue_warnings_after_load": ["load_result"],
}


@pytest.mark.parametrize("name", sorted(PRIVATE_HOOKS))
def test_private_trainer_hooks_keep_their_signature(name):
    method = getattr(Trainer, name, None)
    assert method is not None, f"transformers' Trainer no longer has {name}: revisit VGDTrainer's override"
    parameters = list(inspect.signature(method).parameters)[1:]
    assert parameters == PRIVATE_HOOKS[name], f"Trainer.{name}{parameters}: the override was written for {PRIVATE_HOOKS[name]}"


def test_every_private_override_is_listed_and_explained():
    """Each private Trainer method that our classes define is in PRIVATE_HOOKS (so its signature is checked), and its
    definition says why no public hook serves."""
    ours = {}
    for cls in (VGDTrainer, ExactResumeMixin, AtomicCheckpointMixin):
        for name, value in vars(cls).items():
            if name.startswith("_") and not name.startswith("__") and callable(value) and hasattr(Trainer, name):
                ours[name] = cls
    assert set(ours) == set(PRIVATE_HOOKS)
    for name, cls in ours.items():
        source_lines, _ = inspect.getsourcelines(cls)
        text = "".join(source_lines)
        index = text.index(f"def {name}(")
        comment = text[:index].rstrip().splitlines()[-1]
        assert comment.strip().startswith("#") and "test_trainer_hooks" in text[max(0, index - 600) : index], name


def test_public_helpers_used_by_the_checkpointing_mixin_exist():
    assert list(inspect.signature(rotate_checkpoints).parameters)[:4] == ["output_dir", "save_total_limit", "best_model_checkpoint", "use_mtime"]
    assert "trial" in inspect.signature(Trainer.train).parameters
