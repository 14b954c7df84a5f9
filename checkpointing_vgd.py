"""Keeping a training run's work safe on disk: complete checkpoints, the run that owns an output folder, and
guards on the output folder itself.

- A checkpoint is written into `tmp-checkpoint-N/` and renamed to `checkpoint-N/` once every file is on disk
  (`VGDTrainer._save_checkpoint`); `checkpoint_problem(path)` says what is wrong with a folder that was not (a
  half-written weights file, a missing `trainer_state.json`, ...), and `find_last_complete_checkpoint` picks the
  newest complete checkpoint of one run, with the reason each other folder was skipped.
- `RUN_INFO_NAME` (`_run_vgd.json`) in the output folder names the run that writes there (`run_id`); each
  checkpoint records its run in `CHECKPOINT_INFO_NAME` (`vgd_state.json`, written last, together with the data
  collator's random state). Files starting with `_` and `checkpoint-*` folders are not pushed to the Hub.
- `check_output_dir_writable`, `results_in_folder` and `rescue_dir` guard the output folder before and after training.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import uuid
import zipfile

RUN_INFO_NAME = "_run_vgd.json"
CHECKPOINT_INFO_NAME = "vgd_state.json"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STAGING_PREFIX = "tmp-"
# What a run of run_vgd.py writes into its output folder (besides checkpoints): a folder holding any of these
# holds another run's results.
RESULT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "config.json", "trainer_state.json",
    "all_results.json", "train_results.json", "eval_results.json", "metrics.json", "test_result.json", RUN_INFO_NAME,
)


# ---------------------------------------------------------------------------------------------- run identity


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]


def read_run_info(folder: str) -> dict | None:
    """The `_run_vgd.json` of an output folder (None when absent or unreadable)."""
    try:
        with open(os.path.join(folder, RUN_INFO_NAME), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_json_atomic(path: str, value) -> None:
    """Write JSON to `path` through a temporary file renamed into place (never a half-written file)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------- checkpoints


def fsync_tree(folder: str) -> None:
    """Flush every file of `folder` and the folder entries themselves to disk."""
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(root)


def fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _safetensors_problem(path: str) -> str | None:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            f.keys()
    except Exception as error:  # SafetensorError is not an OSError subclass
        return f"{os.path.basename(path)} is unreadable or half-written ({error})"
    return None


def checkpoint_problem(path: str) -> str | None:
    """Why the checkpoint folder `path` cannot be resumed from, or None when it is complete: `trainer_state.json`
    readable, the model weights (every safetensors shard) fully written, the `torch.save` files (optimizer, scheduler,
    RNG) readable archives."""
    state_path = os.path.join(path, "trainer_state.json")
    if not os.path.isfile(state_path):
        return "trainer_state.json is missing (the save was interrupted)"
    try:
        with open(state_path, encoding="utf-8") as f:
            json.load(f)
    except (OSError, ValueError) as error:
        return f"trainer_state.json is unreadable ({error})"
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
    elif os.path.isfile(os.path.join(path, "model.safetensors")):
        shards = ["model.safetensors"]
    elif os.path.isfile(os.path.join(path, "pytorch_model.bin")) or os.path.isdir(os.path.join(path, "pytorch_model_fsdp_0")):
        shards = []
    else:
        return "no model weights (model.safetensors is missing)"
    for shard in shards:
        if not os.path.isfile(os.path.join(path, shard)):
            return f"{shard} is missing"
        problem = _safetensors_problem(os.path.join(path, shard))
        if problem:
            return problem
    for name in sorted(os.listdir(path)):
        if name.endswith((".pt", ".pth", ".bin")) and os.path.isfile(os.path.join(path, name)):
            try:
                with zipfile.ZipFile(os.path.join(path, name)) as archive:
                    archive.namelist()
            except (OSError, zipfile.BadZipFile) as error:
                return f"{name} is unreadable or half-written ({error})"
    return None


def read_checkpoint_info(path: str) -> dict | None:
    try:
        with open(os.path.join(path, CHECKPOINT_INFO_NAME), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def find_last_complete_checkpoint(output_dir: str, run_id: str | None = None) -> tuple[str | None, list[tuple[str, str]]]:
    """The newest complete `checkpoint-N` of `output_dir` that belongs to the run `run_id` (any run when None),
    and `(folder, reason)` for every newer or unfinished folder skipped on the way."""
    if not os.path.isdir(output_dir):
        return None, []
    candidates, skipped = [], []
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        if not os.path.isdir(path):
            continue
        if name.startswith(STAGING_PREFIX) and CHECKPOINT_PATTERN.match(name[len(STAGING_PREFIX):]):
            skipped.append((path, "an unfinished save (never renamed into place)"))
            continue
        match = CHECKPOINT_PATTERN.match(name)
        if match:
            candidates.append((int(match.group(1)), path))
    for _, path in sorted(candidates, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None and run_id is not None:
            info = read_checkpoint_info(path)
            if info is None:
                problem = f"it was not written by this run (no {CHECKPOINT_INFO_NAME}; this run is {run_id})"
            elif info.get("run_id") != run_id:
                problem = f"it belongs to another run ({info.get('run_id')}; this run is {run_id})"
        if problem is None:
            return path, skipped
        skipped.append((path, problem))
    return None, skipped


# ---------------------------------------------------------------------------------------------- output folder


def results_in_folder(folder: str) -> list[str]:
    """The names of earlier results in `folder` (model, metrics, predictions, checkpoints), empty when none."""
    if not os.path.isdir(folder):
        return []
    names = sorted(os.listdir(folder))
    found = [name for name in names if name in RESULT_FILES]
    found += [name for name in names if CHECKPOINT_PATTERN.match(name) or (name.startswith(STAGING_PREFIX) and CHECKPOINT_PATTERN.match(name[len(STAGING_PREFIX):]))]
    return found


def remove_results(folder: str, names: list[str]) -> None:
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def check_output_dir_writable(folder: str, needed_bytes: int) -> None:
    """Raise an `OSError` naming `folder` unless a file can be written there and `needed_bytes` are free."""
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".write-test-{os.getpid()}")
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
        os.remove(probe)
    except OSError as error:
        raise OSError(
            error.errno, f"the output folder {folder} is not writable ({error.strerror or error}); nothing was trained. "
            "Choose another --output_dir or make this one writable."
        ) from error
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise OSError(
            28, f"the output folder {folder} has {free / 2**20:.1f} MiB free, but this run needs about "
            f"{needed_bytes / 2**20:.1f} MiB (model, optimizer state and checkpoints); nothing was trained. "
            "Free some space or choose another --output_dir."
        )


def rescue_dir(output_dir: str, run_id: str | None) -> list[str]:
    """Where to put a run's newest state when its output folder cannot take it, in order of preference:
    `$VGD_RESCUE_DIR`, `~/.cache/vgd_gpt2/rescued`, the system temporary folder."""
    name = f"{os.path.basename(os.path.abspath(output_dir))}-{run_id or new_run_id()}"
    roots = [os.environ.get("VGD_RESCUE_DIR"), os.path.join(os.path.expanduser("~"), ".cache", "vgd_gpt2", "rescued"), os.path.join(tempfile.gettempdir(), "vgd_gpt2-rescued")]
    return [os.path.join(root, name) for root in roots if root]


def fix_file_modes(folder: str) -> None:
    """Give every file of `folder` the mode the umask allows (safetensors writes its files 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            os.chmod(path, 0o666 & ~umask)
