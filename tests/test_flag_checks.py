"""Every flag value checked where it is parsed, the flag named in the error."""

import pytest

import run_vgd


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--max_steps", "0"], "--max_steps must be a positive number of optimizer steps, or -1 to train for --num_train_epochs; got 0"),
        (["--max_steps", "-5"], "--max_steps must be a positive number of optimizer steps, or -1 to train for --num_train_epochs; got -5"),
        (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be at least 1, got 0"),
        (["--per_device_eval_batch_size", "0"], "--per_device_eval_batch_size must be at least 1, got 0"),
        (["--total_train_batch_size", "0"], "--total_train_batch_size must be at least 1, got 0"),
        (["--caption_fields", "bogus"], "--caption_fields bogus: 'bogus' is not a field of the AVSD data; choose among caption, summary"),
        (["--caption_fields", "caption,titel,sumary"], "--caption_fields caption,titel,sumary: 'titel', 'sumary' are not fields of the AVSD data; choose among caption, summary"),
        (["--max_train_samples", "0"], "--max_train_samples must be at least 1, got 0"),
        (["--mlm_probability", "1.5"], "--mlm_probability must be between 0 and 1, got 1.5"),
        (["--video_pooling", "spacetime"], "--video_pooling must be one of spatiotemporal, spatial, temporal, spatial_and_temporal, got 'spacetime'"),
        (["--train_sampling_strategy", "shuffled"], "--train_sampling_strategy must be random, sequential, group_by_length or batch_rebalance, got 'shuffled'"),
    ],
)
def test_a_bad_flag_value_is_refused_when_parsed_naming_the_flag(argv, message, tmp_path):
    with pytest.raises(ValueError) as raised:
        run_vgd.parse_arguments(argv + ["--output_dir", str(tmp_path)])
    assert str(raised.value) == message


def test_good_values_still_parse(tmp_path):
    _, data_args, _, training_args = run_vgd.parse_arguments(["--max_steps", "3", "--caption_fields", "summary", "--output_dir", str(tmp_path)])
    assert training_args.max_steps == 3 and data_args.caption_fields == "summary"
    _, data_args, _, training_args = run_vgd.parse_arguments(["--caption_fields", " caption , summary ", "--output_dir", str(tmp_path)])
    assert training_args.max_steps == -1 or training_args.max_steps > 0


@pytest.mark.parametrize("module", ["avsd_dataset.video_demo", "avsd_dataset.extract_features", "run_vgd"])
def test_help_prints_every_flag(module, capsys):
    """`--help` renders every flag's help (argparse formats it with `%`: a bare "5 % less" crashed the video demo's)."""
    import importlib

    with pytest.raises(SystemExit) as exited:
        importlib.import_module(module).main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "--seed" in out or "--backbone" in out
    if module == "avsd_dataset.video_demo":
        assert "--use_mvt" in out and "15% of the turns" in out and "~5% less padding" in out
