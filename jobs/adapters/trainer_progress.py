"""The live progress file (jobs/runtime/progress.py) of a transformers Trainer: one TrainerCallback
for the hf pretraining backend (jobs/adapters/trainer.py) and TRL's trainers (jobs/adapters/trl.py),
which are Trainers. Only the world's process zero writes.

- step and total_steps: state.global_step, state.max_steps (global optimizer steps; a resumed run
  starts at its checkpoint's step, recorded as first_step for the ETA);
- tokens: `tokens_per_step` x step when the stage knows it (the hf backend: micro_batch x grad_accum
  x seq_len, one process), else state.num_input_tokens_seen, which the Trainer counts from each batch's
  input_ids shape gathered over all processes (TRL: include_num_input_tokens_seen=True);
- tokens_per_s over the interval since the last write; loss from on_log;
- last_checkpoint on_save: put this callback after the one that marks checkpoints complete, so the
  path it names is a checkpoint a requeue would resume from. The last step and every checkpoint are
  written at once; other steps at most every $LAUNCHER_PROGRESS_INTERVAL_S seconds.

transformers is imported inside progress_callback(): this module is imported on the compute node, in
the stage's environment."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from jobs.runtime.progress import StepProgress


def progress_callback(path: Path, tokens_per_step: Optional[int] = None, min_interval_s: Optional[float] = None):
    """A TrainerCallback writing the task's progress file at `path` (jobs.layout.progress_path)."""
    from transformers import TrainerCallback

    def tokens(state) -> Optional[int]:
        if tokens_per_step:
            return int(state.global_step) * int(tokens_per_step)
        return int(state.num_input_tokens_seen) if getattr(state, "num_input_tokens_seen", 0) else None

    class LauncherProgressCallback(TrainerCallback):
        progress: Optional[StepProgress] = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.progress = StepProgress(path, min_interval_s=min_interval_s)
                self.progress.start(state.global_step, tokens(state), total_steps=state.max_steps or None)
            return control

        def on_step_end(self, args, state, control, **kwargs):
            if self.progress:
                self.progress.step(state.global_step, tokens(state))
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.progress and logs and "loss" in logs:
                self.progress.loss(logs["loss"])
            return control

        def on_save(self, args, state, control, **kwargs):
            if self.progress:
                ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                self.progress.writer.update(step=state.global_step, tokens=tokens(state))
                self.progress.checkpoint(str(ckpt), step=state.global_step)
            return control

        def on_train_end(self, args, state, control, **kwargs):
            if self.progress:
                self.progress.step(state.global_step, tokens(state), force=True)
            return control

    return LauncherProgressCallback()
