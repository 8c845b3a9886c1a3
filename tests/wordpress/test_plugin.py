"""The plugin in a real WordPress 6.1 (PHP 8.2, MariaDB) against the real control API, driven
over HTTP as visitors and as the administrator."""

from __future__ import annotations

import re
import uuid

import pytest

from tests.wordpress.site import ControlApi, WordPress, blackhole, form_fields, timed

pytestmark = pytest.mark.slow

BLOCK_EMAIL = "activelead-test-block@example.com"


def unique(text: str) -> str:
    return f"{text} [{uuid.uuid4().hex[:10]}]"


def test_normal_comment_is_published_with_its_trace(wp: WordPress, control_api: ControlApi) -> None:
    text = unique("Lovely post, thank you for writing this up so clearly.")
    resp = wp.post_comment(wp.client(), "jane.reader@example.org", text)
    assert resp.status_code == 302 and "#comment-" in resp.headers["location"]
    comment = wp.comment_by_text(text)
    assert comment is not None and comment["status"] == "approved"
    assert comment["result"]["decision"] == "allowed"
    event = control_api.get(f"/v1/events/{comment['trace']}")
    assert event.status_code == 200, event.text
    assert event.json()["formId"] == "wp-comment"


@pytest.mark.parametrize(("action", "status"), [("spam", "spam"), ("hold", "unapproved")])
def test_spam_identity_comment_is_blocked_with_trace(wp: WordPress, control_api: ControlApi,
                                                     action: str, status: str) -> None:
    wp.set_settings(blocked_action=action)
    text = unique("Cheap watches here")
    resp = wp.post_comment(wp.client(), BLOCK_EMAIL, text)
    assert resp.status_code == 302
    comment = wp.comment_by_text(text)
    assert comment is not None and comment["status"] == status
    assert comment["result"]["decision"] == "blocked"
    assert comment["trace"].startswith("tr_")
    assert control_api.get(f"/v1/events/{comment['trace']}").json()["verdict"]["decision"] == "blocked"


def test_reject_action_refuses_the_comment(wp: WordPress) -> None:
    wp.set_settings(blocked_action="reject", blocked_message="No spam here, thanks.")
    text = unique("Rejected spam")
    resp = wp.post_comment(wp.client(), BLOCK_EMAIL, text)
    assert resp.status_code == 403
    assert "No spam here, thanks." in resp.text
    assert wp.comment_by_text(text) is None


def test_monitor_mode_records_but_publishes(wp: WordPress) -> None:
    wp.set_settings(mode="monitor")
    text = unique("Monitored spam")
    wp.post_comment(wp.client(), BLOCK_EMAIL, text)
    comment = wp.comment_by_text(text)
    assert comment is not None and comment["status"] == "approved"
    assert comment["result"]["decision"] == "blocked" and comment["result"]["action"] == "allow"


def test_filled_honeypot_is_sent_as_a_signal(wp: WordPress, control_api: ControlApi) -> None:
    page = wp.client().get("/?p=1").text
    assert 'name="activelead_website"' in page
    assert "nonce" not in page.split('name="activelead_website"')[0][-400:]
    text = unique("Great article")
    wp.post_comment(wp.client(), "bot@example.org", text, extra={"activelead_website": "http://spam.example"})
    comment = wp.comment_by_text(text)
    assert comment is not None
    event = control_api.get(f"/v1/events/{comment['trace']}").json()
    assert event["verdict"]["decision"] != "allowed" or "honeypot" in " ".join(event["verdict"]["labels"])


def test_admin_comment_is_never_checked(wp: WordPress) -> None:
    admin = wp.admin()
    page = admin.get("/?p=1").text
    nonce = re.search(r'name="_wp_unfiltered_html_comment[^"]*" value="([^"]+)"', page)
    text = unique("Admin reply")
    data = {"comment_post_ID": "1", "comment": text, "comment_parent": "0"}
    if nonce:
        data["_wp_unfiltered_html_comment"] = nonce.group(1)
    resp = admin.post("/wp-comments-post.php", data=data)
    assert resp.status_code == 302
    comment = wp.comment_by_text(text)
    assert comment is not None and comment["status"] == "approved" and comment["result"] == ""


def register(wp: WordPress, login: str, email: str, user_agent: str | None = None,
             honeypot: str = "") -> tuple[int, str]:
    c = wp.client()
    if user_agent:
        c.headers["User-Agent"] = user_agent
    resp = c.post("/wp-login.php?action=register", data={
        "user_login": login, "user_email": email, "activelead_website": honeypot, "wp-submit": "Register"})
    return resp.status_code, resp.text


def user_exists(wp: WordPress, login: str) -> bool:
    return bool(wp.eval(f"return (bool) get_user_by('login', '{login}');"))


def test_bot_registration_is_refused(wp: WordPress) -> None:
    login = "bot" + uuid.uuid4().hex[:8]
    status, body = register(wp, login, BLOCK_EMAIL, user_agent="python-requests/2.31")
    assert status == 200
    assert "looks like spam" in body
    assert not user_exists(wp, login)


