"""Every command explains itself, and a bad flag gives a one-line error with the usage, exit code 2."""

from __future__ import annotations

import argparse

import pytest

from expeditor.cli import _parser, main  # pyright: ignore[reportPrivateUsage]


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = [prefix]
    for action in parser._actions:  # pyright: ignore[reportPrivateUsage]
        if isinstance(action, argparse._SubParsersAction):  # pyright: ignore[reportPrivateUsage]
            for name, sub in action.choices.items():  # pyright: ignore[reportUnknownVariableType]
                found += _commands(sub, (*prefix, name))  # pyright: ignore[reportUnknownArgumentType]
    return found


COMMANDS = _commands(_parser())


def test_every_command_is_listed() -> None:
    names = {" ".join(command) for command in COMMANDS}
    assert {"run-skill", "serve", "dispatch", "status", "demo", "report", "recipe run", "recipe list"} <= names


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: " ".join(command) or "expeditor")
def test_help_explains_the_command(command: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: expeditor")
    description = text.split("\n\n")[1]
    assert len(description.split()) >= 5, f"{command}: no description beyond the usage line:\n{text}"


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: " ".join(command) or "expeditor")
def test_a_bad_flag_gives_a_one_line_error_and_the_usage(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--no-such-flag"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: expeditor")
    errors = [line for line in err.splitlines() if line.startswith("expeditor") and "error:" in line]
    assert len(errors) == 1
    assert "--no-such-flag" in errors[0] or "required" in errors[0]
