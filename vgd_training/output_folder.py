"""The output folder of a run: locked for the whole run (`_run_vgd.lock`: PID and host of the run holding it),
claimed for one run (`_run_vgd.json`), refused when it holds another run's results, checked for room, released
(claim removed) by a run that fails before its first training step; and the closing lines that say what was
written where."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time

from .checkpointing import (
    RUN_INFO_NAME,
    check_output_dir_writable,
    read_checkpoint_info,
    new_run_id,
    read_run_info,
    remove_results,
    results_in_folder,
    write_json_atomic,
)

logger = logging.getLogger(__name__)

LOCK_NAME = "_run_vgd.lock"


class OutputFolderInUseError(RuntimeError):
    """Another live run holds the output folder's lock."""


class OutputFolderLock:
    """An exclusive `fcntl.flock` on `<folder>/_run_vgd.lock`, held from the folder check to the end of the run (the
    kernel drops it when the process dies, however it dies). The file names the holder (PID, host, start time), so a
    refused run says who holds the folder, and a lock file left by a killed run is reported when taken over."""

    def __init__(self, folder: str):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self.fd: int | None = None
        self.created_folder = False
        self.wrote_run_info = False  # this run wrote the folder's _run_vgd.json (a new claim)
        # an earlier run's results that this run replaces, removed only once it saves a model of its own
        # (`replace_earlier_results`), and the claim written then
        self.replace_later: list[str] = []
        self.claim: dict | None = None

    def acquire(self) -> "OutputFolderLock":
        self.created_folder = not os.path.isdir(self.folder)
        check_output_dir_writable(self.folder, needed_bytes=0)  # creates it; an error naming the folder if it cannot take a file
        while True:
            # held read-only (a folder with a file open for writing cannot be remounted read-only); written apart
            fd = os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                holder = _read_holder(fd)
                os.close(fd)
                if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise OutputFolderInUseError(
                    f"the output folder {self.folder} is in use by another run ({_describe(holder)}; lock file {self.path}). "
                    "Wait for that run to end, stop it, or choose another --output_dir."
                ) from None
            try:  # the file may have been removed by its previous holder between our open and our lock: retry
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        stale = _read_holder(fd)
        if stale:
            alive = stale.get("host") == socket.gethostname() and _pid_alive(stale.get("pid"))
            logger.warning(
                "The output folder %s was locked by an earlier run (%s) that ended without releasing it%s; taking it over.",
                self.folder, _describe(stale), "" if alive else " (it is no longer running: killed?)",
            )
        with open(self.path, "w", encoding="utf-8") as f:  # closing this other descriptor keeps the lock (flock)
            f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
            f.flush()
            os.fsync(f.fileno())
        self.fd = fd
        return self

    def release(self, failed_before_training: bool = False) -> None:
        """Unlock (and remove the lock file). After a failure before the first training step, a claim this run wrote
        into a folder holding nothing else of it is removed too, so that the corrected rerun is accepted."""
        if self.fd is None:
            return
        try:
            if failed_before_training and self.wrote_run_info and results_in_folder(self.folder) == [RUN_INFO_NAME]:
                os.remove(os.path.join(self.folder, RUN_INFO_NAME))
                logger.info("The run failed before its first training step: %s is released (its %s removed)", self.folder, RUN_INFO_NAME)
            os.remove(self.path)  # removed while still locked: a run that opened it meanwhile retries on the new file
            if failed_before_training and self.created_folder and not os.listdir(self.folder):
                os.rmdir(self.folder)
        except OSError as error:
            logger.warning("Could not release the output folder %s cleanly (%s)", self.folder, error)
        finally:
            os.close(self.fd)  # drops the lock
            self.fd = None


def _read_holder(fd: int) -> dict | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode("utf-8", "replace").strip()
        return json.loads(text) if text else None
    except (OSError, ValueError):
        return {"pid": "?", "host": "?"}


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError) as error:
        return isinstance(error, PermissionError)
    return True


def _describe(holder: dict | None) -> str:
    if not holder:
        return "holder unknown"
    return f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}" + (f", started {holder['started']}" if holder.get("started") else "")


# the locks this process holds, by folder (released by release_output_dirs at the end of run_vgd.main)
_HELD: dict[str, OutputFolderLock] = {}


def lock_output_dir(folder: str) -> OutputFolderLock:
    key = os.path.abspath(folder)
    if key not in _HELD:
        _HELD[key] = OutputFolderLock(folder).acquire()
    return _HELD[key]


def release_output_dirs(failed_before_training: bool = False) -> None:
    """Release every output folder this process locked (see `OutputFolderLock.release`)."""
    while _HELD:
        _, lock = _HELD.popitem()
        lock.release(failed_before_training=failed_before_training)


