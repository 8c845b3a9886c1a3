"""Runs after the other WordPress tests (pytest runs files in name order): with WP_DEBUG on
PHP 8.2, the plugin must not have caused a single warning, notice or deprecation."""

from __future__ import annotations

import pytest

from tests.wordpress.site import WordPress

pytestmark = pytest.mark.slow


def test_no_php_warnings_or_notices_from_the_plugin(wp: WordPress) -> None:
    # Exercise the admin pages once more so a fresh run of this file alone still covers them.
    admin = wp.admin()
    for path in ("/wp-admin/index.php", "/wp-admin/options-general.php?page=activelead",
                 "/wp-admin/edit-comments.php", "/wp-admin/plugins.php"):
        assert admin.get(path).status_code == 200
    log = wp.debug_log.read_text() if wp.debug_log.exists() else ""
    # WordPress 6.1's own PHP 8.2 deprecations are expected; anything naming the plugin is not.
    ours = [line for line in log.splitlines() if "plugins/activelead" in line or "activelead" in line.lower()]
    assert ours == [], "\n".join(ours[:20])
