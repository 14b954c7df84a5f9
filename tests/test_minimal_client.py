"""A client without torchvision and av (issue 23): a features-only model saved by `save_pretrained` loads through
`AutoProcessor` / `AutoModelForCausalLM` with `trust_remote_code=True`, answers through the README snippet ("Using a
shared model") and the `video-grounded-dialogue` pipeline; a model and processor that record a video backbone (the
video demo's) load too and answer from features, and a video file then gets an error naming the missing packages.

The missing packages are simulated in a subprocess: `sys.modules[name] = None` for torchvision, av and PIL (Pillow)
before anything is imported, so `import torchvision` raises `ModuleNotFoundError` and `importlib.util.find_spec`
(what transformers' `is_torchvision_available` reads) returns None, as in an environment where they are not
installed. The subprocess runs outside the repository, without PYTHONPATH, with a fresh HF_HOME and
HF_HUB_OFFLINE=1. (Measured once in a real venv with only torch, transformers, safetensors, tokenizers and
numpy: the same script passes there; see the report of issue 23.)"""

import json
import os
import subprocess
import sys

import pytest

from chat_fixtures import FEATURE_DIM, build_tiny_chat_model

BLOCKED = ("torchvision", "av", "PIL")

PREAMBLE = f"""
import sys
for name in {BLOCKED!r}:
    sys.modules[name] = None  # "not installed": imports fail, importlib.util.find_spec returns None
import importlib.util
assert importlib.util.find_spec("torchvision") is None
try:
    import torchvision  # noqa: F401
except ImportError:
    pass
else:
    raise AssertionError("torchvision is not blocked")
"""

# The README's "Using a shared model" snippet, with features from a .npy file (what extract_features writes), then the
# pipeline on the same folder.
CLIENT = """
import json
import numpy as np
from transformers import AutoModelForCausalLM, AutoProcessor, pipeline

folder = sys.argv[1]
feats = np.load(sys.argv[2])
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)   # or a Hub id
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)

inputs = processor(
    video_features=[feats],
    caption=["a man opens a window ."],
    history=[[("is he alone ?", "yes he is .")]],
    question=["what does he do next ?"],
    return_tensors="pt",
)
out = model.generate(**inputs, num_beams=2, max_new_tokens=4)
answers = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

chat = pipeline("video-grounded-dialogue", model=folder, trust_remote_code=True)
answer = chat(video=sys.argv[2], caption="a man opens a window .", history=[], question="what does he do next ?", max_new_tokens=4)
rendered = processor.apply_chat_template([
    {"role": "system", "content": [{"type": "text", "text": "a man opens a window ."}]},
    {"role": "user", "content": [{"type": "video", "video": feats}, {"type": "text", "text": "what next ?"}]},
])
loaded = [name for name in ("torchvision", "av", "PIL") if sys.modules.get(name) is not None]
print("RESULT " + json.dumps({
    "processor": type(processor).__name__,
    "video_processor": type(processor.video_processor).__name__,
    "model": type(model).__name__,
    "answers": answers,
    "pipeline": answer,
    "rendered": rendered,
    "loaded": loaded,
}))
"""


