"""Bad turns in the dialogue files are found before step 1, named by file, dialogue, video id and turn."""

import json
import os

import pytest

import avsd_dataset.synthetic as synthetic
import run_vgd
from tests.test_run_vgd import TINY


def edit_demo_file(monkeypatch, file_name, edit):
    generate = synthetic.generate_synthetic_avsd

    def generate_then_edit(data_dir, **kwargs):
        info = generate(data_dir, **kwargs)
        path = os.path.join(data_dir, file_name)
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        edit(data["dialogs"])
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
        return info

    monkeypatch.setattr(synthetic, "generate_synthetic_avsd", generate_then_edit)


def long_question(dialogs):
    dialogs[1]["dialog"][2]["question"] = " ".join(["what does the man do next"] * 300) + " ?"


def test_an_over_long_question_is_named_before_training_then_skipped(tmp_path, monkeypatch, caplog):
    edit_demo_file(monkeypatch, "train_set4DSTC7-AVSD.json", long_question)
    output_dir = tmp_path / "run"
    args = TINY + ["--do_train", "--max_steps", "2", "--save_strategy", "no", "--output_dir", str(output_dir)]
    with pytest.raises(ValueError) as raised:
        run_vgd.main(args)
    message = str(raised.value)
    assert message.startswith("1 of the ") and "turns of the train split cannot be made into model inputs:" in message
    assert "train_set4DSTC7-AVSD.json, dialogue 1 (video id '" in message and "'), turn 2: the question has " in message
    assert "--skip_bad_examples" in message
    assert not (output_dir / "_run_vgd.json").exists()  # failed before step 1: the folder is released
    run_vgd.main(args + ["--skip_bad_examples"])
    assert "train: dropping 1 of " in caplog.text and (output_dir / "model.safetensors").exists()


def test_duplicate_video_and_turn_in_the_test_file_is_refused_with_both_dialogues(tmp_path, monkeypatch):
    edit_demo_file(monkeypatch, "test_set4DSTC7-AVSD.json", lambda dialogs: dialogs.append(json.loads(json.dumps(dialogs[0]))))
    with pytest.raises(ValueError) as raised:
        run_vgd.main(TINY + ["--do_predict", "--output_dir", str(tmp_path / "run")])
    message = str(raised.value)
    assert "test_set4DSTC7-AVSD.json: dialogues 0 and 8 have the same video id '" in message
    assert "test_result.json matches answers to dialogues by (video id, turn), so one would get the other's answer" in message


def test_extracted_feature_files_get_the_umask_mode(tmp_path):
    import numpy as np

    from avsd_dataset.extract_features import _atomic_write_bytes, save_features_atomic

    umask = os.umask(0)
    os.umask(umask)
    save_features_atomic(str(tmp_path / "v.npy"), np.zeros((1, 1, 2), np.float32))
    _atomic_write_bytes(str(tmp_path / "backbone.json"), b"{}")
    for name in ("v.npy", "backbone.json"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o666 & ~umask, name
