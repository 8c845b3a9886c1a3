"""The plugin on a real multisite network (subdirectories: "/" and "/site2/"), network-activated:
the network settings page, the network key as default or as every site's key, a site's own key,
and a sub-site's comment landing in the control API project of the key that scored it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.wordpress.site import (
    ControlApi,
    WordPress,
    form_fields,
    php_str,
    reactivate_plugin,
    uninstall_plugin,
)

pytestmark = pytest.mark.slow

SITE2 = "/site2/"


@pytest.fixture(scope="module")
def site2_project(control_api: ControlApi) -> tuple[str, str]:
    """A second account and project (its own key) for the sub-site: (api_key, project_id)."""
    return control_api.new_project(f"site2-{uuid.uuid4().hex[:8]}@example.org", credits=500)


@pytest.fixture
def ms(multisite: WordPress) -> Iterator[WordPress]:
    """The network with no network key and both sites without their own key."""
    reset = ("delete_site_option('activelead_network_settings');"
             "foreach (get_sites(array('fields' => 'ids')) as $id) { switch_to_blog($id);"
             " update_option('activelead_settings', Activelead_Settings::defaults());"
             " delete_option('activelead_status'); restore_current_blog(); } return true;")
    multisite.eval(reset)
    yield multisite
    multisite.eval(reset)


def connection(ms: WordPress, path: str) -> dict[str, str]:
    result: dict[str, str] = ms.eval("return Activelead_Settings::connection();", path=path)
    return result


def set_network(ms: WordPress, api_key: str, api_url: str, network_wide: bool) -> None:
    ms.eval(f"update_site_option('activelead_network_settings', array('api_key' => {php_str(api_key)},"
            f" 'api_url' => {php_str(api_url)}, 'network_wide' => {'true' if network_wide else 'false'}));"
            " return true;")


def set_site_key(ms: WordPress, path: str, api_key: str, api_url: str) -> None:
    ms.eval(f"$s = get_option('activelead_settings'); $s['api_key'] = {php_str(api_key)};"
            f" $s['api_url'] = {php_str(api_url)}; update_option('activelead_settings', $s); return true;",
            path=path)


def test_network_activation_and_new_site_get_the_defaults(multisite: WordPress) -> None:
    # Activated network-wide (not on the main site only), and the site created afterwards got the
    # plugin's options through its wp_initialize_site handler. (First test of the module: no
    # test has written the options yet; the `ms` fixture would.)
    ms = multisite
    state = ms.eval(
        "require_once ABSPATH . 'wp-admin/includes/plugin.php';"
        "$out = array('network' => is_plugin_active_for_network('activelead/activelead.php'),"
        " 'main_only' => in_array('activelead/activelead.php', (array) get_option('active_plugins'), true),"
        " 'sites' => array());"
        "foreach (get_sites() as $site) { switch_to_blog($site->blog_id);"
        " $out['sites'][$site->path] = is_array(get_option('activelead_settings', null));"
        " restore_current_blog(); } return $out;")
    assert state == {"network": True, "main_only": False, "sites": {"/": True, SITE2: True}}
    # The sub-site really runs the plugin: its comment form has the honeypot.
    page = ms.client().get(f"{SITE2}?p=1")
    assert page.status_code == 200, (page.status_code, page.headers.get("location"))
    assert "Activelead test sub-site" in page.text
    assert 'name="activelead_website"' in page.text


def test_network_settings_page_saves_over_http(ms: WordPress, control_api: ControlApi) -> None:
    admin = ms.admin()
    page = admin.get("/wp-admin/network/settings.php?page=activelead-network")
    assert page.status_code == 200, page.text[:2000]
    assert "Activelead (network)" in page.text
    hidden = form_fields(page.text, "edit.php?action=activelead_network")
    assert hidden["_wpnonce"]
    resp = admin.post("/wp-admin/network/edit.php?action=activelead_network", data={
        **hidden, "api_key": control_api.api_key, "api_url": control_api.url, "network_wide": "1"})
    assert resp.status_code == 302 and "updated=1" in resp.headers["location"]
    saved = ms.eval("return get_site_option('activelead_network_settings');")
    assert saved == {"api_key": control_api.api_key, "api_url": control_api.url, "network_wide": True}
    # A malformed key is refused and nothing is saved; a POST without the nonce is refused.
    resp = admin.post("/wp-admin/network/edit.php?action=activelead_network", data={
        **hidden, "api_key": "not-a-key", "api_url": control_api.url})
    assert "updated=invalid-key" in resp.headers["location"]
    resp = admin.post("/wp-admin/network/edit.php?action=activelead_network", data={
        "api_key": "", "api_url": control_api.url})
    assert resp.status_code == 403
    assert ms.eval("return get_site_option('activelead_network_settings');") == saved
    # A visitor cannot reach the page.
    assert ms.client().get("/wp-admin/network/settings.php?page=activelead-network").status_code == 302


def test_network_key_is_the_default_of_a_site_without_its_own(
        ms: WordPress, control_api: ControlApi, site2_project: tuple[str, str]) -> None:
    set_network(ms, control_api.api_key, control_api.url, network_wide=False)
    assert connection(ms, SITE2) == {"api_key": control_api.api_key, "api_url": control_api.url,
                                     "source": "network"}
    # The site's own key wins when the network key is only a default ...
    set_site_key(ms, SITE2, site2_project[0], control_api.url)
    assert connection(ms, SITE2) == {"api_key": site2_project[0], "api_url": control_api.url, "source": "site"}
    assert connection(ms, "/")["source"] == "network"  # the main site still has none of its own
    # ... and loses when the network admin ticks "use this key on every site".
    set_network(ms, control_api.api_key, control_api.url, network_wide=True)
    assert connection(ms, SITE2)["api_key"] == control_api.api_key


def test_site_settings_page_never_shows_the_network_key(
        ms: WordPress, control_api: ControlApi, site2_project: tuple[str, str]) -> None:
    set_network(ms, control_api.api_key, control_api.url, network_wide=False)
    admin = ms.admin()
    page = admin.get(f"{SITE2}wp-admin/options-general.php?page=activelead")
    assert page.status_code == 200, page.text[:2000]
    assert control_api.api_key not in page.text
    assert "the network&#039;s key is used" in page.text or "the network's key is used" in page.text
    set_network(ms, control_api.api_key, control_api.url, network_wide=True)
    page = admin.get(f"{SITE2}wp-admin/options-general.php?page=activelead").text
    assert "Set by the network administrator" in page and control_api.api_key not in page
    assert 'name="activelead_settings[api_key]"' not in page


def comment_project(ms: WordPress, control_api: ControlApi, path: str, keys: dict[str, str]) -> str:
    """Post a comment on the site at `path`; return the name of the project (from `keys`, name →
    API key) whose events hold its trace."""
    text = f"A comment on {path} [{uuid.uuid4().hex[:10]}]"
    resp = ms.post_comment(ms.client(), "jane.reader@example.org", text, path=path)
    assert resp.status_code == 302, resp.text[:2000]
    comment = ms.comment_by_text(text, path=path)
    assert comment is not None and comment["status"] == "approved"
    assert comment["trace"].startswith("tr_")
    found = [name for name, key in keys.items()
             if control_api.get(f"/v1/events/{comment['trace']}", api_key=key).status_code == 200]
    assert len(found) == 1, found
    return found[0]


def test_sub_site_comment_is_scored_with_the_right_key(
        ms: WordPress, control_api: ControlApi, site2_project: tuple[str, str]) -> None:
    keys = {"network": control_api.api_key, "site2": site2_project[0]}
    # Network key as the default: both sites' comments land in the network's project.
    set_network(ms, control_api.api_key, control_api.url, network_wide=False)
    assert comment_project(ms, control_api, SITE2, keys) == "network"
    # The sub-site's own key: its comments land in its own project, the main site's do not.
    set_site_key(ms, SITE2, site2_project[0], control_api.url)
    assert comment_project(ms, control_api, SITE2, keys) == "site2"
    assert comment_project(ms, control_api, "/", keys) == "network"
    # Network-wide: the network's key again, whatever the sub-site has.
    set_network(ms, control_api.api_key, control_api.url, network_wide=True)
    assert comment_project(ms, control_api, SITE2, keys) == "network"


def test_uninstall_cleans_every_site_and_the_network(
        ms: WordPress, control_api: ControlApi, site2_project: tuple[str, str]) -> None:
    # Last test of the module: it uninstalls the plugin, then network-activates it again.
    set_network(ms, control_api.api_key, control_api.url, network_wide=False)
    set_site_key(ms, SITE2, site2_project[0], control_api.url)
    comment_project(ms, control_api, SITE2, {"site2": site2_project[0]})  # site 2: meta, stats, status
    ms.eval("set_transient('activelead_test_1', array('ok' => true), 300); return true;", path=SITE2)
    try:
        out = uninstall_plugin(ms)
    finally:
        reactivate_plugin(ms)
    assert out["loaded"] is False and out["defined"] is True
    before, after = out["before"], out["after"]
    ours = {k for k in before if ":activelead_" in k or ":_transient_activelead_" in k
            or ":_transient_timeout_activelead_" in k}
    assert {"sitemeta:activelead_network_settings", "site1:activelead_settings", "site2:activelead_settings",
            "site2:activelead_status", "site2:activelead_stats", "site2:_transient_activelead_test_1",
            "site2:commentmeta:activelead_result", "site2:commentmeta:activelead_trace_id"} <= ours
    assert set(before) - set(after) == ours
    assert set(after) - set(before) == set()
    # Network-deactivating and uninstalling touch nothing else (active_sitewide_plugins already
    # lost the plugin in the deactivation, before the first snapshot).
    assert {k for k in after if after[k] != before[k]} == set()


def test_no_php_warnings_or_notices_on_the_network(ms: WordPress) -> None:
    admin = ms.admin()
    for path in ("/wp-admin/network/settings.php?page=activelead-network", "/wp-admin/network/plugins.php",
                 f"{SITE2}wp-admin/index.php", f"{SITE2}wp-admin/options-general.php?page=activelead"):
        assert admin.get(path).status_code == 200, path
    log = ms.debug_log.read_text() if ms.debug_log.exists() else ""
    ours = [line for line in log.splitlines() if "activelead" in line.lower()]
    assert ours == [], "\n".join(ours[:20])
