"""Settings of every seriatim process, read once from the environment and validated."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from actors.addresses import AddressError, amqp_urls, check_database_url
from actors.bounds import MAX_RESTARTS, RATE_BURST, RATE_PER_SECOND, RESTART_WITHIN, Bounds

_NAMESPACE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class SettingsError(ValueError):
    """A setting has a value seriatim cannot work with; the message names it."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every knob of seriatim, with the defaults of the public contract."""

    database_url: str = "postgresql://postgres@127.0.0.1:5432/seriatim"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    handlers: tuple[str, ...] = ()
    demo_handlers: str = "on"
    middleware: tuple[str, ...] = ()
    jwt_key_file: str = ""
    jwt_issuer: str = "seriatim"
    jwt_audience: str = "seriatim"
    token_ttl: int = 3600
    namespace: str = "seriatim"
    queue_type: str = "classic"
    max_attempts: int = 5
    restart_intensity: int = 50
    restart_period: float = 60.0
    idle_timeout: float = 300.0
    delete_idle_queues: str = "on"  # a passivated mailbox's empty queue is deleted
    handler_timeout: float = 30.0
    handler_threads: int = 32
    drain_timeout: float = 30.0
    backoff_min: float = 0.1
    backoff_max: float = 10.0
    max_body_bytes: int = 256 * 1024
    max_batch: int = 1000
    max_batch_bytes: int = 4 * 1024 * 1024
    relay_after: float = 5.0
    log_level: str = "INFO"
    log_format: str = "auto"  # console on a terminal, else json (actors/logs.py)
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    rate_per_second: float = 1000.0
    rate_burst: int = 2000
    max_backlog: int = 100_000
    max_concurrent_requests: int = 512
    max_preauth_requests: int = 128
    preauth_body_timeout: float = 5.0
    credential_checks: int = 1
    token_rate_per_peer: float = 20.0
    token_rate_per_client: float = 5.0
    read_rate_per_second: float = 100.0
    read_rate_burst: int = 200
    page_max_bytes: int = 1024 * 1024
    client_recheck: float = 5.0
    max_stored_events: int = 10_000_000
    max_stored_bytes: int = 10 * 1024**3
    retention: float = 7 * 86400.0
    retention_batch: int = 500
    retention_pause: float = 0.1
    retention_interval: float = 60.0
    max_webhook_secrets: int = 3
    metrics_exemplars: str = "off"
    console: str = "on"  # the operator console under /console (gateway/console/)
    console_session_ttl: int = 28800
    console_secure_cookie: str = "auto"  # on: Secure even over HTTP (TLS ends at a proxy)
    trace_url: str = "http://127.0.0.1:16686/trace/{trace_id}"
    grafana_url: str = "http://127.0.0.1:3000/d/seriatim/seriatim?var-client={client_id}"

    def __post_init__(self) -> None:
        try:
            check_database_url(self.database_url)
        except AddressError as error:
            raise SettingsError(f"SERIATIM_DATABASE_URL: {error}") from None
        try:
            amqp_urls(self.amqp_url)
        except AddressError as error:
            raise SettingsError(f"SERIATIM_AMQP_URL: {error}") from None
        if not _NAMESPACE.fullmatch(self.namespace):
            raise SettingsError(
                "SERIATIM_NAMESPACE must be 1-63 characters of a-z, 0-9, '_' and '-', "
                f"starting with a letter or digit; got {self.namespace!r}"
            )
        if self.queue_type not in ("classic", "quorum"):
            raise SettingsError(
                f"SERIATIM_QUEUE_TYPE must be classic or quorum, not {self.queue_type!r}"
            )
        if self.demo_handlers not in ("on", "off"):
            raise SettingsError(
                f"SERIATIM_DEMO_HANDLERS must be on or off, not {self.demo_handlers!r}"
            )
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise SettingsError(
                "SERIATIM_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, "
                f"not {self.log_level!r}"
            )
        if self.metrics_exemplars not in ("on", "off"):
            raise SettingsError(
                f"SERIATIM_METRICS_EXEMPLARS must be on or off, not {self.metrics_exemplars!r}"
            )
        if self.log_format not in ("auto", "json", "console"):
            raise SettingsError(
                f"SERIATIM_LOG_FORMAT must be auto, json or console, not {self.log_format!r}"
            )
        _at_least("SERIATIM_HTTP_PORT", self.http_port, 0, 65535)
        _at_least("SERIATIM_TOKEN_TTL", self.token_ttl, 60, 86400)
        _at_least("SERIATIM_MAX_ATTEMPTS", self.max_attempts, 1, 1000)
        _within("SERIATIM_RESTART_INTENSITY", self.restart_intensity, MAX_RESTARTS)
        _within("SERIATIM_RESTART_PERIOD", self.restart_period, RESTART_WITHIN)
        _at_least("SERIATIM_IDLE_TIMEOUT", self.idle_timeout, 0.1, 86400)
        _at_least("SERIATIM_HANDLER_TIMEOUT", self.handler_timeout, 0.01, 3600)
        _at_least("SERIATIM_HANDLER_THREADS", self.handler_threads, 1, 1024)
        _at_least("SERIATIM_DRAIN_TIMEOUT", self.drain_timeout, 0.1, 3600)
        _at_least("SERIATIM_BACKOFF_MIN", self.backoff_min, 0.0, 600)
        _at_least("SERIATIM_BACKOFF_MAX", self.backoff_max, self.backoff_min, 600)
        _at_least("SERIATIM_MAX_BODY_BYTES", self.max_body_bytes, 64, 64 * 1024 * 1024)
        _at_least("SERIATIM_MAX_BATCH", self.max_batch, 1, 100_000)
        _at_least("SERIATIM_MAX_BATCH_BYTES", self.max_batch_bytes, 64, 256 * 1024 * 1024)
        _at_least("SERIATIM_RELAY_AFTER", self.relay_after, 0.1, 3600)
        _at_least("SERIATIM_HEADER_TIMEOUT", self.header_timeout, 0.1, 600)
        _at_least("SERIATIM_BODY_TIMEOUT", self.body_timeout, 0.1, 3600)
        _within("SERIATIM_RATE_PER_SECOND", self.rate_per_second, RATE_PER_SECOND)
        _within("SERIATIM_RATE_BURST", self.rate_burst, RATE_BURST)
        _at_least("SERIATIM_MAX_BACKLOG", self.max_backlog, 1, 2**53)
        _at_least("SERIATIM_MAX_CONCURRENT_REQUESTS", self.max_concurrent_requests, 1, 100_000)
        _at_least("SERIATIM_MAX_PREAUTH_REQUESTS", self.max_preauth_requests, 1, 100_000)
        _at_least("SERIATIM_PREAUTH_BODY_TIMEOUT", self.preauth_body_timeout, 0.1, 600)
        _at_least("SERIATIM_CREDENTIAL_CHECKS", self.credential_checks, 1, 64)
        _at_least("SERIATIM_TOKEN_RATE_PER_PEER", self.token_rate_per_peer, 0.001, 1_000_000)
        _at_least("SERIATIM_TOKEN_RATE_PER_CLIENT", self.token_rate_per_client, 0.001, 1_000_000)
        _within("SERIATIM_READ_RATE_PER_SECOND", self.read_rate_per_second, RATE_PER_SECOND)
        _within("SERIATIM_READ_RATE_BURST", self.read_rate_burst, RATE_BURST)
        _at_least("SERIATIM_PAGE_MAX_BYTES", self.page_max_bytes, 4096, 64 * 1024 * 1024)
        _at_least("SERIATIM_CLIENT_RECHECK", self.client_recheck, 0.1, 300)
        _at_least("SERIATIM_MAX_STORED_EVENTS", self.max_stored_events, 1, 2**53)
        _at_least("SERIATIM_MAX_STORED_BYTES", self.max_stored_bytes, 1, 2**53)
        if self.retention != 0:  # 0: finished events are kept for ever
            _at_least("SERIATIM_RETENTION", self.retention, 1, 100 * 365 * 86400)
        _at_least("SERIATIM_RETENTION_BATCH", self.retention_batch, 1, 100_000)
        _at_least("SERIATIM_RETENTION_PAUSE", self.retention_pause, 0, 60)
        _at_least("SERIATIM_RETENTION_INTERVAL", self.retention_interval, 0.1, 86400)
        _at_least("SERIATIM_MAX_WEBHOOK_SECRETS", self.max_webhook_secrets, 1, 100)
        if self.delete_idle_queues not in ("on", "off"):
            raise SettingsError(
                f"SERIATIM_DELETE_IDLE_QUEUES must be on or off, not {self.delete_idle_queues!r}"
            )
        if self.console not in ("on", "off"):
            raise SettingsError(f"SERIATIM_CONSOLE must be on or off, not {self.console!r}")
        if self.console_secure_cookie not in ("auto", "on"):
            raise SettingsError(
                "SERIATIM_CONSOLE_SECURE_COOKIE must be auto or on, "
                f"not {self.console_secure_cookie!r}"
            )
        _at_least("SERIATIM_CONSOLE_SESSION_TTL", self.console_session_ttl, 5, 7 * 86400)
        for name, field in (("TRACE_URL", "trace_url"), ("GRAFANA_URL", "grafana_url")):
            url = getattr(self, field)
            if url and urlsplit(url).scheme not in ("http", "https"):
                raise SettingsError(f"SERIATIM_{name} must be an http(s) URL or empty, not {url!r}")

    @property
    def demo(self) -> bool:
        """The built-in demo handlers (actors/demo.py) are loaded."""
        return self.demo_handlers == "on"

    @property
    def amqp_urls(self) -> tuple[str, ...]:
        """The broker nodes SERIATIM_AMQP_URL lists (one, or a cluster's several)."""
        return amqp_urls(self.amqp_url)

    @property
    def supervisor_queue(self) -> str:
        return f"{self.namespace}.supervisor"

    def mailbox_queue(self, client_id: str) -> str:
        return f"{self.namespace}.mailbox.{client_id}"

    def worker_queue(self, worker_id: str) -> str:
        return f"{self.namespace}.worker.{worker_id}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read `SERIATIM_*` variables; raise `SettingsError` naming the first bad one."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            raw = env.get(f"SERIATIM_{field.name.upper()}")
            if raw is None or not raw.strip():  # blank counts as unset
                continue
            values[field.name] = _parse(field.name, str(field.type), raw.strip())
        return cls(**values)  # type: ignore[arg-type]


def _parse(name: str, kind: str, raw: str) -> object:
    variable = f"SERIATIM_{name.upper()}"
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise SettingsError(f"{variable} must be a number, not {raw!r}") from None
    if kind.startswith("tuple"):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def _within(variable: str, value: float, bounds: Bounds) -> None:
    _at_least(variable, value, bounds.low, bounds.high)


def _at_least(variable: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise SettingsError(f"{variable} must be between {low:g} and {high:g}, not {value:g}")
