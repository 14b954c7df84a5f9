"""`VGDTrainingArguments`: `TrainingArguments` with the paper's defaults and VGD-GPT2's own training settings."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from transformers import TrainingArguments

# transformers' samplers: the choices of its own `train_sampling_strategy` field, which VGDTrainingArguments redefines
# (another default) and whose choices it checks in __post_init__
TRAIN_SAMPLING_STRATEGIES = tuple(next(f for f in fields(TrainingArguments) if f.name == "train_sampling_strategy").metadata["choices"])


@dataclass
class VGDTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the paper's defaults (Adam lr 5e-5, inverse-square-root schedule with warm-up,
    batch 16, best checkpoint by CIDEr) and the VGD-GPT2 loss weights and decoding settings."""

    _argument_group_name = "Training: VGD-GPT2's loss weights and decoding, then transformers' TrainingArguments"

    response_loss_weight: float = field(default=1.5, metadata={"help": "Weight of the response-generation loss (paper: 1.5)."})
    mlm_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the masked language modelling loss."})
    mvm_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the masked visual modelling loss."})
    mvt_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the video-text matching loss."})
    generation_num_beams: int = field(default=5, metadata={"help": "Beam size when decoding responses for evaluation / prediction."})
    generation_max_new_tokens: int = field(default=20, metadata={"help": "Longest generated response, in tokens."})
    generation_min_new_tokens: int = field(default=1, metadata={"help": "Shortest generated response, in tokens."})
    generation_length_penalty: float = field(default=1.0, metadata={"help": "Beam-search length penalty."})
    response_context: str = field(
        default="masked",
        metadata={
            "help": "Context of the response loss: 'clean' (an unmasked copy of every matching pair, in the same forward "
            "pass as the masked batch of MLM / MVM / MVT; as at decoding time) or 'masked' (the MLM / MVM-masked input)."
        },
    )
    eval_max_generation_examples: int | None = field(
        default=None, metadata={"help": "Decode only the first N evaluation turns (the full AVSD validation split has 35k)."}
    )

    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate of AdamW (paper: 5e-5)."})
    lr_scheduler_type: str = field(default="inverse_sqrt", metadata={"help": "Learning-rate schedule (paper: Noam, i.e. inverse_sqrt with warm-up)."})
    warmup_steps: float = field(default=0.05, metadata={"help": "Warm-up steps (an int) or fraction of the run (a float < 1)."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Batch size per device for training (paper: 16)."})
    total_train_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Global batch per optimizer step (paper: 16), whatever the number of processes: run_vgd.py then "
            "derives the per-device batch (at most --per_device_train_batch_size) and the gradient accumulation "
            "from the world size, and logs them."
        },
    )
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Batch size per device for evaluation and decoding."})
    metric_for_best_model: str | None = field(default="CIDEr", metadata={"help": "Metric that picks the best checkpoint."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept False: the datasets hand processor outputs already."})
    train_sampling_strategy: str = field(
        default="group_by_length",
        metadata={"help": "group_by_length batches sequences of similar length (less padding); random draws every batch at random "
                  "(the video demo's setting); sequential keeps the data's order; batch_rebalance: the Trainer's (data-parallel only)."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace the results of an earlier run in --output_dir (its model, metrics, predictions and "
                  "checkpoints are deleted first). Without it, run_vgd.py refuses a folder holding another run's results."},
    )
    max_nonfinite_grad_skips: int = field(
        default=10,
        metadata={"help": "Optimizer steps in a row whose gradient is not finite that are skipped (the update dropped, "
                  "a warning each, as fp16's GradScaler does) before the run stops with TrainingDivergedError; 0 stops "
                  "at the first; -1 turns the check off (no host sync per step)."},
    )
    cpu_threads: int | None = field(
        default=None,
        metadata={"help": "torch intra-op threads on the CPU (run_vgd.py). Default: $OMP_NUM_THREADS when set, else torch's "
                  "default (one per core); the demo uses 1 (fast for its small model, robust on a busy machine, the same "
                  "numbers on every machine)."},
    )

    def __post_init__(self):
        # values the Trainer would take without a word (max_steps 0 trains one step) or fail on without naming the flag
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"--max_steps must be a positive number of optimizer steps, or -1 to train for --num_train_epochs; got {self.max_steps}")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "total_train_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be at least 1, got {value}")
        if self.train_sampling_strategy not in TRAIN_SAMPLING_STRATEGIES:  # else the Trainer draws batches at random
            choices = ", ".join(TRAIN_SAMPLING_STRATEGIES[:-1]) + " or " + TRAIN_SAMPLING_STRATEGIES[-1]
            raise ValueError(f"--train_sampling_strategy must be {choices}, got {self.train_sampling_strategy!r}")
        super().__post_init__()