def run_client(script: str, tmp_path, *args) -> subprocess.CompletedProcess:
    path = tmp_path / "client.py"
    path.write_text(PREAMBLE + script)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run(
        [sys.executable, "-s", str(path), *map(str, args)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    import numpy as np

    folder = str(tmp_path_factory.mktemp("shared_model"))
    build_tiny_chat_model(folder)
    features = os.path.join(folder, "clip.npy")
    np.save(features, np.random.default_rng(0).standard_normal((4, FEATURE_DIM)).astype(np.float32))
    return folder, features


def test_features_only_model_loads_and_answers_without_torchvision_and_av(saved_model, tmp_path):
    folder, features = saved_model
    result = run_client(CLIENT, tmp_path, folder, features)
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    got = json.loads(line[len("RESULT ") :])
    assert got["processor"] == "VGDProcessor"
    assert got["video_processor"] == "NoVideoProcessor"
    assert got["model"] == "VGDGPT2ForDialogue"
    assert len(got["answers"]) == 1 and isinstance(got["answers"][0], str)
    assert isinstance(got["pipeline"]["answer"], str)
    assert got["rendered"].startswith("<video><cap> a man opens a window .<usr> what next ?<sys>")
    assert got["loaded"] == []  # neither torchvision, av nor Pillow was needed


def test_features_only_answers_equal_those_of_the_repository(saved_model, tmp_path):
    """The blocked client answers as the repository's own classes do (same processor output, same generation)."""
    import numpy as np
    import torch

    from modeling_vgd_gpt2 import VGDGPT2ForDialogue
    from processing_vgd import VGDProcessor

    folder, features = saved_model
    script = CLIENT.replace("num_beams=2", "do_sample=False")
    result = run_client(script, tmp_path, folder, features)
    assert result.returncode == 0, result.stderr[-4000:]
    got = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT ") :])
    processor = VGDProcessor.from_pretrained(folder)
    model = VGDGPT2ForDialogue.from_pretrained(folder).eval()
    inputs = processor(
        video_features=[np.load(features)], caption=["a man opens a window ."],
        history=[[("is he alone ?", "yes he is .")]], question=["what does he do next ?"], return_tensors="pt",
    )
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=4)
    assert got["answers"] == processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.fixture(scope="module")
def backbone_settings(tiny_gpt2_dir):
    """The `video_processor` entry of a processor that records a (random, tiny) r3d_18 backbone."""
    pytest.importorskip("torchvision")
    from processing_vgd import VGDProcessor
    from video_backbone_vgd import resolve_video_backbone

    spec = resolve_video_backbone("r3d_18", pretrained=False, crop_size=32, clip_length=8)
    processor = VGDProcessor.from_gpt2_pretrained(tiny_gpt2_dir, video_backbone=spec, max_video_frames=8)
    return processor.to_dict()["video_processor"]


def test_a_recorded_backbone_loads_and_names_the_missing_packages_for_videos(saved_model, backbone_settings, tmp_path):
    """A processor that records a video backbone loads without torchvision and av: it takes features, and `videos=`
    (the processor's, the pipeline's) raises an ImportError naming both packages and the pip command."""
    import shutil

    folder = str(tmp_path / "backbone_model")
    shutil.copytree(saved_model[0], folder, ignore=shutil.ignore_patterns("data", "gpt2"))
    config_path = os.path.join(folder, "processor_config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["video_processor"] = backbone_settings
    with open(config_path, "w") as f:
        json.dump(config, f)
    video_file = tmp_path / "clip.mp4"
    video_file.write_bytes(b"not decoded: the packages are missing first")
    script = """
import numpy as np
from transformers import AutoProcessor, pipeline
processor = AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)
messages = [type(processor.video_processor).__name__]
try:
    processor(videos=[sys.argv[3]], caption=["a man ."], history=[[]], question=["what next ?"])
except ImportError as error:
    messages.append(str(error))
chat = pipeline("video-grounded-dialogue", model=sys.argv[1], trust_remote_code=True)
messages.append(chat(video=sys.argv[2], caption="a man .", history=[], question="what next ?", max_new_tokens=3)["answer"])
try:
    chat(video=sys.argv[3], caption="a man .", history=[], question="what next ?")
except ImportError as error:
    messages.append(str(error))
processor.save_pretrained(sys.argv[4])
print("RESULT " + json.dumps(messages))
"""
    resaved = tmp_path / "resaved"
    result = run_client("import json\n" + script, tmp_path, folder, saved_model[1], video_file, resaved)
    assert result.returncode == 0, result.stderr[-4000:]
    kind, processor_error, answer, pipeline_error = json.loads(
        next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT ") :]
    )
    assert kind == "UnavailableVideoProcessor"
    for error in (processor_error, pipeline_error):
        assert "records the video backbone 'r3d_18'" in error
        assert "pip install torchvision av" in error
    assert str(video_file) in pipeline_error
    assert isinstance(answer, str)
    assert "records the video backbone 'r3d_18'" in result.stderr  # the warning at load time
    # saved again without the packages, the processor still records the backbone's settings
    with open(resaved / "processor_config.json") as f:
        assert json.load(f)["video_processor"] == json.loads(json.dumps(backbone_settings))


def test_a_model_with_a_torchvision_backbone_loads_without_torchvision(tiny_gpt2_dir, tmp_path):
    """The model of a video demo records its torchvision backbone: without torchvision it loads (the backbone's
    weights ignored, no "unexpected keys"), answers from features as the repository's model does, refuses
    `pixel_values_videos` and `save_pretrained` with errors naming the cause, and saves for features only once
    `config.video_backbone` is None."""
    pytest.importorskip("torchvision")
    import numpy as np
    import torch

    from modeling_vgd_gpt2 import VGDGPT2ForDialogue
    from processing_vgd import VGDProcessor
    from video_backbone_vgd import resolve_video_backbone

    spec = dict(resolve_video_backbone("r3d_18", pretrained=False, crop_size=32, clip_length=8, layer="layer2"), random_init_seed=0)
    processor = VGDProcessor.from_gpt2_pretrained(tiny_gpt2_dir, video_backbone=spec, max_video_frames=8)
    model = VGDGPT2ForDialogue.from_gpt2_pretrained(tiny_gpt2_dir, processor=processor).eval()
    folder = str(tmp_path / "video_model")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    features = str(tmp_path / "features.npy")
    np.save(features, np.random.default_rng(0).standard_normal((3, 4, model.config.video_feature_dim)).astype(np.float32))

    script = """
import numpy as np, torch
from transformers import AutoModelForCausalLM, AutoProcessor
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True)
processor = AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)
inputs = processor(video_features=[np.load(sys.argv[2])], caption=["a man ."], history=[[]], question=["what next ?"], return_tensors="pt")
out = model.generate(**inputs, do_sample=False, max_new_tokens=4)
got = {"backbone": model.video_backbone is not None, "tokens": out[0, inputs["input_ids"].shape[1]:].tolist()}
try:
    model.extract_video_features(torch.zeros(1, 1, 8, 3, 32, 32))
except ImportError as error:
    got["pixels"] = str(error)
try:
    model.save_pretrained(sys.argv[3])
except RuntimeError as error:
    got["save"] = str(error)
model.config.video_backbone = None
model.save_pretrained(sys.argv[3])
print("RESULT " + json.dumps(got))
"""
    features_only = tmp_path / "features_only"
    result = run_client("import json\n" + script, tmp_path, folder, features, features_only)
    assert result.returncode == 0, result.stderr[-4000:]
    got = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT ") :])
    assert got["backbone"] is False
    assert "The video backbone of this model (r3d_18) is not built" in result.stderr
    assert "unexpected" not in result.stderr.lower()
    assert "pip install torchvision" in got["pixels"] and "video_features" in got["pixels"]
    assert "cannot save this model" in got["save"] and "config.video_backbone = None" in got["save"]
    inputs = processor(video_features=[np.load(features)], caption=["a man ."], history=[[]], question=["what next ?"], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=4)
    assert got["tokens"] == out[0, inputs["input_ids"].shape[1] :].tolist()
    with open(features_only / "config.json") as f:
        assert json.load(f)["video_backbone"] is None
    reloaded = VGDGPT2ForDialogue.from_pretrained(str(features_only)).eval()
    assert reloaded.video_backbone is None
    with torch.no_grad():
        assert torch.equal(reloaded.generate(**inputs, do_sample=False, max_new_tokens=4), out)


def test_the_pipeline_still_says_when_no_processor_was_saved(saved_model, tmp_path):
    import shutil

    from transformers import pipeline

    folder = str(tmp_path / "model_only")
    shutil.copytree(saved_model[0], folder, ignore=shutil.ignore_patterns("data", "gpt2"))
    os.remove(os.path.join(folder, "processor_config.json"))
    with pytest.raises(ValueError, match="no processor found.*save it next to the model"):
        pipeline("video-grounded-dialogue", model=folder, trust_remote_code=True)


def test_an_unavailable_video_processor_keeps_its_settings_and_names_the_packages(backbone_settings):
    """In process: what a processor holds when torchvision / av are missing survives being passed on, saves its
    settings, and raises an ImportError naming the packages when asked for videos."""
    from processing_vgd import UnavailableVideoProcessor, _video_processor_from_settings

    unavailable = UnavailableVideoProcessor(backbone_settings, ["torchvision", "av"])
    assert _video_processor_from_settings(unavailable) is unavailable
    assert unavailable.to_dict() == backbone_settings and unavailable.video_backbone is None
    with pytest.raises(ImportError, match="'r3d_18'.*pip install torchvision av"):
        unavailable(["clip.mp4"])
