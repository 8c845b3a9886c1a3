"""Fixtures for the WordPress plugin tests: one real control API and one real WordPress (with
MariaDB and php -S) for the whole session; tests restore the settings they change."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.wordpress.site import ControlApi, WordPress


@pytest.fixture(scope="session")
def control_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlApi]:
    api = ControlApi(tmp_path_factory.mktemp("control_api"))
    api.start()
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture(scope="session")
def wordpress(tmp_path_factory: pytest.TempPathFactory, control_api: ControlApi) -> Iterator[WordPress]:
    site = WordPress(Path(tmp_path_factory.mktemp("wordpress")), control_api)
    try:
        site.start()
        yield site
    finally:
        site.stop()


@pytest.fixture
def wp(wordpress: WordPress, control_api: ControlApi) -> Iterator[WordPress]:
    """The site with the plugin's default settings (tests change them freely)."""
    wordpress.eval(
        "update_option('activelead_settings', array_merge(Activelead_Settings::defaults(), array("
        f"'api_url' => '{control_api.url}', 'api_key' => '{control_api.api_key}')));"
        "delete_option('activelead_status'); return true;")
    yield wordpress
