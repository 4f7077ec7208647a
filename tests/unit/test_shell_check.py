"""Commands checked with `bash -n` on the login node (launcher/plan/shell.py): many commands in chunks,
the chunks at once, and the first command that does not parse named."""
import pytest

from launcher.plan import shell

pytestmark = pytest.mark.unit


def test_the_first_bad_command_of_many_chunks_is_named(monkeypatch):
    monkeypatch.setattr(shell, "CHUNK", 100)
    commands = [f"echo point {i} && true" for i in range(450)]
    assert shell.first_syntax_error(commands) == ""
    commands[321] = "echo 'unterminated"
    commands[402] = "if true; then echo"
    msg = shell.first_syntax_error(commands)
    assert "unexpected EOF" in msg or "matching" in msg, msg
    assert shell.first_syntax_error(commands[350:]) == shell.bash_syntax_error("if true; then echo")


def test_a_message_names_bash_not_a_temporary_file():
    msg = shell.bash_syntax_error("echo (")
    assert msg.startswith("bash: line 1: syntax error") and "launcher-bash-n" not in msg, msg
