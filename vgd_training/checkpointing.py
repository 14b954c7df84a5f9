"""Keeping a training run's work safe on disk: complete checkpoints, the run that owns an output folder, and
guards on the output folder itself.

- [`AtomicCheckpointMixin`] (a base of `VGDTrainer`): the Trainer's own checkpoint is written into
  `tmp-checkpoint-N/` and renamed to `checkpoint-N/` once every file is on disk; `checkpoint_problem(path)` says what is wrong with a folder that was not (a
  half-written weights file, a missing `trainer_state.json`, ...), and `find_last_complete_checkpoint` picks the
  newest complete checkpoint of one run, with the reason each other folder was skipped.
- `RUN_INFO_NAME` (`_run_vgd.json`) in the output folder names the run that writes there (`run_id`); each
  checkpoint records its run in `CHECKPOINT_INFO_NAME` (`vgd_state.json`, written last, together with the data
  collator's random state). Files starting with `_` and `checkpoint-*` folders are not pushed to the Hub.
- `check_output_dir_writable`, `results_in_folder` and `rescue_dir` guard the output folder before and after training.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
import zipfile

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

logger = logging.getLogger(__name__)

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


# ---------------------------------------------------------------------------------------------- the Trainer mixin


def _replacement_pending(folder: str) -> bool:
    from .output_folder import replacement_pending

    return replacement_pending(folder)


def _replace_earlier_results(folder: str, keep: tuple[str, ...] = ()) -> None:
    from .output_folder import replace_earlier_results

    replace_earlier_results(folder, keep=keep)


class AtomicCheckpointMixin:
    """Checkpoints that are complete or absent, resumable by name, and a rescue path after a failure; a base of
    `VGDTrainer` (before `transformers.Trainer`).

    - `_save_checkpoint` lets `Trainer._save_checkpoint` write the usual checkpoint into
      `<output_dir>/tmp-checkpoint-N/checkpoint-N` (through `_get_output_dir`), adds `vgd_state.json` (run id and
      the state returned by `extra_checkpoint_state()`), flushes it to disk and renames it to
      `<output_dir>/checkpoint-N`: an interrupted save never leaves a folder that looks complete.
    - `train(resume_from_checkpoint="last")` takes the newest complete checkpoint of this run.
    - `save_emergency_checkpoint()` / `save_model_or_rescue()` keep the trained state after a failure, in a rescue
      folder when the output folder cannot take it.
    """

    run_id: str | None = None

    def extra_checkpoint_state(self) -> dict:
        """JSON-serialisable state saved in every checkpoint's `vgd_state.json` besides the run id (the exact-resume
        mixin adds the data collator's random state)."""
        return {}

    # Private hook, no public one serves: the Trainer asks `_get_output_dir` for the folder a checkpoint goes into,
    # so a staged save redirects it there and leaves the rest of `Trainer._save_checkpoint` as transformers wrote it.
    # tests/test_trainer_hooks.py fails if its signature changes.
    def _get_output_dir(self, trial):
        staging_root = getattr(self, "_staging_root", None)
        return staging_root if staging_root is not None else super()._get_output_dir(trial)

    # Private hook: the Trainer pushes a checkpoint from inside `_save_checkpoint`, before our rename; the push is
    # deferred to the complete folder. (Signature checked by tests/test_trainer_hooks.py.)
    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        if getattr(self, "_staging_root", None) is not None:
            self._deferred_push = True
            return
        super()._push_from_checkpoint(checkpoint_folder)

    # Private method extended (it has no public counterpart): calls the base class into a staging folder, then
    # renames. (Signature checked by tests/test_trainer_hooks.py.)
    def _save_checkpoint(self, model, trial) -> None:
        """`Trainer._save_checkpoint` into `tmp-checkpoint-N/`, then `vgd_state.json`, fsync and an atomic rename to
        `checkpoint-N`; rotation of old checkpoints and the Hub push happen on the complete folder."""
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        run_dir = super()._get_output_dir(trial)
        staging_root = os.path.join(run_dir, STAGING_PREFIX + name)
        staged = os.path.join(staging_root, name)
        final_dir = os.path.join(run_dir, name)
        if self.args.should_save and os.path.isdir(staging_root):
            shutil.rmtree(staging_root)
        self.accelerator.wait_for_everyone()
        self._staging_root, self._deferred_push = staging_root, False
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_root = None
        self.accelerator.wait_for_everyone()  # every process has written its part (RNG states, shards)
        if self.args.should_save:
            if self.state.best_model_checkpoint == staged:
                self.state.best_model_checkpoint = final_dir
                self.state.save_to_json(os.path.join(staged, "trainer_state.json"))
            write_json_atomic(
                os.path.join(staged, CHECKPOINT_INFO_NAME),
                {"run_id": self.run_id, "global_step": self.state.global_step, **self.extra_checkpoint_state()},
            )
            fix_file_modes(staged)
            fsync_tree(staged)
            # this run has a model now: an earlier run's results that it replaces go (written beside, then swapped)
            _replace_earlier_results(run_dir, keep=(os.path.basename(staging_root),))
            replaced = None
            if os.path.isdir(final_dir):  # an older save of the same step (e.g. before a resume): moved aside first
                replaced = os.path.join(run_dir, f"{STAGING_PREFIX}replaced-{name}")
                if os.path.isdir(replaced):
                    shutil.rmtree(replaced)
                os.replace(final_dir, replaced)
            os.replace(staged, final_dir)
            os.rmdir(staging_root)
            fsync_dir(run_dir)
            if replaced:
                shutil.rmtree(replaced)
            rotate_checkpoints(
                output_dir=run_dir, save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True,
            )
        self.accelerator.wait_for_everyone()
        if self._deferred_push:
            self._push_from_checkpoint(final_dir)

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """`Trainer.train`; `resume_from_checkpoint` may also be `"last"` (or `True`): the newest complete checkpoint
        of this run in `output_dir`, chosen as `find_last_complete_checkpoint` explains (logged)."""
        if resume_from_checkpoint is True or (isinstance(resume_from_checkpoint, str) and resume_from_checkpoint.lower() in ("true", "last")):
            resume_from_checkpoint = self.last_complete_checkpoint()
        elif isinstance(resume_from_checkpoint, str):
            problem = checkpoint_problem(resume_from_checkpoint) if os.path.isdir(resume_from_checkpoint) else "no such folder"
            if problem:
                raise ValueError(f"cannot resume from {resume_from_checkpoint}: {problem}")
        if resume_from_checkpoint:
            info = read_checkpoint_info(resume_from_checkpoint) or {}
            self.load_extra_checkpoint_state(info)
            if self.run_id is None:
                self.run_id = info.get("run_id")
        return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, ignore_keys_for_eval=ignore_keys_for_eval, **kwargs)

    def load_extra_checkpoint_state(self, info: dict) -> None:
        """Restore what `extra_checkpoint_state` saved (the `vgd_state.json` of the checkpoint resumed from)."""

    def last_complete_checkpoint(self) -> str:
        """The newest complete checkpoint of this run in `output_dir`; says which, and why newer folders were skipped."""
        path, skipped = find_last_complete_checkpoint(self.args.output_dir, self.run_id)
        for folder, reason in skipped:
            logger.info("Skipping %s: %s", folder, reason)
        if path is None:
            reasons = "; ".join(f"{os.path.basename(folder)}: {reason}" for folder, reason in skipped) or "there is no checkpoint-* folder"
            raise ValueError(f"no complete checkpoint of this run to resume from in {self.args.output_dir} ({reasons})")
        if self.run_id is None:  # a folder that names no run (no _run_vgd.json): the checkpoint's run is continued
            logger.warning(
                "Resuming from %s, the newest complete checkpoint in %s; the folder names no run, so this continues the "
                "checkpoint's run %s", path, self.args.output_dir, (read_checkpoint_info(path) or {}).get("run_id"),
            )
        else:
            logger.info("Resuming from %s, the newest complete checkpoint of this run", path)
        return path

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """`Trainer.save_model`, then every file gets the usual mode (safetensors writes the weights 0600)."""
        folder = output_dir or self.args.output_dir
        if self.args.should_save and _replacement_pending(folder):
            # the folder still holds an earlier run's results that this run replaces: the model is written beside
            # them (tmp-model/), then they are removed and the new files renamed into place
            staging = os.path.join(folder, STAGING_PREFIX + "model")
            if os.path.isdir(staging):
                shutil.rmtree(staging)
            super().save_model(staging, _internal_call=True)
            fix_file_modes(staging)
            fsync_tree(staging)
            _replace_earlier_results(folder, keep=(os.path.basename(staging),))
            for name in os.listdir(staging):
                target = os.path.join(folder, name)
                if os.path.isdir(target) and not os.path.islink(target):
                    shutil.rmtree(target)
                os.replace(os.path.join(staging, name), target)
            os.rmdir(staging)
            fsync_dir(folder)
            if self.args.push_to_hub and not _internal_call:
                self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)
            return
        super().save_model(output_dir, _internal_call=_internal_call)
        if self.args.should_save and os.path.isdir(folder):
            fix_file_modes(folder)

    # ------------------------------------------------------------------ after a failure

    def save_emergency_checkpoint(self) -> str | None:
        """After a failure: the newest trained state as a checkpoint in `output_dir`, or, if that folder cannot take
        it, in the first writable rescue folder (`rescue_dir`). Returns where, None if nowhere."""
        if self.state.global_step == 0:
            return None
        existing = os.path.join(self.args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        if os.path.isdir(existing) and checkpoint_problem(existing) is None and (read_checkpoint_info(existing) or {}).get("run_id") == self.run_id:
            return existing  # this step's checkpoint is already on disk
        try:
            self._save_checkpoint(self.model, trial=None)
            return existing
        except Exception as error:
            logger.error("Could not write a checkpoint into %s (%s)", self.args.output_dir, error)
        return self._save_into_rescue_dir(self._save_checkpoint_into)

    def save_model_or_rescue(self, output_dir: str | None = None) -> str:
        """`save_model(output_dir)`; when that fails, the model is saved into a rescue folder and the error names it."""
        output_dir = output_dir or self.args.output_dir
        try:
            self.save_model(output_dir)
            return output_dir
        except Exception as error:
            if self.args.world_size == 1:
                where = self._save_into_rescue_dir(self._save_checkpoint_into)
            else:  # only this process is here: the model alone, without the collective checkpoint steps
                where = self._save_into_rescue_dir(lambda folder: self._save(os.path.join(folder, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")))
            raise OSError(
                f"saving the trained model into {output_dir} failed ({error}); "
                + (f"the trained state (model, optimizer, trainer state) was saved into {where}" if where else "no rescue folder was writable either")
            ) from error

    def _save_checkpoint_into(self, folder: str) -> None:
        original = self.args.output_dir
        self.args.output_dir = folder
        try:
            self._save_checkpoint(self.model, trial=None)
        finally:
            self.args.output_dir = original

    def _save_into_rescue_dir(self, save) -> str | None:
        for folder in rescue_dir(self.args.output_dir, self.run_id):
            try:
                os.makedirs(folder, exist_ok=True)
                save(folder)
            except Exception as error:
                logger.error("Could not save into the rescue folder %s either (%s)", folder, error)
                continue
            return os.path.join(folder, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        return None
