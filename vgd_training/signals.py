"""Stopping a run on a signal without losing it: SIGTERM (what SLURM, Kubernetes and `timeout` send) and SIGUSR1
(what SLURM sends ahead of a job's deadline with `--signal=USR1@SECONDS`).

`StopOnSignalCallback.install()` replaces the handlers of those signals: the handler only raises a flag. At the end
of the optimizer step under way, the callback asks the Trainer to save a checkpoint (`control.should_save`, through
`VGDTrainer`'s atomic `_save_checkpoint`) and to stop (`control.should_training_stop`). In a distributed run the
flag is combined over every process at each step end (one tiny all-reduce), so every process saves and stops at
the same step even when the signal reached only some of them. A second signal of the same kind while the
checkpoint is being written ends the process at once (the signal's default action).
"""

from __future__ import annotations

import logging
import signal
import sys

import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name))


class StopOnSignalCallback(TrainerCallback):
    """Save a resumable checkpoint and stop training at the end of the current optimizer step once one of
    `signals` arrives (see the module docstring). `received` is the signal number (None until one arrives)."""

    def __init__(self, signals=STOP_SIGNALS):
        self.signals = tuple(signals)
        self.received: int | None = None
        self.stopped_at_step: int | None = None
        self._previous = {}

    # ------------------------------------------------------------------ handlers

    def install(self) -> "StopOnSignalCallback":
        """Install the handlers (main thread only; elsewhere nothing is installed and a warning says so)."""
        for signum in self.signals:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread of the interpreter
                logger.warning("cannot handle %s outside the main thread: it will end the run without a checkpoint", signal.Signals(signum).name)
        return self

    def uninstall(self) -> None:
        """Restore the handlers that were there before `install`."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.received == signum:  # the second one: no more waiting
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        self.received = signum
        # logging from a signal handler may deadlock on the handler's lock; a plain write to stderr does not
        import sys

        sys.stderr.write(
            f"\nreceived {signal.Signals(signum).name}: finishing the current optimizer step, then saving a checkpoint "
            f"and stopping (send {signal.Signals(signum).name} again to stop at once, without a checkpoint)\n"
        )
        sys.stderr.flush()

    @property
    def signal_name(self) -> str | None:
        return signal.Signals(self.received).name if self.received is not None else None

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by the signal (143 for SIGTERM, 138 for SIGUSR1)."""
        return 128 + int(self.received or 0)

    # ------------------------------------------------------------------ Trainer hooks

    def _flag_everywhere(self, args) -> bool:
        flag = self.received is not None
        if args.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            tensor = torch.tensor([self.received or 0], device=args.device, dtype=torch.int64)
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
            if tensor.item() and self.received is None:
                self.received = int(tensor.item())  # another process got it: this one stops with it
            flag = bool(tensor.item())
        return flag

    def on_step_end(self, args, state, control, **kwargs):
        if self._flag_everywhere(args):
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at_step = state.global_step
        return control


def stop_after_signal(trainer, stopper: StopOnSignalCallback) -> int:
    """After training stopped on SIGTERM / SIGUSR1: make sure the last step is saved, say how to resume, and return
    the exit code (128 + the signal number, as for a process the signal ended)."""
    step = trainer.state.global_step
    where = None
    if step > 0 and (stopper.stopped_at_step == step or trainer.args.world_size == 1):
        where = trainer.save_emergency_checkpoint()  # the checkpoint of that step when the callback saved it already
    if where:
        note = (
            f"Stopped by {stopper.signal_name} after step {step}: the trained state of that step is saved in {where}. "
            f"Continue with the same command and --resume_from_checkpoint last (or --resume_from_checkpoint {where})."
        )
    else:
        note = f"Stopped by {stopper.signal_name} after step {step}: nothing was trained yet, so no checkpoint was saved."
    if trainer.is_world_process_zero():
        logger.error(note)
        sys.stdout.flush()
    return stopper.exit_code
