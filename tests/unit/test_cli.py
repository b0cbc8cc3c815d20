"""The `closedloop` console script dispatches to the module that owns each command."""

from __future__ import annotations

import importlib
import inspect

import pytest

from services import cli


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_module_has_a_main_taking_argv(name: str) -> None:
    module = importlib.import_module(cli.COMMANDS[name][0])
    assert list(inspect.signature(module.main).parameters) == ["argv"]


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["no-such-command"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'no-such-command'" in err
    assert "crm-backfill" in err


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert f"  {name}" in out


def test_no_arguments_prints_usage_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage: closedloop" in capsys.readouterr().out
