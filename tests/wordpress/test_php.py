"""PHP-side checks of the plugin: php -l on every file, PHP_CodeSniffer, and the PHPUnit suite
(bootstrapped with the real WordPress's wp-load.php and the real control API)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.wordpress.site import HERE, PLUGIN_SRC, WordPress, require

PHP_FILES = sorted(PLUGIN_SRC.rglob("*.php"))


def test_plugin_has_php_files() -> None:
    assert len(PHP_FILES) >= 10


@pytest.mark.parametrize("path", PHP_FILES, ids=lambda p: str(p.relative_to(PLUGIN_SRC)))
def test_php_lint(path: Path) -> None:
    proc = subprocess.run([require("php"), "-l", str(path)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_phpcs() -> None:
    """WordPress Coding Standards (WPCS) come from Composer, which is unreachable here; this runs
    Debian's phpcs with the generic sniffs that match WordPress style (phpcs.xml.dist)."""
    ruleset = PLUGIN_SRC.parent / "phpcs.xml.dist"
    proc = subprocess.run([require("phpcs"), f"--standard={ruleset}", "-q", "--report=full", str(PLUGIN_SRC)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_phpunit(wp: WordPress) -> None:
    env = dict(os.environ, WP_DIR=str(wp.root), HTTP_HOST=f"127.0.0.1:{wp.port}")
    proc = subprocess.run([require("phpunit"), "-c", str(HERE / "phpunit" / "phpunit.xml")], env=env,
                          capture_output=True, text=True, timeout=300, cwd=HERE / "phpunit")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "OK (" in proc.stdout
