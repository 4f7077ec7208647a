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


def test_a_command_that_parses_alone_passes_in_a_chunk_too():
    """The chunk wraps each command in a function: a comment-only command (an empty function body) and
    a here-document without its end line (it reads past the function's `}`) parse alone, as the task
    runs them, so they are no syntax error."""
    for command in ("# nothing to do here", "", "cat <<EOF\nhello"):
        assert shell.bash_syntax_error(command) == ""
        assert shell.first_syntax_error(["echo before", command, "echo after"]) == "", command


def test_commands_left_inside_a_quote_do_not_close_each_others_quotes():
    """A swept value with an apostrophe in a single-quoted command (`echo '${prompt}'`): each point's
    command is unterminated alone, but two of them in one chunk would pair their quotes and parse."""
    commands = ["echo 'don't stop'", "echo ok", "echo 'won't go'"]
    assert shell.bash_syntax_error(commands[0])
    assert shell.first_syntax_error(commands) == shell.bash_syntax_error(commands[0])
    assert shell.first_syntax_error(['echo "a', 'echo "b']) == shell.bash_syntax_error('echo "a')
    assert shell.first_syntax_error([f"echo \"it's {i}\" 'ok' # don't" for i in range(50)]) == ""
