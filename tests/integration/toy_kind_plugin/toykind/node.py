"""The toy kind `greet`, node side: a runner module (jobs/kinds/base.py Runner)."""
reruns_when_complete = False
resolves_hub_references = True


def run(task):
    g = task.payload["greet"]
    lines = [f"{g['text']} from task {task.index} of point {task.point}"] * g["times"]
    (task.ctx.output_dir / "greeting.txt").write_text("\n".join(lines) + "\n")
    return {"lines": len(lines)}