def test_human_registration_is_accepted(wp: WordPress) -> None:
    login = "jane" + uuid.uuid4().hex[:8]
    status, _ = register(wp, login, f"{login}@example.org")
    assert status == 302
    assert user_exists(wp, login)
    meta = wp.eval(f"return get_user_meta(get_user_by('login', '{login}')->ID, 'activelead_result', true);")
    assert meta["trace_id"].startswith("tr_")


def test_lost_password_request_from_bot_is_refused(wp: WordPress) -> None:
    # A request for an unknown account is refused by WordPress before the plugin spends a call;
    # the documented test user agent makes the service block a request for a real one.
    c = wp.client()
    c.headers["User-Agent"] = "ActiveleadTest/block"
    resp = c.post("/wp-login.php?action=lostpassword",
                  data={"user_login": "admin", "wp-submit": "Get New Password"})
    assert resp.status_code == 200 and "looks like spam" in resp.text


def settings_form(admin_html: str) -> dict[str, str]:
    return form_fields(admin_html, 'action="options.php"')


def test_settings_page_saves_and_validates(wp: WordPress, control_api: ControlApi) -> None:
    admin = wp.admin()
    page = admin.get("/wp-admin/options-general.php?page=activelead")
    assert page.status_code == 200 and "Test connection" in page.text
    hidden = settings_form(page.text)
    assert hidden["option_page"] == "activelead" and hidden["_wpnonce"]
    base = {**hidden, "activelead_settings[api_url]": control_api.url,
            "activelead_settings[mode]": "monitor", "activelead_settings[blocked_action]": "hold",
            "activelead_settings[fail_mode]": "closed", "activelead_settings[timeout]": "3.5",
            "activelead_settings[trusted_proxies]": "10.0.0.0/8, 2001:db8::/32",
            "activelead_settings[integrations][comments]": "1", "activelead_settings[unknown]": "x"}
    resp = admin.post("/wp-admin/options.php",
                      data={**base, "activelead_settings[api_key]": control_api.api_key})
    assert resp.status_code == 302
    saved = wp.eval("return get_option('activelead_settings');")
    assert saved["mode"] == "monitor" and saved["blocked_action"] == "hold" and saved["timeout"] == 3.5
    assert saved["fail_mode"] == "closed" and "unknown" not in saved
    assert saved["integrations"]["comments"] is True and saved["integrations"]["registration"] is False
    # Invalid values are refused with a message and the previous values kept.
    hidden = settings_form(admin.get("/wp-admin/options-general.php?page=activelead").text)
    resp = admin.post("/wp-admin/options.php", data={
        **base, **hidden, "activelead_settings[api_key]": "not-a-key", "activelead_settings[timeout]": "99",
        "activelead_settings[mode]": "<script>"})
    page = admin.get(resp.headers["location"].replace(wp.url, "")).text
    assert "is not an Activelead API key" in page and "between 0.2 and 10 seconds" in page
    assert "<script>" not in page.split('class="wrap activelead-settings"')[1]
    saved = wp.eval("return get_option('activelead_settings');")
    assert saved["api_key"] == control_api.api_key and saved["timeout"] == 3.5 and saved["mode"] == "monitor"


def test_settings_post_without_nonce_is_refused(wp: WordPress) -> None:
    admin = wp.admin()
    resp = admin.post("/wp-admin/options.php", data={
        "option_page": "activelead", "action": "update", "activelead_settings[mode]": "monitor"})
    assert resp.status_code == 403
    assert wp.eval("return get_option('activelead_settings')['mode'];") == "enforce"
    # A visitor without the capability cannot even see the page.
    assert wp.client().get("/wp-admin/options-general.php?page=activelead").status_code == 302


def test_test_connection_shows_credit_balance(wp: WordPress) -> None:
    admin = wp.admin()
    page = admin.get("/wp-admin/options-general.php?page=activelead").text
    hidden = form_fields(page, "admin-post.php")
    resp = admin.post("/wp-admin/admin-post.php", data=hidden)
    assert resp.status_code == 302
    page = admin.get("/wp-admin/options-general.php?page=activelead").text
    assert re.search(r"Credit balance: [\d,]+", page), page[:3000]


def test_api_key_constant_hides_the_field(wp: WordPress) -> None:
    out = wp.eval("define('ACTIVELEAD_API_KEY', 'al_live_constant');"
                  " return array(Activelead_Settings::get('api_key'),"
                  " Activelead_Settings::is_constant('api_key'));")
    assert out == ["al_live_constant", True]


@pytest.mark.parametrize(("fail_mode", "status"), [("open", "approved"), ("closed", "spam")])
def test_service_down_follows_fail_policy_within_timeout(wp: WordPress, fail_mode: str, status: str) -> None:
    with blackhole() as url:
        wp.set_settings(api_url=url, timeout=1.0, fail_mode=fail_mode)
        text = unique("A comment while the service hangs")
        resp, elapsed = timed(lambda: wp.post_comment(wp.client(), "jane.reader@example.org", text))
    assert resp.status_code == 302
    assert elapsed < 1.0 + 2.0, elapsed  # the timeout plus WordPress's own work, never the 30 s default
    comment = wp.comment_by_text(text)
    assert comment is not None and comment["status"] == status
    assert "degraded" in comment["result"]["labels"] and comment["result"]["error"]
    notice = wp.admin().get("/wp-admin/index.php").text
    assert "could not be reached" in notice


