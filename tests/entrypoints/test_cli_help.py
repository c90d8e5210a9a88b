"""`continuum <cmd> --help`: every option with a default shows it; every option has help text."""
import argparse
import contextlib
import io
import re

import pytest

from continuum.cli import build_parser, main

def _subparsers() -> dict[str, argparse.ArgumentParser]:
    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _help_entries(cmd: str) -> dict[str, str]:
    """The real ``continuum CMD --help`` output, as {first flag (or positional name): its
    whole entry with line wrapping undone}. An entry starts on a line indented by two spaces;
    its continuation lines are indented further."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    entries: dict[str, str] = {}
    key = None
    for line in out.getvalue().splitlines():
        if re.match(r"^  \S", line):
            key = line.split()[0].rstrip(",")
            entries[key] = line.strip()
        elif key is not None and re.match(r"^   +\S", line):
            entries[key] += " " + line.strip()
        else:
            key = None
    return entries


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


def _name(a: argparse.Action) -> str:
    return a.option_strings[0] if a.option_strings else (a.metavar or a.dest)


@pytest.mark.parametrize("cmd", sorted(_subparsers()))
def test_help_shows_every_default(cmd):
    entries = _help_entries(cmd)
    checked = 0
    for a in _options(_subparsers()[cmd]):
        if a.default is None or a.default is argparse.SUPPRESS:
            continue
        if not a.option_strings and a.nargs not in ("?", "*"):
            continue
        entry = entries[_name(a)]
        assert f"(default: {a.default})" in entry, f"continuum {cmd} --help: {entry!r} shows no default"
        checked += 1
    assert checked > 0


@pytest.mark.parametrize("cmd", sorted(_subparsers()))
def test_every_option_has_help_text(cmd):
    missing = [a.option_strings or [a.dest] for a in _options(_subparsers()[cmd])
               if not (a.help or "").strip()]
    assert not missing, f"continuum {cmd}: options without help text: {missing}"


def test_serve_help_has_chat_template_and_no_doubled_defaults():
    entries = _help_entries("serve")
    assert "a Jinja file or the Jinja text itself" in entries["--chat-template"]
    # an option without a default says in words what happens without it: no "(default: None)"
    assert not [e for e in entries.values() if "(default: None)" in e]
    assert entries["--host"].endswith("(default: 127.0.0.1)")
