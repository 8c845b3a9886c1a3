"""Fixtures for the WordPress plugin tests: one real control API, one MariaDB and one real
WordPress (php -S) for the whole session, plus a multisite WordPress (same MariaDB, its own
database) built only when a multisite test runs; tests restore the settings they change."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.wordpress.site import ControlApi, MariaDb, WordPress


@pytest.fixture(scope="session")
def control_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlApi]:
    api = ControlApi(tmp_path_factory.mktemp("control_api"))
    api.start()
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDb]:
    db = MariaDb(Path(tmp_path_factory.mktemp("mariadb")))
    try:
        db.start()
        yield db
    finally:
        db.stop()


@pytest.fixture(scope="session")
def wordpress(tmp_path_factory: pytest.TempPathFactory, control_api: ControlApi,
              mariadb: MariaDb) -> Iterator[WordPress]:
    site = WordPress(Path(tmp_path_factory.mktemp("wordpress")), control_api, mariadb)
    try:
        site.start()
        yield site
    finally:
        site.stop()


@pytest.fixture(scope="session")
def multisite(tmp_path_factory: pytest.TempPathFactory, control_api: ControlApi,
              mariadb: MariaDb) -> Iterator[WordPress]:
    """A subdirectory multisite network (main site "/", second site "/site2/") with the plugin
    network-activated."""
    site = WordPress(Path(tmp_path_factory.mktemp("multisite")), control_api, mariadb,
                     db_name="wordpress_multisite", multisite=True)
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
        "delete_option('activelead_status'); delete_transient('activelead_credits_checked'); return true;")
    yield wordpress
