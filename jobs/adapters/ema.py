"""An exponential moving average of a transformers/TRL Trainer's weights (align.ema.decay, and train.ema.decay
of the hf pretraining: jobs/adapters/trainer.py; docs/ema.md): torch's own
`AveragedModel` with `get_ema_multi_avg_fn(decay)` (ema = decay * ema + (1 - decay) * weights, after
every optimizer step; the first step copies the weights), buffers averaged too.

Saved beside each checkpoint as `checkpoint-N/ema/` (a loadable Hugging Face folder, its tokenizer,
and `ema.json`: decay and the number of steps averaged), before the checkpoint is marked complete; a
resumed run loads the averaged weights and that count back from the checkpoint it resumes from, so
the average goes on as if never stopped. The final average is written to `out/<point>/0/ema/`. An
evaluation scores each checkpoint's `ema/` beside its raw weights (jobs/kinds/evaluate.py).
torch and transformers are imported inside the callback's factory (the node side only)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

EMA_DIR = "ema"
EMA_STATE = "ema.json"


def ema_callback(decay: float, tokenizer, resume_dir: Optional[Path], log):
    """A TrainerCallback keeping the average of the trained model (kwargs['model'], unwrapped); `log`
    prints one line. Add it before the callback that marks checkpoints complete."""
    import torch
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    from transformers import TrainerCallback

    class EmaCallback(TrainerCallback):
        def __init__(self):
            self.ema: Optional[AveragedModel] = None

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
            saved = resume_dir / EMA_DIR if resume_dir else None
            if saved and (saved / EMA_STATE).is_file():
                from safetensors.torch import load_file

                weights = load_file(str(saved / "model.safetensors"))
                missing, _ = self.ema.module.load_state_dict(weights, strict=False)
                n = int(json.loads((saved / EMA_STATE).read_text())["steps"])
                self.ema.n_averaged.fill_(n)
                log(f"EMA: {n} step(s) averaged, loaded from {saved}"
                    + (f" ({len(missing)} tied tensor(s) not in the file)" if missing else ""))
            elif resume_dir:
                log(f"EMA: {resume_dir.name} has no {EMA_DIR}/: the average starts again here")
            return control

        def on_step_end(self, args, state, control, model=None, **kwargs):
            with torch.no_grad():
                self.ema.update_parameters(model)
            return control

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                save(self.ema, tokenizer, Path(args.output_dir) / f"checkpoint-{state.global_step}" / EMA_DIR, decay)
            return control

    return EmaCallback()


def save(ema, tokenizer, folder: Path, decay: float) -> None:
    """The averaged model as a Hugging Face folder, its tokenizer and ema.json ({decay, steps})."""
    folder.mkdir(parents=True, exist_ok=True)
    ema.module.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    (folder / EMA_STATE).write_text(json.dumps({"decay": decay, "steps": int(ema.n_averaged.item())}) + "\n")
