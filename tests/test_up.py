"""`activelead up --check`: the whole stack on embedded defaults, as a user starts it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import ROOT, free_port


@pytest.mark.slow
def test_up_runs_the_stack_and_a_submission_reaches_every_piece(tmp_path: Path) -> None:
    state = tmp_path / "state"
    argv = [sys.executable, "-m", "activelead", "up", "--check", "--state-dir", str(state),
            "--proxy-port", str(free_port()), "--api-port", str(free_port()),
            "--origin-port", str(free_port()), "--admin-port", str(free_port())]
    first = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=120,
                           check=False)
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    assert "API key:         al_live_" in out  # shown once, on first start
    assert "person-like POST: 200 decision=allowed" in out
    assert "bot POST (no token, script UA): 403 decision=blocked" in out
    assert "control API: 2 new event(s) recorded" in out and "credits 1000 -> 998" in out
    secrets_line = next(line for line in out.splitlines() if "API key:" in line)
    api_key = secrets_line.split()[-1]
    stack_json = state / "stack.json"
    stack = json.loads(stack_json.read_text())
    assert stack["apiKey"] == api_key and stack["edgeToken"].startswith("al_edge_")
    assert set(stack) >= {"proxyUrl", "controlApiUrl", "demoFormUrl", "apiKey", "edgeToken",
                          "account"}
    assert stack_json.stat().st_mode & 0o077 == 0  # readable by the owner only
    # the API key is in stack.json (for scripts, as the issue asks) and nowhere else: not in
    # the database (only its hash), not in logs, not in the generated config
    for path in state.rglob("*"):
        if path.is_file() and path != stack_json:
            assert api_key.encode() not in path.read_bytes(), path
    again = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=120,
                           check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "API key:" not in again.stdout  # not shown a second time
    assert "credits 998 -> 996" in again.stdout  # same tenant, state kept across restarts
