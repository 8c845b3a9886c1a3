"""The `activelead` command run as a real subprocess: score, rules, doctor, data update, up."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.services import ROOT

CLI = [sys.executable, "-m", "activelead"]


def run(*args: str, stdin: str | bytes | None = None, cwd: Path = ROOT,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    return subprocess.run([*CLI, *args], input=data, capture_output=True, cwd=cwd, timeout=60,
                          env=env, check=False)


def test_score_keeps_order_and_reports_bad_lines() -> None:
    lines = "\n".join([
        json.dumps({"leadId": "a", "email": "jane@example.org",
                    "userAgent": "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Firefox/127.0"}),
        "{not json",
        json.dumps({"email": 42}),
        "",
        json.dumps({"leadId": "b", "email": "activelead-test-block@example.com"}),
        "\xff\xfe garbage",
    ])
    result = run("score", stdin=lines.encode("utf-8", "surrogateescape"))
    assert result.returncode == 1
    out = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [o.get("decision") or o["error"] for o in out] == [
        "allowed", "invalid_json", "invalid_submission", "blocked", "invalid_json"]
    assert out[1]["line"] == 2 and out[2]["errors"] == {"email": "must be a string"}
    assert out[4]["line"] == 6
    assert b"3 line(s) could not be scored" in result.stderr


def test_score_file_all_good_exits_zero(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"email": "jane@example.org"}) + "\n")
    result = run("score", str(path))
    assert result.returncode == 0 and json.loads(result.stdout)["decision"] == "allowed"


def test_score_with_bad_config_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "activelead.yaml"
    config.write_text("scoring:\n  thresholds:\n    block: 500\n")
    result = run("score", "--config", str(config), stdin="")
    assert result.returncode == 2
    assert f"{config}: scoring.thresholds.block: Input should be less than or equal to 100" in (
        result.stderr.decode())


@pytest.mark.parametrize("content", ["scoring: [1, 2", "- a list\n", "\xff\xfe"])
def test_malformed_config_files_fail_clearly(tmp_path: Path, content: str) -> None:
    config = tmp_path / "activelead.yaml"
    config.write_bytes(content.encode("latin-1"))
    result = run("score", "--config", str(config), stdin="")
    assert result.returncode == 2 and str(config) in result.stderr.decode()


def test_rules_test_lint_and_doctor() -> None:
    tested = run("rules", "test")
    assert tested.returncode == 0 and b"0 failed" in tested.stdout
    assert run("rules", "lint").stdout.strip().endswith(b"0 problem(s)")
    doctor = run("doctor")
    assert doctor.returncode == 0
    for name in (b"disposable-email-domains", b"crawler-user-agents", b"tor_exits.txt"):
        assert name in doctor.stdout


class _Publisher(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self) -> None:
        body = self.files.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def publisher() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Publisher)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_data_update_from_local_publisher(tmp_path: Path, publisher: str) -> None:
    _Publisher.files = {
        "/tor": b"1.2.3.4\n5.6.7.8\n",
        "/aws": json.dumps({"prefixes": [{"ip_prefix": "1.1.0.0/16"}],
                            "ipv6_prefixes": [{"ipv6_prefix": "2600:1f00::/24"}]}).encode(),
        "/bad": b"{not json",
    }
    data_dir = tmp_path / "data"
    result = run("data", "update", "--dir", str(data_dir), "--only", "tor", "--only", "aws",
                 "--only", "oracle", "--source", f"tor={publisher}/tor",
                 "--source", f"aws={publisher}/aws", "--source", f"oracle={publisher}/bad",
                 "--timeout", "5")
    assert result.returncode == 1  # oracle failed, and says so
    assert b"oracle: FAILED" in result.stdout and b"tor: 2 entries" in result.stdout
    tor = (data_dir / "tor_exits.txt").read_text()
    assert tor.splitlines()[-2:] == ["1.2.3.4", "5.6.7.8"] and "# date: " in tor
    cloud = (data_dir / "cloud_ranges.txt").read_text().splitlines()
    assert cloud[-2:] == ["aws 1.1.0.0/16", "aws 2600:1f00::/24"]
    # the refreshed files are what the engine now uses
    env = {"ACTIVELEAD_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin"}
    scored = run("score", stdin=json.dumps({"ip": "1.2.3.4"}), env=env)
    assert "tor_exit" in json.loads(scored.stdout)["labels"]
    scored = run("score", stdin=json.dumps({"ip": "1.1.5.5"}), env=env)
    assert "datacenter_ip" in json.loads(scored.stdout)["labels"]


def test_corrupt_data_file_fails_loudly_at_startup(tmp_path: Path) -> None:
    (tmp_path / "tor_exits.txt").write_text("# date: x\n1.2.3.4\nnot-an-ip\n")
    env = {"ACTIVELEAD_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = run("score", stdin="{}", env=env)
    assert result.returncode == 2
    assert f"{tmp_path}/tor_exits.txt: entry 2 'not-an-ip'" in result.stderr.decode()


def test_oversized_config_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "activelead.yaml"
    config.write_text("# " + "x" * (5 * 1024 * 1024))
    result = run("score", "--config", str(config), stdin="")
    assert result.returncode == 2 and b"over 4194304" in result.stderr


def test_credits_grant_is_reachable_as_documented() -> None:
    result = run("credits", "grant", "--help")
    assert result.returncode == 0 and b"--account" in result.stdout and b"--amount" in result.stdout
