"""The output folder of a run: claimed for one run (`_run_vgd.json`), refused when it holds another run's results,
checked for room; and the closing lines that say what was written where."""

from __future__ import annotations

import logging
import os
import sys

from .checkpointing import (
    RUN_INFO_NAME,
    check_output_dir_writable,
    new_run_id,
    read_run_info,
    remove_results,
    results_in_folder,
    write_json_atomic,
)

logger = logging.getLogger(__name__)


def prepare_output_dir(training_args, model_name_or_path: str | None, demo: bool, demo_dirs: tuple[str, ...] = (), argv: list[str] | None = None) -> str | None:
    """Claim the output folder for this run (main process) and return the run id.

    A folder that holds another run's results is refused, unless `--overwrite_output_dir` (its results are deleted),
    `--resume_from_checkpoint` (the run continues: same run id), a demo run replaces an earlier demo run in the demo's
    own folders (`demo_dirs`: outputs/demo, outputs/smoke), or the run only evaluates the model saved in that folder."""
    output_dir = training_args.output_dir
    previous = read_run_info(output_dir)
    if training_args.do_train and training_args.resume_from_checkpoint:
        return (previous or {}).get("run_id")  # None: the run of the checkpoint resumed from
    found = results_in_folder(output_dir)
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
        logger.info("Replacing the results of the earlier %srun in %s: %s", "demo " if replaceable_demo else "", output_dir, ", ".join(found))
        remove_results(output_dir, found)
    run_id = new_run_id()
    check_output_dir_writable(output_dir, needed_bytes=0)  # room for the model is checked once it is built
    write_json_atomic(
        os.path.join(output_dir, RUN_INFO_NAME),
        {"run_id": run_id, "demo": demo, "command": sys.argv[:1] + list(argv or [])},
    )
    return run_id


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
