"""The `seriatim` command: argument and setting errors exit 2 with a clear message."""

from __future__ import annotations

import os

import pytest

from seriatim.cli import main


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SERIATIM_* variable of the surrounding shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("SERIATIM_"):
            monkeypatch.delenv(name)


def usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["up", "--workers", "0"], "argument --workers: must be between 1 and 64"),
        (["up", "--workers", "65"], "argument --workers: must be between 1 and 64"),
        (["up", "--workers", "abc"], "argument --workers: 'abc' is not a whole number"),
        (["gateway", "--port", "70000"], "argument --port: must be between 0 and 65535"),
        (["gateway", "--port", "http"], "argument --port: 'http' is not a whole number"),
        (["client", "create"], "the following arguments are required: --name"),
        (["client", "create", "--name", ""], "argument --name: must be 1-200 characters"),
        (["client", "create", "--name", "   "], "argument --name: must be 1-200 characters"),
        (["client", "create", "--name", "x" * 201], "argument --name: must be 1-200 characters"),
    ],
)
def test_bad_argument_exits_2_with_a_clear_message(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    err = usage_error(capsys, argv)

    assert message in err
    assert err.startswith("usage: seriatim")


def test_missing_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert "the following arguments are required: COMMAND" in usage_error(capsys, [])


def test_unknown_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert "invalid choice: 'launch'" in usage_error(capsys, ["launch"])


def test_client_without_an_action_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert "the following arguments are required: ACTION" in usage_error(capsys, ["client"])


@pytest.mark.parametrize("argv", [["migrate"], ["up"], ["gateway"], ["worker"]])
def test_bad_setting_returns_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    monkeypatch.setenv("SERIATIM_HTTP_PORT", "abc")

    code = main(argv)

    err = capsys.readouterr().err
    assert code == 2
    assert err == "seriatim: SERIATIM_HTTP_PORT must be a number, not 'abc'\n"
    assert "Traceback" not in err


def test_unparseable_database_url_returns_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SERIATIM_DATABASE_URL", "postgresql://[::1/seriatim")

    code = main(["migrate"])

    assert code == 2
    assert "SERIATIM_DATABASE_URL" in capsys.readouterr().err
