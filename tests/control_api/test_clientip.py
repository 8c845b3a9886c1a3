"""The client IP behind a reverse proxy: forwarding headers count only from a trusted peer, and
then only their right-most untrusted hop; spoofing attempts land on the real address."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import ValidationError

from control_api.clientip import ClientIpResolver, parse_ip
from control_api.settings import ControlApiSettings
from tests.control_api.conftest import ClientFactory, db_rows, sign_up

PROXY = "10.0.0.1"
ALL = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


XFF = "X-Forwarded-For"


@pytest.mark.parametrize(
    ("trusted", "peer", "sent", "names", "expected"),
    [
        # No trusted proxies: headers are never read.
        ([], PROXY, [(XFF, "81.2.69.160")], ALL, PROXY),
        # An untrusted peer cannot choose its address.
        (["10.0.0.0/8"], "203.0.113.9", [(XFF, "81.2.69.160")], ALL, "203.0.113.9"),
        (["10.0.0.0/8"], "203.0.113.9", [("X-Real-IP", "81.2.69.160")], ALL, "203.0.113.9"),
        # A trusted peer: the address it appended.
        (["10.0.0.0/8"], PROXY, [(XFF, "81.2.69.160")], ALL, "81.2.69.160"),
        # The client forged entries on the left: the proxy's own entry (right-most) wins.
        (["10.0.0.0/8"], PROXY, [(XFF, "1.1.1.1, 8.8.8.8, 81.2.69.160")], ALL, "81.2.69.160"),
        # Two of our proxies in a row: skip every trusted hop from the right.
        (["10.0.0.0/8"], PROXY, [(XFF, "6.6.6.6, 81.2.69.160, 10.0.0.7")], ALL, "81.2.69.160"),
        # The client claims to be one of our proxies: still only the proxy's entry counts.
        (["10.0.0.0/8"], PROXY, [(XFF, "10.9.9.9, 81.2.69.160")], ALL, "81.2.69.160"),
        # Several header lines are one list, in order.
        (["10.0.0.0/8"], PROXY, [(XFF, "6.6.6.6"), (XFF, "81.2.69.160")], ALL, "81.2.69.160"),
        # Garbage where a trusted hop should have written an address: believe nothing, use the peer.
        (["10.0.0.0/8"], PROXY, [(XFF, "81.2.69.160, not-an-ip")], ALL, PROXY),
        (["10.0.0.0/8"], PROXY, [(XFF, "")], ALL, PROXY),
        # Every hop is ours (an internal caller): the left-most is the origin.
        (["10.0.0.0/8"], PROXY, [(XFF, "10.1.2.3, 10.0.0.7")], ALL, "10.1.2.3"),
        # Ports, brackets and IPv6.
        (["10.0.0.0/8"], PROXY, [(XFF, "81.2.69.160:51234")], ALL, "81.2.69.160"),
        (["10.0.0.0/8"], PROXY, [(XFF, "[2001:db8::7]:443")], ALL, "2001:db8::7"),
        (["2001:db8:ffff::/48"], "2001:db8:ffff::1", [(XFF, "2001:db8::7")], ALL, "2001:db8::7"),
        # A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d: still the IPv4 proxy.
        (["10.0.0.0/8"], "::ffff:10.0.0.1", [(XFF, "81.2.69.160")], ALL, "81.2.69.160"),
        # Forwarded (RFC 7239): quoted, bracketed, with other parameters; right-most untrusted.
        (
            ["10.0.0.0/8"],
            PROXY,
            [("Forwarded", 'for=6.6.6.6;proto=http, for="[2001:db8::7]:443";proto=https;by=10.0.0.1')],
            ("Forwarded",),
            "2001:db8::7",
        ),
        (["10.0.0.0/8"], PROXY, [("Forwarded", "For=81.2.69.160")], ("Forwarded",), "81.2.69.160"),
        (["10.0.0.0/8"], PROXY, [("Forwarded", "for=unknown")], ("Forwarded",), PROXY),
        (["10.0.0.0/8"], PROXY, [("Forwarded", "proto=https")], ("Forwarded",), PROXY),
        # X-Real-IP: one address, from the nearest proxy.
        (["10.0.0.0/8"], PROXY, [("X-Real-IP", "81.2.69.160")], ("X-Real-IP",), "81.2.69.160"),
        # Only configured headers are read: a header the proxy passes through is the client's.
        (["10.0.0.0/8"], PROXY, [("X-Real-IP", "6.6.6.6")], (XFF,), PROXY),
        (["10.0.0.0/8"], PROXY, [("Forwarded", "for=6.6.6.6"), (XFF, "81.2.69.160")], (XFF,), "81.2.69.160"),
        # The first configured header present decides.
        (
            ["10.0.0.0/8"],
            PROXY,
            [("X-Real-IP", "81.2.69.160"), (XFF, "6.6.6.6")],
            ("X-Real-IP", XFF),
            "81.2.69.160",
        ),
        # No peer address (a Unix socket): nothing to resolve.
        (["10.0.0.0/8"], None, [(XFF, "81.2.69.160")], ALL, ""),
    ],
)
def test_resolver(
    trusted: list[str], peer: str | None, sent: list[tuple[str, str]], names: tuple[str, ...], expected: str
) -> None:
    assert ClientIpResolver(trusted, names).resolve(peer, headers(*sent)) == expected


def test_parse_ip_forms() -> None:
    assert str(parse_ip(' "81.2.69.160:80" ')) == "81.2.69.160"
    assert str(parse_ip("[::1]")) == "::1"
    assert str(parse_ip("::ffff:1.2.3.4")) == "1.2.3.4"
    assert parse_ip("_hidden") is None and parse_ip("1.2.3.4.5") is None


def test_settings_refuse_bad_networks_and_headers() -> None:
    with pytest.raises(ValidationError, match="not an IP address or CIDR"):
        ControlApiSettings(trusted_proxies=["10.0.0.0/33"])
    with pytest.raises(ValidationError):
        ControlApiSettings(client_ip_headers=["X-Client-IP"])
    with pytest.raises(ValidationError):
        ControlApiSettings(client_ip_headers=[])
    ok = ControlApiSettings(trusted_proxies=["127.0.0.1", "10.0.0.0/8", "fd00::/8"])
    assert ok.trusted_proxies[0] == "127.0.0.1"


def test_trusted_proxies_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTIVELEAD_CONTROL_API__TRUSTED_PROXIES", '["127.0.0.1/32", "10.0.0.0/8"]')
    assert ControlApiSettings().trusted_proxies == ["127.0.0.1/32", "10.0.0.0/8"]


# -- through the API (the test client's peer is 127.0.0.1) -------------------------------------


async def _ingest_ip(client: TestClient[Any, Any], settings_db: str, xff: str) -> str:
    owner = await sign_up(client, email=f"o{abs(hash(xff))}@example.com")
    key = await owner.key((await owner.project())["id"])
    resp = await client.post(
        "/v1/ingest", json={"email": "jane@example.org"}, headers={"Authorization": f"Bearer {key}", XFF: xff}
    )
    assert resp.status == 200, await resp.text()
    trace = (await resp.json())["traceId"]
    return str(db_rows(settings_db, "SELECT ip FROM events WHERE trace_id = ?", trace)[0][0])


async def test_ingest_default_ip_behind_a_trusted_proxy(make_client: ClientFactory, tmp_path: Any) -> None:
    client = await make_client(trusted_proxies=["127.0.0.1/32"])
    db = str(tmp_path / "control.sqlite3")
    assert await _ingest_ip(client, db, "81.2.69.160") == "81.2.69.160"
    assert await _ingest_ip(client, db, "6.6.6.6, 81.2.69.160") == "81.2.69.160"


async def test_forwarding_headers_are_ignored_without_trusted_proxies(
    client: TestClient[Any, Any], tmp_path: Any
) -> None:
    assert await _ingest_ip(client, str(tmp_path / "control.sqlite3"), "81.2.69.160") == "127.0.0.1"


async def test_login_limit_counts_the_real_client_behind_the_proxy(make_client: ClientFactory) -> None:
    client = await make_client(
        trusted_proxies=["127.0.0.1/32"], login_limit_per_account=100, login_limit_per_ip=3
    )

    async def attempt(i: int, xff: str) -> int:
        resp = await client.post(
            "/v1/session", json={"email": f"u{i}@example.com", "password": "x" * 12}, headers={XFF: xff}
        )
        return resp.status

    for i in range(3):
        assert await attempt(i, "81.2.69.160") == 401
    assert await attempt(3, "81.2.69.160") == 429
    # Forging a different left-most address does not reset the count...
    assert await attempt(4, "198.51.100.1, 81.2.69.160") == 429
    # ...while another visitor behind the same proxy is not locked out by the first one.
    assert await attempt(5, "203.0.113.50") == 401


async def test_rotating_forwarding_headers_do_not_evade_the_limit_when_untrusted(
    make_client: ClientFactory,
) -> None:
    client = await make_client(login_limit_per_account=100, login_limit_per_ip=3)
    statuses = [
        (
            await client.post(
                "/v1/session",
                json={"email": f"u{i}@example.com", "password": "x" * 12},
                headers={
                    XFF: f"198.51.100.{i}",
                    "X-Real-IP": f"198.51.100.{i}",
                    "Forwarded": f"for=198.51.100.{i}",
                },
            )
        ).status
        for i in range(5)
    ]
    assert statuses == [401, 401, 401, 429, 429]


async def test_audit_log_records_the_client_ip(make_client: ClientFactory) -> None:
    client = await make_client(trusted_proxies=["127.0.0.1/32"], client_ip_headers=["X-Real-IP"])
    owner = await sign_up(client)
    await client.post(
        "/v1/session",
        json={"email": owner.email, "password": owner.password},
        headers={"X-Real-IP": "81.2.69.160"},
    )
    entries = (await (await client.get("/v1/audit")).json())["entries"]
    signin = next(e for e in entries if e["action"] == "signin.success")
    assert signin["ip"] == "81.2.69.160"
    created = next(e for e in entries if e["action"] == "account.created")
    assert created["ip"] == "127.0.0.1"  # sign-up came without a header: the peer itself