def prepare_output_dir(training_args, model_name_or_path: str | None, demo: bool, demo_dirs: tuple[str, ...] = (), argv: list[str] | None = None) -> str | None:
    """Claim the output folder for this run (main process) and return the run id.

    A folder that holds another run's results is refused, unless `--overwrite_output_dir` (its results are replaced),
    `--resume_from_checkpoint` (the run continues: same run id), a demo run replaces an earlier demo run in the demo's
    own folders (`demo_dirs`: outputs/demo, outputs/smoke), or the run only evaluates the model saved in that folder.
    Replaced results are not touched here: they stay until this run saves a model (`replace_earlier_results`), so a
    run that fails before (no network, a typo) leaves the earlier model and its claim as they were."""
    output_dir = training_args.output_dir
    lock = lock_output_dir(output_dir)  # held until the run ends: a second run into this folder is refused
    previous = read_run_info(output_dir)
    found = results_in_folder(output_dir)
    resume = training_args.resume_from_checkpoint if training_args.do_train else None
    if resume and str(resume).lower() not in ("true", "last"):
        # an explicit checkpoint: continuing this folder's run, or starting from another run's checkpoint, which
        # then meets the same check as a new run
        checkpoint_run = (read_checkpoint_info(resume) or {}).get("run_id")
        own = os.path.dirname(os.path.abspath(resume)) == os.path.abspath(output_dir) or (previous is not None and checkpoint_run == previous.get("run_id"))
        if found and not own:
            if not training_args.overwrite_output_dir:
                shown = ", ".join(found[:6]) + (f" and {len(found) - 6} more" if len(found) > 6 else "")
                raise FileExistsError(
                    f"--resume_from_checkpoint {resume} is a checkpoint of another run (run {checkpoint_run}), but the "
                    f"output folder {output_dir} holds the results of run {(previous or {}).get('run_id')} ({shown}). "
                    "Pass --overwrite_output_dir to replace them, or choose another --output_dir."
                )
            _replace_later(lock, found, "")
            previous = None
    if resume:
        return (previous or {}).get("run_id")  # None: the run of the checkpoint resumed from
    evaluates_own_model = not training_args.do_train and model_name_or_path and os.path.abspath(model_name_or_path) == os.path.abspath(output_dir)
    if found and not evaluates_own_model:
        # the demo's own folders (no --output_dir given) take a new demo run's results
        replaceable_demo = demo and (previous or {}).get("demo") and os.path.normpath(output_dir) in demo_dirs
        if not (training_args.overwrite_output_dir or replaceable_demo):
            shown = ", ".join(found[:6]) + (f" and {len(found) - 6} more" if len(found) > 6 else "")
            raise FileExistsError(
                f"the output folder {output_dir} holds the results of another run ({shown}). Pass --overwrite_output_dir "
                "to replace them, --resume_from_checkpoint last to continue that run from its newest checkpoint, or "
                "choose another --output_dir."
            )
        _replace_later(lock, found, "demo " if replaceable_demo else "")
    run_id = new_run_id()
    check_output_dir_writable(output_dir, needed_bytes=0)  # room for the model is checked once it is built
    claim = {"run_id": run_id, "demo": demo, "command": sys.argv[:1] + list(argv or [])}
    if lock.replace_later:
        lock.claim = claim  # the earlier run's claim stays with its results until they are replaced
    else:
        write_json_atomic(os.path.join(output_dir, RUN_INFO_NAME), claim)
        lock.wrote_run_info = True
    return run_id


def _replace_later(lock: OutputFolderLock, found: list[str], kind: str) -> None:
    lock.replace_later = list(found)
    logger.info(
        "The results of the earlier %srun in %s (%s) stay until this run has a model to put in their place",
        kind, lock.folder, ", ".join(found),
    )


def replacement_pending(folder: str) -> bool:
    """True while `folder` (locked by this process) still holds an earlier run's results that this run replaces."""
    lock = _HELD.get(os.path.abspath(folder))
    return lock is not None and bool(lock.replace_later or lock.claim)


def replace_earlier_results(folder: str, keep: tuple[str, ...] = ()) -> None:
    """Remove the earlier run's results from `folder` (except the names in `keep`: what this run has just staged
    there) and write this run's claim. Called when this run has a model to put in their place: its first checkpoint
    or its final model, written beside them first. Does nothing when nothing is pending (or on another process)."""
    lock = _HELD.get(os.path.abspath(folder))
    if lock is None or not (lock.replace_later or lock.claim):
        return
    names, lock.replace_later = [name for name in lock.replace_later if name not in keep], []
    if names:
        logger.info("Replacing the results of the earlier run in %s: %s", folder, ", ".join(names))
        remove_results(folder, names)
    if lock.claim is not None:
        write_json_atomic(os.path.join(folder, RUN_INFO_NAME), lock.claim)
        lock.wrote_run_info, lock.claim = True, None


def bytes_needed_on_disk(model, training_args) -> int:
    """About what a run writes: the final model, and per kept checkpoint the model plus AdamW's two moments."""
    parameter_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    checkpoints = 0
    if training_args.do_train and training_args.save_strategy != "no":
        checkpoints = training_args.save_total_limit or 2
    elif training_args.do_train:
        checkpoints = 1  # the emergency checkpoint after a failure
    return parameter_bytes * (1 + 3 * checkpoints) + 32 * 2**20


def report_outputs(written: dict) -> None:
    """The closing lines: where the model, metrics and predictions were written."""
    labels = {"model": "model (load with from_pretrained)", "predictions": "predictions (official result format)"}
    lines = [f"  {labels.get(key, key):<36} {os.path.abspath(path)}" for key, path in written.items()]
    if lines:
        print("Written:\n" + "\n".join(lines))
