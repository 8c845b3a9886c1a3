"""The snippet's own unit tests (vitest + jsdom, plugins/js-snippet/test/) and its size budget.

scripts/build-snippet --test installs the pinned tools (`npm ci`, only when the lock file
changed), builds (failing over 4 KB min+gzip) and runs vitest; CI judges it by the exit code.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.services import ROOT

pytestmark = pytest.mark.slow


def test_vitest_and_build() -> None:
    if shutil.which("npm") is None:
        pytest.fail("npm is not installed: the snippet's unit tests need Node.js >= 20.19")
    run = subprocess.run([str(ROOT / "scripts" / "build-snippet"), "--test"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "bytes gzipped (budget 4096)" in run.stdout
