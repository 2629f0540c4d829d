"""What may be printed: untrusted text with its control characters escaped."""

from llm_imagen4.terminal import command, printable


def test_printable_escapes_what_a_terminal_acts_on():
    assert (
        printable("a\x1b]0;title\x07b\u202ec\x85d\ne\u2028")
        == "a\\x1b]0;title\\x07b\\u202ec\\x85d\\ne\\u2028"
    )
    assert printable("line\nnext\r", newlines=True) == "line\nnext\\r"
    assert printable("caf\u00e9 \U0001f600 \u200d") == "caf\u00e9 \U0001f600 \u200d"
    assert printable(42) == "42"


def test_command_quotes_and_escapes():
    assert command("llm", "imagen4", "a b", "it's\x1b") == (
        "llm imagen4 'a b' 'it'\"'\"'s\\x1b'"
    )
