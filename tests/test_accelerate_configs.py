"""Every file in configs/accelerate/ goes through accelerate's own launcher code: parsed as `accelerate launch
--config_file` parses it, and turned into the environment the launched processes get. (Two-process DDP on the CPU
runs in tests/test_run_vgd.py; FSDP and DeepSpeed need GPUs, see the README.)"""

import glob
import os

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env, prepare_simple_launcher_cmd_env

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "accelerate", "*.yaml")))


def launch_environment(config_file):
    args = launch_command_parser().parse_args(["--config_file", config_file, os.path.join(REPO_ROOT, "run_vgd.py"), "--do_train"])
    args, defaults, mp_from_config_flag = _validate_launch_command(args)
    if args.use_deepspeed:  # as accelerate's launch_command does before its DeepSpeed launcher
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mp_from_config_flag else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        _, env = prepare_deepspeed_cmd_env(args)
    elif args.multi_gpu or args.use_fsdp:
        env = prepare_multi_gpu_env(args)
    else:
        _, env = prepare_simple_launcher_cmd_env(args)
    return args, env


def test_every_config_is_tested():
    assert [os.path.basename(path) for path in CONFIGS] == ["deepspeed_zero2.yaml", "fsdp.yaml", "multi_gpu.yaml", "single_gpu.yaml"]


@pytest.mark.parametrize("config", CONFIGS, ids=os.path.basename)
def test_config_parses_with_accelerate(config):
    cluster = load_config_from_file(config)
    expected = {"deepspeed_zero2.yaml": "DEEPSPEED", "fsdp.yaml": "FSDP", "multi_gpu.yaml": "MULTI_GPU", "single_gpu.yaml": "NO"}
    assert str(cluster.distributed_type).split(".")[-1] == expected[os.path.basename(config)]
    assert cluster.mixed_precision == "bf16"


def test_deepspeed_config_becomes_the_zero2_launch_environment():
    args, env = launch_environment(os.path.join(REPO_ROOT, "configs", "accelerate", "deepspeed_zero2.yaml"))
    assert args.use_deepspeed and args.num_processes == 4
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
    assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "2"
    assert env["ACCELERATE_GRADIENT_ACCUMULATION_STEPS"] == "1" and env["ACCELERATE_GRADIENT_CLIPPING"] == "1.0"
    assert env["ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE"] == "none"
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"


def test_fsdp_config_becomes_the_fsdp2_launch_environment():
    args, env = launch_environment(os.path.join(REPO_ROOT, "configs", "accelerate", "fsdp.yaml"))
    assert args.use_fsdp and args.num_processes == 4
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP" and env["FSDP_TRANSFORMER_CLS_TO_WRAP"] == "GPT2Block"
    assert env["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT"


def test_fsdp_wraps_a_layer_class_our_model_has(tiny_gpt2_dir):
    import yaml

    from modeling_vgd_gpt2 import VGDGPT2ForDialogue
    from processing_vgd import VGDProcessor

    with open(os.path.join(REPO_ROOT, "configs", "accelerate", "fsdp.yaml")) as f:
        wrapped = yaml.safe_load(f)["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"]
    processor = VGDProcessor.from_gpt2_pretrained(tiny_gpt2_dir, video_feature_dim=4)
    model = VGDGPT2ForDialogue.from_gpt2_pretrained(tiny_gpt2_dir, processor=processor)
    assert sum(type(module).__name__ == wrapped for module in model.modules()) == model.config.n_layer


def test_multi_gpu_config_becomes_the_ddp_launch_environment():
    args, env = launch_environment(os.path.join(REPO_ROOT, "configs", "accelerate", "multi_gpu.yaml"))
    assert args.multi_gpu and args.num_processes == 4 and env["ACCELERATE_MIXED_PRECISION"] == "bf16"


def test_single_gpu_config_is_one_process():
    args, env = launch_environment(os.path.join(REPO_ROOT, "configs", "accelerate", "single_gpu.yaml"))
    assert args.num_processes == 1 and not (args.multi_gpu or args.use_fsdp or args.use_deepspeed)
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"
