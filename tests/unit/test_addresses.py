"""Several broker and database addresses: parsing, validation and which node is tried."""

from __future__ import annotations

import pytest

from actors.addresses import NodeRing, amqp_urls
from actors.settings import Settings, SettingsError

A = "amqp://guest:guest@127.0.0.1:5672/%2F"
B = "amqp://guest:guest@127.0.0.2:5673/%2F"
C = "amqps://guest:guest@rabbit-3/%2F"


def test_one_url_is_a_cluster_of_one() -> None:
    assert Settings(amqp_url=A).amqp_urls == (A,)


def test_comma_separated_urls_are_the_nodes_in_order() -> None:
    assert Settings.from_env({"SERIATIM_AMQP_URL": f"{A}, {B} ,{C}"}).amqp_urls == (A, B, C)


@pytest.mark.parametrize(
    "value",
    [
        f"{A},",  # a trailing comma
        f"{A},,{B}",  # an empty entry
        f"{A},{A}",  # a node twice
        f"{A},http://127.0.0.1:5672/",  # not amqp
        f"{A},amqp:///%2F",  # no host
        f"{A},amqp://127.0.0.1:port/%2F",  # a port that is not a number
        f"{A},amqp://[::1/%2F",  # an unclosed bracket
    ],
)
def test_a_bad_node_in_the_list_is_a_startup_error_naming_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="SERIATIM_AMQP_URL"):
        Settings.from_env({"SERIATIM_AMQP_URL": value})


def test_no_password_of_any_node_is_in_the_error() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"SERIATIM_AMQP_URL": "amqp://u:s3cret@h1/%2F,amqp://u:hunter2@/%2F"})

    assert "hunter2" not in str(raised.value)
    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:5432/seriatim",
        "postgresql://u:p@db1:5432,db2:5433/seriatim?target_session_attrs=read-write",
        "postgres://u@db1,db2,[::1]:5432/seriatim?target_session_attrs=primary",
    ],
)
def test_a_multi_host_database_url_is_accepted(url: str) -> None:
    assert Settings(database_url=url).database_url == url


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@db1:5432,/seriatim",  # an empty host
        "postgresql://u@db1:5432,db2:x/seriatim",  # a port that is not a number
        "postgresql://u@db1,db2:99999/seriatim",  # a port past 65535
        "postgresql://u@db1,db2/seriatim?target_session_attrs=writable",
        "mysql://u@db1/seriatim",
    ],
)
def test_a_bad_database_url_is_a_startup_error_naming_the_variable(url: str) -> None:
    with pytest.raises(SettingsError, match="SERIATIM_DATABASE_URL"):
        Settings.from_env({"SERIATIM_DATABASE_URL": url})


def test_the_ring_starts_at_its_offset_and_moves_round_on_failure() -> None:
    ring = NodeRing((A, B, C), start=1)

    assert ring.current == B
    assert ring.order() == [B, C, A]
    assert [ring.advance(), ring.advance(), ring.advance()] == [C, A, B]


def test_rings_of_many_processes_start_spread_over_the_nodes() -> None:
    # The offset is random: of 300 processes, every node is some process's first choice
    firsts = [NodeRing(amqp_urls(f"{A},{B},{C}")).current for _ in range(300)]

    assert min(firsts.count(node) for node in (A, B, C)) > 50
