"""The repository's shape: the model files stand alone (a saved model ships only what inference needs), there are no
import circles among them, and the old module names still work (with a warning) or name their new place."""

import os
import subprocess
import sys
import textwrap

import pytest

from test_trainer import build

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_FILES = {
    "configuration_vgd_gpt2.py", "modeling_vgd_gpt2.py", "processing_vgd.py", "feature_extraction_vgd.py",
    "video_processing_vgd.py", "video_backbone_vgd.py", "chat_template_vgd.py", "pipeline_vgd.py",
}


def test_a_saved_model_ships_only_the_inference_code(tiny_gpt2_dir, tmp_path):
    processor, model = build(tiny_gpt2_dir)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    shipped = {name for name in os.listdir(tmp_path) if name.endswith(".py")}
    assert shipped <= MODEL_FILES, shipped - MODEL_FILES
    assert {"configuration_vgd_gpt2.py", "modeling_vgd_gpt2.py", "processing_vgd.py"} <= shipped


def test_the_model_files_import_without_the_training_data_and_app_packages():
    """Each model file imports in a fresh process where avsd_dataset, vgd_training and vgd_apps cannot be imported:
    nothing a saved model runs depends on them (and no import circle goes through them)."""
    script = textwrap.dedent(
        """
        import importlib, importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("avsd_dataset", "vgd_training", "vgd_apps", "data_collator_vgd", "trainer_vgd", "checkpointing_vgd"):
                    raise ImportError(f"blocked: {name}")
        sys.meta_path.insert(0, Block())
        for module in sys.argv[1:]:
            importlib.import_module(module)
        print("ok")
        """
    )
    modules = sorted(name[:-3] for name in MODEL_FILES)
    result = subprocess.run([sys.executable, "-c", script, *modules], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


@pytest.mark.parametrize(
    "old, name, new",
    [
        ("trainer_vgd", "VGDTrainer", "vgd_training"),
        ("trainer_vgd", "DialogueTurnDataset", "avsd_dataset.turns"),
        ("data_collator_vgd", "DataCollatorForVGD", "avsd_dataset.collator"),
        ("checkpointing_vgd", "find_last_complete_checkpoint", "vgd_training.checkpointing"),
        ("chat_vgd", "DialogueSession", "vgd_apps.chat"),
        ("app_vgd", "sample_frames", "vgd_apps.web"),
        ("visualization_vgd", "plot_video_relevance", "vgd_apps.visualization"),
    ],
)
def test_old_module_names_forward_with_a_warning(old, name, new):
    script = (
        "import warnings\nwith warnings.catch_warnings(record=True) as caught:\n    warnings.simplefilter('always')\n"
        f"    from {old} import {name} as a\nprint([str(w.message) for w in caught if w.category is FutureWarning][0])\n"
        f"from {new} import {name} as b\nprint(a is b)"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    warning, same = result.stdout.strip().splitlines()
    assert warning.startswith(f"{old} moved to ") and new in warning and same == "True"


def test_names_that_left_the_processor_say_where_they_went():
    with pytest.raises(ImportError, match=r"from avsd_dataset\.collator import DataCollatorForVGD"):
        from processing_vgd import DataCollatorForVGD  # noqa: F401
