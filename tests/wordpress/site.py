"""Bring up a real WordPress for the plugin tests: MariaDB, Debian's WordPress 6.1 served by
`php -S`, the plugin installed and activated, pointed at a real control API. Each daemon runs on
127.0.0.1 on a free port and is stopped by its PID (process group: php -S forks workers)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.services import ROOT, free_port, wait_for_port

PLUGIN_SRC = ROOT / "plugins" / "wordpress" / "activelead"
WP_SRC = Path("/usr/share/wordpress")
HERE = Path(__file__).resolve().parent
BROWSER_UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/126.0.0.0 Safari/537.36")
ADMIN_USER = "admin"
ADMIN_PASSWORD = "correct horse battery staple"


def require(exe: str) -> str:
    """The path of a tool the tests need; a missing one fails loudly (never a silent skip)."""
    path = shutil.which(exe) or (f"/usr/sbin/{exe}" if Path(f"/usr/sbin/{exe}").exists() else None)
    if path is None:
        raise RuntimeError(f"{exe} is not installed: run scripts/install-wordpress-deps")
    return path


def spawn(args: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a daemon in its own process group, its output in a log file."""
    with open(log, "wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kwargs)


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    """Stop a daemon started with start_new_session=True: its whole process group, by its PID."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):  # php -S workers outlive their master
        os.killpg(proc.pid, signal.SIGKILL)


@dataclass
class ControlApi:
    """The real Activelead control API as a subprocess, with a demo account, project and key."""

    base: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    api_key: str = ""
    project_id: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "ACTIVELEAD_CONTROL_API__DB": str(self.base / "control.sqlite3"),
            "ACTIVELEAD_CONTROL_API__PORT": str(self.port),
            "ACTIVELEAD_CONTROL_API__HOST": "127.0.0.1",
            "ACTIVELEAD_CONTROL_API__KEY_PEPPER": "wordpress-test-pepper",
            "ACTIVELEAD_CONTROL_API__COOKIE_SECURE": "false",
            "ACTIVELEAD_CONTROL_API__ARGON2_TIME_COST": "1",
            "ACTIVELEAD_CONTROL_API__ARGON2_MEMORY_KIB": "1024",
            "ACTIVELEAD_CONTROL_API__ARGON2_PARALLELISM": "1",
        })
        return env

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        # The demo bootstrap (control_api.cli.bootstrap_demo) creates account, credits, project
        # and API key; run it with the same settings the server will read from the environment.
        boot = subprocess.run(
            [sys.executable, "-c",
             "import json; from control_api.settings import load_settings;"
             "from control_api.cli import bootstrap_demo;"
             "print(json.dumps(bootstrap_demo(load_settings(None))))"],
            cwd=self.base, env=self.env(), capture_output=True, text=True, timeout=60, check=True,
        )
        demo = json.loads(boot.stdout.strip().splitlines()[-1])
        self.api_key, self.project_id = demo["apiKey"], demo["projectId"]
        self.proc = spawn([sys.executable, "-m", "control_api"], self.base / "control_api.log",
                          cwd=self.base, env=self.env())
        wait_for_port(self.port, timeout_s=30)

    def stop(self) -> None:
        stop(self.proc)
        self.proc = None

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, headers={"Authorization": f"Bearer {self.api_key}"}, timeout=10)


@dataclass
class WordPress:
    """A WordPress site in `base`, served by php -S, with its own MariaDB."""

    base: Path
    api: ControlApi
    db_port: int = field(default_factory=free_port)
    port: int = field(default_factory=free_port)
    db_proc: subprocess.Popen[bytes] | None = None
    web_proc: subprocess.Popen[bytes] | None = None

    @property
    def root(self) -> Path:
        return self.base / "wordpress"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def debug_log(self) -> Path:
        return self.base / "php-debug.log"

    def start(self) -> None:
        for exe in ("php", "mariadbd", "mariadb-install-db"):
            require(exe)
        if not (WP_SRC / "wp-load.php").exists():
            raise RuntimeError("Debian's wordpress package is not installed: "
                               "run scripts/install-wordpress-deps")
        self._start_mariadb()
        self._copy_wordpress()
        self._install()
        env = dict(os.environ, PHP_CLI_SERVER_WORKERS="4")
        self.web_proc = spawn([require("php"), "-S", f"127.0.0.1:{self.port}", "-t", str(self.root)],
                              self.base / "php-server.log", cwd=self.root, env=env)
        wait_for_port(self.port, timeout_s=20)

    def stop(self) -> None:
        stop(self.web_proc)
        stop(self.db_proc)

    def _start_mariadb(self) -> None:
        data = self.base / "mariadb"
        subprocess.run(
            [require("mariadb-install-db"), "--no-defaults", "--user=root", f"--datadir={data}",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, capture_output=True, timeout=120,
        )
        # No grant tables: nothing but this test's processes reach 127.0.0.1:port, and it
        # saves creating users. The database lives in a temporary directory.
        self.db_proc = spawn(
            [require("mariadbd"), "--no-defaults", "--user=root", f"--datadir={data}",
             f"--port={self.db_port}", "--bind-address=127.0.0.1", f"--socket={self.base / 'mysql.sock'}",
             "--skip-grant-tables", "--skip-log-bin", "--innodb-buffer-pool-size=64M",
             "--innodb-flush-log-at-trx-commit=0", f"--pid-file={self.base / 'mariadb.pid'}"],
            self.base / "mariadb.log",
        )
        wait_for_port(self.db_port, timeout_s=60)
        subprocess.run(
            [require("mariadb"), "--no-defaults", "-h127.0.0.1", f"-P{self.db_port}", "-uroot",
             "-e", "CREATE DATABASE wordpress CHARACTER SET utf8mb4"],
            check=True, capture_output=True, timeout=30,
        )

    def _copy_wordpress(self) -> None:
        # Debian's tree links wp-config.php and .htaccess into /etc/wordpress: copy the real
        # files and write our own config.
        shutil.copytree(WP_SRC, self.root, symlinks=True,
                        ignore=shutil.ignore_patterns("wp-config.php", ".htaccess", "akismet"))
        shutil.copytree(PLUGIN_SRC, self.root / "wp-content" / "plugins" / "activelead")
        mu = self.root / "wp-content" / "mu-plugins"
        mu.mkdir()
        shutil.copy(HERE / "fixtures" / "activelead-test-helpers.php", mu)
        shutil.copy(HERE / "fixtures" / "activelead-test-snippet.js", self.root)
        (self.root / "wp-content" / "uploads").mkdir()
        (self.root / "wp-config.php").write_text(f"""<?php
define( 'DB_NAME', 'wordpress' );
define( 'DB_USER', 'root' );
define( 'DB_PASSWORD', '' );
define( 'DB_HOST', '127.0.0.1:{self.db_port}' );
define( 'DB_CHARSET', 'utf8mb4' );
define( 'DB_COLLATE', '' );
define( 'AUTH_KEY', 'test-auth' ); define( 'SECURE_AUTH_KEY', 'test-secure-auth' );
define( 'LOGGED_IN_KEY', 'test-logged-in' ); define( 'NONCE_KEY', 'test-nonce' );
define( 'AUTH_SALT', 'test-auth-salt' ); define( 'SECURE_AUTH_SALT', 'test-secure-auth-salt' );
define( 'LOGGED_IN_SALT', 'test-logged-in-salt' ); define( 'NONCE_SALT', 'test-nonce-salt' );
$table_prefix = 'wp_';
define( 'WP_HOME', '{self.url}' );
define( 'WP_SITEURL', '{self.url}' );
define( 'WP_DEBUG', true );
define( 'WP_DEBUG_LOG', '{self.debug_log}' );
define( 'WP_DEBUG_DISPLAY', false );
@ini_set( 'display_errors', '0' );
define( 'DISABLE_WP_CRON', true );
define( 'AUTOMATIC_UPDATER_DISABLED', true );
define( 'WP_HTTP_BLOCK_EXTERNAL', true );
define( 'FS_METHOD', 'direct' );
if ( ! defined( 'ABSPATH' ) ) {{
	define( 'ABSPATH', __DIR__ . '/' );
}}
require_once ABSPATH . 'wp-settings.php';
""")

    def _install(self) -> None:
        out = self.php(HERE / "fixtures" / "install.php", {
            "ACTIVELEAD_TEST_API_URL": self.api.url,
            "ACTIVELEAD_TEST_API_KEY": self.api.api_key,
            "ACTIVELEAD_TEST_ADMIN_PASSWORD": ADMIN_PASSWORD,
        })
        if "installed" not in out:
            raise RuntimeError(f"WordPress install failed: {out}")

    def php(self, script: Path, env: dict[str, str] | None = None, stdin: str = "") -> str:
        """Run a PHP script with WP_DIR set (a script requires wp-load.php itself)."""
        full = dict(os.environ, WP_DIR=str(self.root), HTTP_HOST=f"127.0.0.1:{self.port}", **(env or {}))
        proc = subprocess.run([require("php"), str(script)], input=stdin, env=full, capture_output=True,
                              text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"php {script.name} failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def eval(self, code: str) -> Any:
        """Run PHP code inside WordPress (loaded by wp-load.php); returns its `return` value as JSON."""
        return json.loads(self.php(HERE / "fixtures" / "wp-eval.php", stdin=code))

    def set_settings(self, **changes: Any) -> None:
        self.eval("$s = get_option('activelead_settings'); foreach (json_decode('"
                  + json.dumps(changes).replace("\\", "\\\\").replace("'", "\\'")
                  + "', true) as $k => $v) { $s[$k] = $v; } update_option('activelead_settings', $s);"
                  " delete_option('activelead_status'); return true;")

    def client(self) -> httpx.Client:
        """A visitor: a browser user agent, cookies kept, redirects not followed."""
        return httpx.Client(base_url=self.url, headers={"User-Agent": BROWSER_UA,
                                                         "Accept-Language": "en-GB,en;q=0.9"},
                            timeout=30, follow_redirects=False)

    def admin(self) -> httpx.Client:
        """A client logged in as the administrator."""
        c = self.client()
        c.cookies.set("wordpress_test_cookie", "WP Cookie check")
        r = c.post("/wp-login.php", data={"log": ADMIN_USER, "pwd": ADMIN_PASSWORD,
                                           "wp-submit": "Log In", "testcookie": "1",
                                           "redirect_to": f"{self.url}/wp-admin/"})
        assert r.status_code == 302, r.text[:2000]
        return c

    def post_comment(self, client: httpx.Client, email: str, text: str, author: str = "Jane Reader",
                     extra: dict[str, str] | None = None) -> httpx.Response:
        data = {"comment_post_ID": "1", "author": author, "email": email, "url": "",
                "comment": text, "submit": "Post Comment", "comment_parent": "0"}
        data.update(extra or {})
        return client.post("/wp-comments-post.php", data=data,
                           headers={"Referer": f"{self.url}/?p=1"})

    def comment_by_text(self, text: str) -> dict[str, Any] | None:
        """The comment with this content: id, status and the plugin's stored result."""
        result: dict[str, Any] | None = self.eval(
            "$c = get_comments(array('search' => " + php_str(text) + ", 'status' => 'any', 'number' => 1));"
            "if (!$c) { return null; } $c = $c[0];"
            "return array('id' => (int) $c->comment_ID, 'status' => wp_get_comment_status($c),"
            " 'result' => get_comment_meta($c->comment_ID, 'activelead_result', true),"
            " 'trace' => get_comment_meta($c->comment_ID, 'activelead_trace_id', true),"
            " 'feedback' => get_comment_meta($c->comment_ID, 'activelead_feedback', true));")
        return result


def php_str(value: str) -> str:
    """A PHP single-quoted string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def form_fields(html: str, form_marker: str) -> dict[str, str]:
    """The hidden inputs of the form whose opening tag contains form_marker."""
    start = html.index(form_marker)
    end = html.index("</form>", start)
    fields: dict[str, str] = {}
    for tag in re.findall(r"<input[^>]*>", html[start:end]):
        name = re.search(r"""name=["']([^"']*)["']""", tag)
        value = re.search(r"""value=["']([^"']*)["']""", tag)
        if name and re.search(r"""type=["']hidden["']""", tag):
            fields[name.group(1)] = value.group(1) if value else ""
    return fields


@contextmanager
def blackhole() -> Iterator[str]:
    """A TCP port that accepts connections (kernel backlog) and never answers: a hung service."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def timed(fn: Any) -> tuple[Any, float]:
    t0 = time.monotonic()
    out = fn()
    return out, time.monotonic() - t0
