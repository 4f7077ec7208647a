"""templates/ and jobs.runtime.templating: strict rendering, the filters, and that a task finds the templates
in the code snapshot exactly as in the repository."""
import json
import subprocess
import sys

import jinja2
import pytest

from jobs.runtime import templating
from launcher.plan import snapshot
from launcher.slurm.scrontab import parse_blocks, render_block


def test_a_missing_variable_is_an_error_not_an_empty_string():
    with pytest.raises(jinja2.UndefinedError):
        templating.render("scrontab_entry.j2", name="a", cron="* * * * *", meta={}, options=[], argv=["x"])


def test_html_is_escaped_and_markdown_is_not(tmp_path):
    from jobs.adapters import hub_card

    card = hub_card.render(tmp_path, "publish", 0, {"repo_id": "org/m", "repo_type": "model"}, "/a<b>&c")
    assert "from `/a<b>&c`" in card  # markdown: as written
    page = templating.render("report.html.j2", title="<i>t</i>", css="", n_rows=0, table=[], figures=[],
                             fmt=str, n_runs=0, trusted=0, variants=[], min_checkpoints=3, min_monotonicity="0.5",
                             min_separation="2", min_above_random="2")
    assert "<title>&lt;i&gt;t&lt;/i&gt;</title>" in page


def test_scrontab_entry_quotes_for_the_shell_and_parses_back():
    argv = ["/py x", "-m", "launcher.run.schedule", "fire", "n", "--", "run", "pipeline.x=a b", "it's"]
    lines = render_block("n", "0 2 * * *", {"dir": "/d"}, ["--time=00:30:00"], argv, "/etc/slurm conf")
    assert lines[-2].startswith("0 2 * * * SLURM_CONF='/etc/slurm conf' exec '/py x' -m launcher.run.schedule")
    _, blocks = parse_blocks("\n".join(lines))
    assert blocks["n"]["meta"] == {"dir": "/d"} and blocks["n"]["cron"] == "0 2 * * *"


def test_a_task_finds_the_templates_in_the_snapshot(tmp_path):
    snapshot.take(tmp_path, [])
    code = tmp_path / "code"
    assert (code / "templates" / "chat_template.jinja").read_text() == templating.text("chat_template.jinja")
    # a task imports jobs from the snapshot and reads its templates there
    p = subprocess.run([sys.executable, "-c", "from jobs.runtime import templating; print(templating.TEMPLATES_DIR)"],
                       cwd=tmp_path, env={"PYTHONPATH": str(code)}, capture_output=True, text=True, check=True)
    assert p.stdout.strip() == str(code / "templates")


def test_the_fixed_config_defaults_are_plain_yaml():
    acc = templating.yaml_defaults("accelerate_defaults.yaml")
    assert list(acc)[:2] == ["compute_environment", "debug"] and acc["rdzv_backend"] == "static"
    nano = templating.yaml_defaults("nanotron_defaults.yaml")
    assert nano["checkpoints"]["save_final_state"] is True
    json.dumps(nano)  # plain data, nothing YAML-specific
