"""Optional login protection, driven over HTTP through the real wp-login.php: off by default; on,
a normal login works, an attempt from the test spam identity (user agent `ActiveleadTest/block`,
which the rules always block) is refused with a clear message whatever the password, and an
attempt on an administrator's account is never scored (decided on the account, before the
password check)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.wordpress.site import ADMIN_PASSWORD, ADMIN_USER, BROWSER_UA, ControlApi, WordPress, php_str

pytestmark = pytest.mark.slow

SPAM_UA = "ActiveleadTest/block"
PASSWORD = "reader password 1234"
REFUSED = "This login attempt looks automated and was refused"


@pytest.fixture
def reader(wp: WordPress) -> Iterator[dict[str, str]]:
    """A subscriber account with a known password."""
    login = "reader" + uuid.uuid4().hex[:8]
    email = f"{login}@example.org"
    user_id = wp.eval(f"return wp_insert_user(array('user_login' => {php_str(login)}, 'user_email' => "
                      f"{php_str(email)}, 'user_pass' => {php_str(PASSWORD)}, 'role' => 'subscriber'));")
    assert isinstance(user_id, int)
    yield {"login": login, "email": email}
    wp.eval(f"require_once ABSPATH . 'wp-admin/includes/user.php'; return wp_delete_user({user_id});")


def enable_login_protection(wp: WordPress) -> None:
    wp.eval("$s = get_option('activelead_settings'); $s['integrations']['login'] = true;"
            " update_option('activelead_settings', $s); return true;")


def log_in(wp: WordPress, login: str, password: str, user_agent: str = BROWSER_UA) -> httpx.Response:
    c = wp.client()
    c.headers["User-Agent"] = user_agent
    c.cookies.set("wordpress_test_cookie", "WP Cookie check")
    return c.post("/wp-login.php", data={"log": login, "pwd": password, "wp-submit": "Log In",
                                         "testcookie": "1", "redirect_to": f"{wp.url}/wp-admin/"})


def logged_in(resp: httpx.Response) -> bool:
    return resp.status_code == 302 and any(name.startswith("wordpress_logged_in_") for name in resp.cookies)


def login_events(control_api: ControlApi, email: str) -> list[dict[str, object]]:
    resp = control_api.get(f"/v1/events?formId=wp-login&email={email}")
    assert resp.status_code == 200, resp.text
    events: list[dict[str, object]] = resp.json()["events"]
    return events


def test_login_protection_is_off_by_default(wp: WordPress, control_api: ControlApi,
                                            reader: dict[str, str]) -> None:
    assert wp.eval("return Activelead_Settings::enabled('login');") is False
    page = wp.client().get("/wp-login.php").text
    assert 'name="activelead_website"' not in page  # no honeypot on the login form either
    assert logged_in(log_in(wp, reader["login"], PASSWORD, user_agent=SPAM_UA))
    assert login_events(control_api, reader["email"]) == []


def test_normal_login_works_and_is_scored(wp: WordPress, control_api: ControlApi,
                                          reader: dict[str, str]) -> None:
    enable_login_protection(wp)
    assert 'name="activelead_website"' in wp.client().get("/wp-login.php").text
    assert logged_in(log_in(wp, reader["login"], PASSWORD))
    events = login_events(control_api, reader["email"])
    assert len(events) == 1 and events[0]["verdict"]["decision"] == "allowed"  # type: ignore[index]


@pytest.mark.parametrize("password", [PASSWORD, "wrong password"])
def test_spam_identity_login_is_refused_whatever_the_password(
        wp: WordPress, control_api: ControlApi, reader: dict[str, str], password: str) -> None:
    enable_login_protection(wp)
    resp = log_in(wp, reader["login"], password, user_agent=SPAM_UA)
    assert resp.status_code == 200 and not logged_in(resp)
    assert REFUSED in resp.text
    # The same answer for a right and a wrong password: the refusal tells a bot nothing.
    assert "incorrect" not in resp.text.lower()
    events = login_events(control_api, reader["email"])
    assert [e["verdict"]["decision"] for e in events] == ["blocked"]  # type: ignore[index]


def test_administrator_is_never_blocked(wp: WordPress, control_api: ControlApi) -> None:
    enable_login_protection(wp)
    assert logged_in(log_in(wp, ADMIN_USER, ADMIN_PASSWORD, user_agent=SPAM_UA))
    # Not scored at all (no call, no credit): the account decides, before the password check.
    assert login_events(control_api, "admin@example.com") == []
    # A wrong password on the administrator's account is still refused by WordPress itself.
    resp = log_in(wp, ADMIN_USER, "wrong password", user_agent=SPAM_UA)
    assert not logged_in(resp) and REFUSED not in resp.text and "incorrect" in resp.text.lower()


def test_monitor_mode_lets_the_spam_identity_log_in(wp: WordPress, control_api: ControlApi,
                                                    reader: dict[str, str]) -> None:
    enable_login_protection(wp)
    wp.set_settings(mode="monitor")
    assert logged_in(log_in(wp, reader["login"], PASSWORD, user_agent=SPAM_UA))
    assert [e["verdict"]["decision"] for e in login_events(control_api, reader["email"])] == ["blocked"]  # type: ignore[index]
