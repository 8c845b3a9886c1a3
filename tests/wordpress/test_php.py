"""PHP-side checks of the plugin: php -l on every file, PHP_CodeSniffer, the translation template
(languages/activelead.pot, text domain), and the PHPUnit suite (bootstrapped with the real
WordPress's wp-load.php and the real control API)."""

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


POT = PLUGIN_SRC / "languages" / "activelead.pot"


def pot_body(text: str) -> str:
    """A .pot without its creation date (the only line that changes from run to run)."""
    return "\n".join(line for line in text.splitlines() if not line.startswith('"POT-Creation-Date:'))


def test_pot_is_generated_from_the_current_strings(tmp_path: Path) -> None:
    fresh = tmp_path / "activelead.pot"
    proc = subprocess.run([str(PLUGIN_SRC.parent / "make-pot"), str(fresh)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert pot_body(fresh.read_text()) == pot_body(POT.read_text()), \
        "languages/activelead.pot is out of date: run plugins/wordpress/make-pot"
    check = subprocess.run([require("msgfmt"), "--check-format", "--check-header", "-o", "/dev/null", str(POT)],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    text = POT.read_text()
    for msgid in ("Your submission looks like spam and was not accepted.",  # __() in a class
                  "Leave this field empty",  # esc_html__()
                  "Activelead (network)",  # esc_html_e() in a view
                  "This login attempt looks automated",  # with an escaped quote
                  "Scores comments, registrations, logins"):  # the plugin header's Description
        assert f'msgid "{msgid}' in text, msgid
    assert "#. translators: %s: the last error." in text


def test_every_string_uses_the_activelead_text_domain() -> None:
    proc = subprocess.run([require("php"), str(HERE / "fixtures" / "check-text-domain.php"),
                           *map(str, PHP_FILES)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert int(proc.stdout.split()[0]) >= 80  # it did find the calls
