"""Settings: the public defaults, validation naming the variable, and queue names."""

from __future__ import annotations

import pytest

from actors.settings import Settings, SettingsError


def test_defaults_match_the_contract() -> None:
    settings = Settings.from_env({})

    assert settings.database_url == "postgresql://postgres@127.0.0.1:5432/seriatim"
    assert settings.amqp_url == "amqp://guest:guest@127.0.0.1:5672/%2F"
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8000)
    assert settings.namespace == "seriatim"
    assert settings.max_attempts == 5
    assert settings.idle_timeout == 300
    assert settings.token_ttl == 3600
    assert (settings.jwt_issuer, settings.jwt_audience) == ("seriatim", "seriatim")
    assert settings.queue_type == "classic"
    assert settings.handlers == ()
    assert settings.middleware == ()
    assert settings.demo
    assert (settings.max_batch, settings.max_batch_bytes) == (1000, 4 * 1024 * 1024)


def test_variables_outside_the_seriatim_prefix_are_ignored() -> None:
    assert Settings.from_env({"HTTP_PORT": "abc", "PORT": "1"}) == Settings()


def test_values_are_read_and_converted() -> None:
    settings = Settings.from_env(
        {
            "SERIATIM_HTTP_PORT": " 9000 ",
            "SERIATIM_MAX_ATTEMPTS": "3",
            "SERIATIM_IDLE_TIMEOUT": "1.5",
            "SERIATIM_NAMESPACE": "test-1_a",
            "SERIATIM_QUEUE_TYPE": "quorum",
        }
    )

    assert settings.http_port == 9000
    assert settings.max_attempts == 3
    assert settings.idle_timeout == 1.5
    assert settings.namespace == "test-1_a"
    assert settings.queue_type == "quorum"


def test_handlers_are_split_on_commas_with_blanks_dropped() -> None:
    settings = Settings.from_env({"SERIATIM_HANDLERS": " app.one, ,app.two,,  app.three , "})

    assert settings.handlers == ("app.one", "app.two", "app.three")


def test_middleware_are_split_on_commas_like_handlers() -> None:
    settings = Settings.from_env(
        {"SERIATIM_MIDDLEWARE": "app.mw.Counting, dramatiq.middleware.CurrentMessage"}
    )

    assert settings.middleware == ("app.mw.Counting", "dramatiq.middleware.CurrentMessage")


def test_demo_handlers_can_be_turned_off() -> None:
    assert not Settings.from_env({"SERIATIM_DEMO_HANDLERS": "off"}).demo
    assert Settings.from_env({"SERIATIM_DEMO_HANDLERS": "on"}).demo


@pytest.mark.parametrize("value", ["yes", "OFF", "0", "false"])
def test_demo_handlers_are_on_or_off_and_nothing_else(value: str) -> None:
    with pytest.raises(SettingsError, match=r"SERIATIM_DEMO_HANDLERS must be on or off"):
        Settings.from_env({"SERIATIM_DEMO_HANDLERS": value})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SERIATIM_HTTP_PORT", "abc"),
        ("SERIATIM_HTTP_PORT", "70000"),
        ("SERIATIM_HTTP_PORT", "-1"),
        ("SERIATIM_HTTP_PORT", "80.5"),
        ("SERIATIM_MAX_ATTEMPTS", "0"),
        ("SERIATIM_IDLE_TIMEOUT", "-1"),
        ("SERIATIM_IDLE_TIMEOUT", "nan"),
        ("SERIATIM_IDLE_TIMEOUT", "inf"),
        ("SERIATIM_HANDLER_TIMEOUT", "NaN"),
        ("SERIATIM_TOKEN_TTL", "nan"),
        ("SERIATIM_NAMESPACE", "a.b"),
        ("SERIATIM_NAMESPACE", "Seriatim"),
        ("SERIATIM_NAMESPACE", "-leading-dash"),
        ("SERIATIM_NAMESPACE", "x" * 64),
        ("SERIATIM_QUEUE_TYPE", "stream"),
        ("SERIATIM_QUEUE_TYPE", "Classic"),
        ("SERIATIM_DATABASE_URL", "postgresql:///seriatim"),
        ("SERIATIM_DATABASE_URL", "not a url"),
        ("SERIATIM_AMQP_URL", "amqp:///%2F"),
        ("SERIATIM_MAX_STORED_EVENTS", "0"),
        ("SERIATIM_MAX_STORED_BYTES", "-5"),
        ("SERIATIM_RETENTION", "-1"),
        ("SERIATIM_RETENTION", "0.5"),
        ("SERIATIM_RETENTION", "nan"),
        ("SERIATIM_RETENTION_BATCH", "0"),
        ("SERIATIM_RETENTION_PAUSE", "-1"),
        ("SERIATIM_RETENTION_INTERVAL", "0"),
        ("SERIATIM_MAX_WEBHOOK_SECRETS", "0"),
        ("SERIATIM_MAX_WEBHOOK_SECRETS", "101"),
        ("SERIATIM_METRICS_EXEMPLARS", "yes"),
        ("SERIATIM_METRICS_EXEMPLARS", "ON"),
        ("SERIATIM_MAX_BATCH", "0"),
        ("SERIATIM_MAX_BATCH", "many"),
        ("SERIATIM_MAX_BATCH", "100001"),
        ("SERIATIM_MAX_BATCH_BYTES", "10"),
        ("SERIATIM_MAX_BATCH_BYTES", "1e12"),
    ],
)
def test_bad_value_raises_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})


def test_backoff_max_below_min_raises_naming_the_maximum() -> None:
    with pytest.raises(SettingsError, match="SERIATIM_BACKOFF_MAX"):
        Settings.from_env({"SERIATIM_BACKOFF_MIN": "5", "SERIATIM_BACKOFF_MAX": "1"})


def test_namespace_empty_after_strip_is_rejected_when_constructed() -> None:
    with pytest.raises(SettingsError, match="SERIATIM_NAMESPACE"):
        Settings(namespace="   ".strip())


def test_a_blank_variable_counts_as_unset() -> None:
    # compose files and shells often pass empty strings for variables they do not set
    assert Settings.from_env({"SERIATIM_NAMESPACE": "   "}).namespace == "seriatim"


def test_database_url_with_an_unclosed_ipv6_bracket_raises_settings_error() -> None:
    with pytest.raises(SettingsError, match="SERIATIM_DATABASE_URL"):
        Settings.from_env({"SERIATIM_DATABASE_URL": "postgresql://[::1/seriatim"})


def test_password_is_redacted_from_a_url_error() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"SERIATIM_AMQP_URL": "amqp://guest:hunter2@/%2F"})

    assert "hunter2" not in str(raised.value)


def test_queue_names_carry_the_namespace_prefix() -> None:
    settings = Settings.from_env({"SERIATIM_NAMESPACE": "ns1"})

    assert settings.supervisor_queue == "ns1.supervisor"
    assert settings.mailbox_queue("c-1") == "ns1.mailbox.c-1"
    assert settings.worker_queue("w-1") == "ns1.worker.w-1"


def test_retention_is_a_week_by_default_and_0_turns_it_off() -> None:
    assert Settings.from_env({}).retention == 7 * 86400
    assert Settings.from_env({"SERIATIM_RETENTION": "0"}).retention == 0
