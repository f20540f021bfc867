"""The client's address behind trusted proxies: Forwarded (RFC 7239) and X-Forwarded-For."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict
from structlog.testing import capture_logs

from recsrv.config import Config, ServerConfig
from recsrv.http.security import Guard, node_address

PROXY = "10.0.0.1"


@pytest.mark.parametrize(
    ("node", "address"),
    [
        ("192.0.2.43", "192.0.2.43"),
        ("192.0.2.43:4711", "192.0.2.43"),
        ("192.0.2.43:_port7", "192.0.2.43"),
        ("[2001:db8:cafe::17]", "2001:db8:cafe::17"),
        ("[2001:DB8:cafe::17]:4711", "2001:db8:cafe::17"),
        ("2001:db8:cafe::17", "2001:db8:cafe::17"),  # brackets missing: still unambiguous
        ("unknown", None),
        ("UNKNOWN", None),
        ("_hidden", None),
        ("_SEVKISEK:80", None),
        ("[192.0.2.43]", None),  # brackets are for IPv6 only
        ("[2001:db8::1", None),
        ("[2001:db8::1]4711", None),
        ("192.0.2.43:http", None),
        ("192.0.2.43:123456", None),
        ("shop.example", None),
        ("", None),
        (None, None),
    ],
)
def test_a_node_names_an_address_or_nothing(node: str | None, address: str | None) -> None:
    ip = node_address(node)
    assert (None if ip is None else str(ip)) == address


def client(
    headers: list[tuple[str, str]],
    peer: str = PROXY,
    trusted: tuple[str, ...] = ("10.0.0.0/8", "2001:db8:ffff::/48"),
) -> str:
    guard = Guard(Config(server=ServerConfig(trusted_proxies=trusted)))
    request = make_mocked_request("GET", "/v1/popular", headers=CIMultiDict(headers))
    return guard.client_address(request.clone(remote=peer))


def forwarded(*values: str) -> list[tuple[str, str]]:
    return [("Forwarded", value) for value in values]


def x_forwarded_for(*values: str) -> list[tuple[str, str]]:
    return [("X-Forwarded-For", value) for value in values]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # RFC 7239's own examples.
        (forwarded('for="_gazonk"'), PROXY),
        (forwarded('For="[2001:db8:cafe::17]:4711"'), "2001:db8:cafe::17"),
        (forwarded("for=192.0.2.60;proto=http;by=203.0.113.43"), "192.0.2.60"),
        (forwarded("for=192.0.2.43, for=198.51.100.17"), "198.51.100.17"),
        # Right to left past the trusted proxies, over elements and header lines.
        (forwarded("for=192.0.2.43, for=10.0.0.7"), "192.0.2.43"),
        (forwarded("for=192.0.2.43", 'for=10.0.0.7;by="_p1"', "for=10.2.3.4"), "192.0.2.43"),
        (forwarded('for="[2001:db8::5]:443", for="[2001:db8:ffff::1]"'), "2001:db8::5"),
        (forwarded("for=10.0.0.7, for=10.0.0.8"), PROXY),
        # A hop that names no address stops the walk: what is left of it is anyone's.
        (forwarded("for=192.0.2.43, for=unknown"), PROXY),
        (forwarded("for=192.0.2.43, for=_hidden, for=10.0.0.7"), PROXY),
        (forwarded("for=192.0.2.43, proto=https"), PROXY),
        (forwarded('for=192.0.2.43, for="\\"198.51.100.17\\""'), PROXY),
        (forwarded("for=192.0.2.43, for=[2001:db8::5]"), PROXY),  # unquoted: unreadable
        # A client's unclosed quote swallows the hops proxies append to the same line,
        # up to an IPv6 hop's quote: the walk stops there, it does not skip to the left.
        (forwarded('for=6.6.6.6, x=", for=192.0.2.9, for="[2001:db8:ffff::1]"'), PROXY),
        # X-Forwarded-For alone, as before; ports and spellings are normalised.
        (x_forwarded_for("198.51.100.77, 192.0.2.1"), "192.0.2.1"),
        (x_forwarded_for("198.51.100.77", "192.0.2.1:5678, 10.0.0.9"), "192.0.2.1"),
        (x_forwarded_for("2001:DB8::5, "), "2001:db8::5"),
        (x_forwarded_for("198.51.100.77, unknown"), PROXY),
        # Both: the same client, however written, or the peer.
        (forwarded('for="[2001:db8::5]:1"') + x_forwarded_for("2001:DB8::5"), "2001:db8::5"),
        (forwarded("for=6.6.6.6") + x_forwarded_for("6.6.6.6, 192.0.2.9"), PROXY),
        (forwarded("for=192.0.2.9") + x_forwarded_for("6.6.6.6"), PROXY),
        (forwarded("for=unknown") + x_forwarded_for("192.0.2.9"), PROXY),
    ],
)
def test_a_trusted_proxy_names_the_client(headers: list[tuple[str, str]], expected: str) -> None:
    assert client(headers) == expected


def test_an_untrusted_peer_is_the_client_whatever_it_claims() -> None:
    claims = forwarded("for=192.0.2.43") + x_forwarded_for("192.0.2.43")
    assert client(claims, peer="203.0.113.5") == "203.0.113.5"
    assert client(claims[:1], peer="203.0.113.5") == "203.0.113.5"


def test_with_no_trusted_proxy_the_headers_are_ignored_with_one_warning() -> None:
    guard = Guard(Config())
    with capture_logs() as logs:
        for headers in (forwarded("for=192.0.2.43"), x_forwarded_for("192.0.2.43")):
            request = make_mocked_request("GET", "/", headers=CIMultiDict(headers))
            assert guard.client_address(request.clone(remote=PROXY)) == PROXY
    assert [entry["event"] for entry in logs] == ["forwarded_headers_ignored"]