def test_service_refused_connection_fails_open_at_once(wp: WordPress) -> None:
    from tests.services import free_port

    wp.set_settings(api_url=f"http://127.0.0.1:{free_port()}")
    text = unique("Nobody listening")
    resp, elapsed = timed(lambda: wp.post_comment(wp.client(), "jane.reader@example.org", text))
    assert resp.status_code == 302 and elapsed < 2.0
    assert wp.comment_by_text(text)["status"] == "approved"  # type: ignore[index]


def test_invalid_key_shows_a_notice(wp: WordPress) -> None:
    wp.set_settings(api_key="al_live_AAAAAAAAAAAA_" + "A" * 38)
    wp.post_comment(wp.client(), "jane.reader@example.org", unique("Comment with a wrong key"))
    assert "refuses the API key" in wp.admin().get("/wp-admin/index.php").text
    # The reason comes from the control API's error body ({"error": {"code", "message", …}}).
    status = wp.eval("return get_option('activelead_status');")
    assert status["key_invalid"] is True
    assert status["last_error"].startswith("HTTP 401 ") and status["last_error"].endswith("(invalid_key)")


def test_marking_spam_sends_feedback(wp: WordPress, control_api: ControlApi) -> None:
    text = unique("A perfectly normal comment to be reported")
    wp.post_comment(wp.client(), "jane.reader@example.org", text)
    comment = wp.comment_by_text(text)
    assert comment is not None
    admin = wp.admin()
    listing = admin.get("/wp-admin/edit-comments.php").text
    assert comment["trace"] in listing  # the Activelead column
    link = re.search(rf'href="(comment\.php\?c={comment["id"]}&(?:amp;|#038;)?action=spamcomment[^"]*)"',
                     listing)
    assert link, "no spam link for the comment"
    resp = admin.get("/wp-admin/" + link.group(1).replace("&amp;", "&").replace("&#038;", "&"))
    assert resp.status_code == 302
    assert wp.comment_by_text(text)["status"] == "spam"  # type: ignore[index]
    event = control_api.get(f"/v1/events/{comment['trace']}").json()
    assert event["feedback"] == "spam"
    # And back: "not spam" sends ham.
    assert wp.eval(f"return wp_unspam_comment({comment['id']});")
    assert control_api.get(f"/v1/events/{comment['trace']}").json()["feedback"] == "ham"


def test_dashboard_widget_counts_today(wp: WordPress) -> None:
    wp.post_comment(wp.client(), BLOCK_EMAIL, unique("Counted spam"))
    page = wp.admin().get("/wp-admin/index.php").text
    assert "Activelead today" in page
    blocked = re.search(r'activelead-count-blocked">(\d+)<', page)
    assert blocked and int(blocked.group(1)) >= 1


def test_privacy_exporter_and_eraser(wp: WordPress) -> None:
    email = f"privacy{uuid.uuid4().hex[:6]}@example.org"
    text = unique("Comment for the privacy test")
    wp.post_comment(wp.client(), email, text)
    exported = wp.eval(f"return Activelead_Privacy::export('{email}', 1);")
    assert exported["done"] and exported["data"][0]["group_id"] == "activelead"
    erased = wp.eval(f"return Activelead_Privacy::erase('{email}', 1);")
    assert erased["items_removed"] and erased["done"] and not erased["items_retained"]
    assert wp.comment_by_text(text)["result"] == ""  # type: ignore[index]
    exporters = wp.eval("return array_keys(apply_filters('wp_privacy_personal_data_exporters', array()));")
    assert "activelead" in exporters


@pytest.mark.parametrize(("credits", "notice"), [(5, "credits are running low (5 left)"),
                                                  (0, "your credits are used up")])
def test_low_credit_notice_on_the_dashboard(wp: WordPress, control_api: ControlApi,
                                            credits: int, notice: str) -> None:
    # The demo project has plenty of credits: no credit notice.
    page = wp.admin().get("/wp-admin/index.php").text
    assert "Activelead today" in page
    assert "running low" not in page and "used up" not in page
    # A project of an account holding fewer credits than the control API's low_credit_threshold
    # (100): the dashboard asks for the balance (GET /v1/credits) and shows the notice.
    key, _ = control_api.new_project(f"low{credits}-{uuid.uuid4().hex[:8]}@example.org", credits=credits)
    assert control_api.get("/v1/credits", api_key=key).json()["low"] is True
    wp.set_settings(api_key=key)
    page = wp.admin().get("/wp-admin/index.php").text
    assert notice in page, page[:3000]
    assert wp.eval("return get_option('activelead_status')['credits'];") == credits
