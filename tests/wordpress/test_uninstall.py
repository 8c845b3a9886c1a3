"""uninstall.php, run the way WordPress runs it (deactivate, then uninstall_plugin() in a request
without the plugin loaded): every activelead_ option, transient, comment meta and user meta is
gone, and nothing else changed. The multisite case (every site + the network option) is in
test_multisite.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.wordpress.site import WordPress, reactivate_plugin, uninstall_plugin

pytestmark = pytest.mark.slow


@pytest.fixture
def seeded(wp: WordPress) -> Iterator[WordPress]:
    """The site with every kind of data the plugin stores, then re-activated after the test."""
    text = f"A comment before the uninstall [{uuid.uuid4().hex[:8]}]"
    wp.post_comment(wp.client(), "jane.reader@example.org", text)  # comment meta, stats
    comment = wp.comment_by_text(text)
    assert comment is not None and comment["trace"]
    wp.eval(
        f"update_comment_meta({comment['id']}, 'other_plugin_note', 'keep me');"  # not ours: kept
        "(new Activelead_Client())->credits();"  # activelead_status
        "set_transient('activelead_test_1', array('ok' => true), 300);"  # "Test connection" result
        "set_transient('activelead_credits_checked', 'x', 3600);"
        "update_user_meta(1, 'activelead_result', array('decision' => 'allowed'));"  # a registration's
        "update_option('activeleadish_other_plugin', 'keep me'); return true;")
    try:
        yield wp
    finally:
        reactivate_plugin(wp)
        wp.eval("delete_option('activeleadish_other_plugin');"
                "foreach (get_comments(array('meta_key' => 'other_plugin_note')) as $c)"
                " { delete_comment_meta($c->comment_ID, 'other_plugin_note'); } return true;")


def test_uninstall_removes_its_data_and_nothing_else(seeded: WordPress) -> None:
    out = uninstall_plugin(seeded)
    assert out["loaded"] is False and out["defined"] is True
    before, after = out["before"], out["after"]
    ours = {k for k in before if ":activelead_" in k or ":_transient_activelead_" in k
            or ":_transient_timeout_activelead_" in k or k.startswith("usermeta:activelead_")}
    assert {"site1:activelead_settings", "site1:activelead_status", "site1:activelead_stats",
            "site1:_transient_activelead_test_1", "site1:_transient_timeout_activelead_test_1",
            "site1:_transient_activelead_credits_checked", "site1:commentmeta:activelead_result",
            "site1:commentmeta:activelead_trace_id", "usermeta:activelead_result"} <= ours
    assert set(before) - set(after) == ours  # all of ours removed ...
    assert set(after) - set(before) == set()
    changed = {k for k in after if after[k] != before[k]}
    assert changed == set(), changed  # ... and nothing else touched
    assert after["site1:activeleadish_other_plugin"] == "keep me"
    assert after["site1:commentmeta:other_plugin_note"] == "1"
