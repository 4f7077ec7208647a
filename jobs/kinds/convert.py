"""kind=convert: every complete nanotron checkpoint of the parent pretrain stage (this sweep point)
→ a Hugging Face model folder, with nanotron's own examples/llama/convert_nanotron_to_hf.py (run
under torchrun with one process: it builds the model on CUDA). Each step is converted once: into a
temporary folder, renamed into ckpt/<task>/<step>/ with a marker; a requeue or rerun skips it."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Dict

from jobs import layout
from jobs.adapters.nanotron import complete_steps

MARKER = "launcher-complete.json"
reruns_when_complete = False
resolves_hub_references = True


def run(task) -> Dict[str, Any]:
    from jobs.adapters.torchrun import launch

    parent = task.spec["parents"][0]
    train = task.spec["parent_train"]
    run_dir, _, point = layout.located(task.spec, parent, task.point)  # shared or cached; one task per point
    checkpoints = layout.checkpoint_dir(run_dir, parent, point)
    tokenizer = layout.nanotron_dir(run_dir, parent, point) / "tokenizer"
    home = os.environ.get("NANOTRON_HOME", "")
    if not (Path(home) / "examples" / "llama" / "convert_nanotron_to_hf.py").is_file():
        raise FileNotFoundError(f"NANOTRON_HOME={home!r} has no examples/llama/convert_nanotron_to_hf.py (set it in the "
                                f"nanotron environment: cluster.environments.<name>.env.NANOTRON_HOME)")
    config_cls = "Qwen2Config" if train["model"]["num_experts"] else "LlamaConfig"
    converted = {}
    for step in complete_steps(checkpoints):
        dest = task.ctx.checkpoint_dir / str(step)
        if not (dest / MARKER).exists():
            tmp = dest.with_name(f".{step}.partial")
            shutil.rmtree(tmp, ignore_errors=True)
            task.log(f"converting nanotron step {step} -> {dest}")
            launch(task, ["-m", "examples.llama.convert_nanotron_to_hf", f"--checkpoint_path={checkpoints / str(step)}",
                          f"--save_path={tmp}", f"--tokenizer_name={tokenizer}", f"--config_cls={config_cls}"],
                   nproc_per_node=1, port_base=task.spec["rdzv_port_base"],
                   extra_env={"PYTHONPATH": home + os.pathsep + os.environ.get("PYTHONPATH", "")})
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(tmp, dest)
            layout.atomic_write_json(dest / MARKER, {"step": step, "source": str(checkpoints / str(step))})
        converted[step] = str(dest)
    if not converted:
        raise RuntimeError(f"no complete nanotron checkpoint in {checkpoints}")
    return {"converted": converted, "latest": converted[max(converted)]}
