"""SERIATIM_CONSOLE=off leaves no /console route; the console's settings refuse bad values
with a message naming the variable."""

from __future__ import annotations

import pytest

from actors.settings import Settings, SettingsError
from gateway import console


def test_the_console_is_mounted_unless_it_is_off() -> None:
    assert [route.path for route in console.routes(Settings())] == ["/console"]  # type: ignore[attr-defined]
    assert console.routes(Settings.from_env({"SERIATIM_CONSOLE": "off"})) == []


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SERIATIM_CONSOLE", "maybe"),
        ("SERIATIM_CONSOLE_SESSION_TTL", "1"),
        ("SERIATIM_CONSOLE_SECURE_COOKIE", "yes"),
        ("SERIATIM_TRACE_URL", "javascript:alert(1)"),
        ("SERIATIM_GRAFANA_URL", "ftp://example/"),
    ],
)
def test_a_bad_console_setting_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})
