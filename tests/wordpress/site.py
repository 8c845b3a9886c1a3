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

    def get(self, path: str, api_key: str | None = None) -> httpx.Response:
        return httpx.get(self.url + path, headers={"Authorization": f"Bearer {api_key or self.api_key}"},
                         timeout=10)

    def grant(self, email: str, amount: int) -> None:
        """Add credits to an account through the operator's entry point behind `activelead credits
        grant` (control_api.cli add_credits_arguments / run_credits). Called directly: the
        `activelead` CLI currently nests it as `activelead credits grant grant`."""
        proc = subprocess.run(
            [sys.executable, "-c",
             "import argparse, sys; from control_api.cli import add_credits_arguments, run_credits;"
             "p = argparse.ArgumentParser(); add_credits_arguments(p);"
             "sys.exit(run_credits(p.parse_args(sys.argv[1:])))",
             "grant", "--account", email, "--amount", str(amount), "--note", "wordpress tests"],
            cwd=self.base, env=self.env(), capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"activelead credits grant failed: {proc.stdout}{proc.stderr}")

    def new_project(self, email: str, credits: int) -> tuple[str, str]:
        """A new account (signed up over HTTP) with `credits` credits, one project and one live
        API key: returns (api_key, project_id)."""
        with httpx.Client(base_url=self.url, timeout=30) as c:
            login = {"email": email, "password": "a long test passphrase"}
            r = c.post("/v1/accounts", json=login)  # sign-up never says if the address is new
            assert r.status_code in (201, 202), r.text
            r = c.post("/v1/session", json=login)
            assert r.status_code == 200, r.text
            csrf = {"X-CSRF-Token": r.json()["csrfToken"]}
            r = c.post("/v1/projects", json={"name": email.split("@")[0]}, headers=csrf)
            assert r.status_code == 201, r.text
            project_id = r.json()["id"]
            r = c.post(f"/v1/projects/{project_id}/keys", json={"name": "wordpress", "kind": "live"},
                       headers=csrf)
            assert r.status_code == 201, r.text
            key = r.json()["key"]
        if credits:
            self.grant(email, credits)
        return key, project_id


@dataclass
class MariaDb:
    """One MariaDB server (no grant tables) in `base`; each WordPress gets its own database."""

    base: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        for exe in ("mariadbd", "mariadb-install-db", "mariadb"):
            require(exe)
        data = self.base / "mariadb"
        subprocess.run(
            [require("mariadb-install-db"), "--no-defaults", "--user=root", f"--datadir={data}",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, capture_output=True, timeout=120,
        )
        # No grant tables: nothing but this test's processes reach 127.0.0.1:port, and it
        # saves creating users. The database lives in a temporary directory.
        self.proc = spawn(
            [require("mariadbd"), "--no-defaults", "--user=root", f"--datadir={data}",
             f"--port={self.port}", "--bind-address=127.0.0.1", f"--socket={self.base / 'mysql.sock'}",
             "--skip-grant-tables", "--skip-log-bin", "--innodb-buffer-pool-size=64M",
             "--innodb-flush-log-at-trx-commit=0", f"--pid-file={self.base / 'mariadb.pid'}"],
            self.base / "mariadb.log",
        )
        wait_for_port(self.port, timeout_s=60)

    def create_database(self, name: str) -> None:
        subprocess.run(
            [require("mariadb"), "--no-defaults", "-h127.0.0.1", f"-P{self.port}", "-uroot",
             "-e", f"CREATE DATABASE {name} CHARACTER SET utf8mb4"],
            check=True, capture_output=True, timeout=30,
        )

    def stop(self) -> None:
        stop(self.proc)
        self.proc = None


@dataclass
class WordPress:
    """A WordPress site in `base`, served by php -S, with its own database in `db`. A multisite
    install (subdirectories) is set up like the network screen does it, without WP-CLI, and is
    served through fixtures/router.php (php -S knows no .htaccess rewrites)."""

    base: Path
    api: ControlApi
    db: MariaDb
    db_name: str = "wordpress"
    multisite: bool = False
    port: int = field(default_factory=free_port)
    web_proc: subprocess.Popen[bytes] | None = None

    @property
    def root(self) -> Path:
        return self.base / "wordpress"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def debug_log(self) -> Path:
        return self.base / "php-debug.log"

    def start(self) -> None:
        require("php")
        if not (WP_SRC / "wp-load.php").exists():
            raise RuntimeError("Debian's wordpress package is not installed: "
                               "run scripts/install-wordpress-deps")
        self.db.create_database(self.db_name)
        self._copy_wordpress()
        self._install()
        if self.multisite:
            self._install_network()
        env = dict(os.environ, PHP_CLI_SERVER_WORKERS="4")
        args = [require("php"), "-S", self.host, "-t", str(self.root)]
        if self.multisite:
            args.append(str(HERE / "fixtures" / "router.php"))
        self.web_proc = spawn(args, self.base / "php-server.log", cwd=self.root, env=env)
        wait_for_port(self.port, timeout_s=20)

    def stop(self) -> None:
        stop(self.web_proc)
        self.web_proc = None

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
define( 'DB_NAME', '{self.db_name}' );
define( 'DB_USER', 'root' );
define( 'DB_PASSWORD', '' );
define( 'DB_HOST', '127.0.0.1:{self.db.port}' );
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
{self._multisite_config()}
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

    def _multisite_config(self) -> str:
        """wp-config.php lines: WP_ALLOW_MULTISITE while the single site is installed, then (once
        the network tables exist) the MULTISITE constants, switched on by a marker file."""
        if not self.multisite:
            return ""
        return f"""define( 'WP_ALLOW_MULTISITE', true );
if ( file_exists( __DIR__ . '/.network-installed' ) ) {{
	define( 'MULTISITE', true );
	define( 'SUBDOMAIN_INSTALL', false );
	define( 'DOMAIN_CURRENT_SITE', '{self.host}' );
	define( 'PATH_CURRENT_SITE', '/' );
	define( 'SITE_ID_CURRENT_SITE', 1 );
	define( 'BLOG_ID_CURRENT_SITE', 1 );
}}"""

    def _install_network(self) -> None:
        out = self.php(HERE / "fixtures" / "install-network.php", {"ACTIVELEAD_TEST_DOMAIN": self.host})
        if "network tables" not in out:
            raise RuntimeError(f"network install failed: {out}")
        (self.root / ".network-installed").touch()
        out = self.php(HERE / "fixtures" / "install-network-sites.php", {"ACTIVELEAD_TEST_STEP": "activate"})
        if "network-activated" not in out:
            raise RuntimeError(f"network activation failed: {out}")
        out = self.php(HERE / "fixtures" / "install-network-sites.php", {"ACTIVELEAD_TEST_STEP": "sites"})
        if "sites [1,2]" not in out:
            raise RuntimeError(f"network set-up failed: {out}")

    def php(self, script: Path, env: dict[str, str] | None = None, stdin: str = "",
            path: str = "/") -> str:
        """Run a PHP script with WP_DIR set (a script requires wp-load.php itself); `path` is the
        request path WordPress sees (on multisite it picks the site, e.g. "/site2/")."""
        full = dict(os.environ, WP_DIR=str(self.root), HTTP_HOST=self.host, WP_REQUEST_URI=path, **(env or {}))
        proc = subprocess.run([require("php"), str(script)], input=stdin, env=full, capture_output=True,
                              text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"php {script.name} failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def eval(self, code: str, path: str = "/") -> Any:
        """Run PHP code inside WordPress (loaded by wp-load.php); returns its `return` value as JSON.
        On multisite, `path` picks the site ("/site2/")."""
        return json.loads(self.php(HERE / "fixtures" / "wp-eval.php", stdin=code, path=path))

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
                     extra: dict[str, str] | None = None, path: str = "/") -> httpx.Response:
        """Post a comment on post 1 of the site at `path` ("/site2/" on the multisite)."""
        data = {"comment_post_ID": "1", "author": author, "email": email, "url": "",
                "comment": text, "submit": "Post Comment", "comment_parent": "0"}
        data.update(extra or {})
        return client.post(f"{path}wp-comments-post.php", data=data,
                           headers={"Referer": f"{self.url}{path}?p=1"})

    def comment_by_text(self, text: str, path: str = "/") -> dict[str, Any] | None:
        """The comment with this content: id, status and the plugin's stored result."""
        result: dict[str, Any] | None = self.eval(
            "$c = get_comments(array('search' => " + php_str(text) + ", 'status' => 'any', 'number' => 1));"
            "if (!$c) { return null; } $c = $c[0];"
            "return array('id' => (int) $c->comment_ID, 'status' => wp_get_comment_status($c),"
            " 'result' => get_comment_meta($c->comment_ID, 'activelead_result', true),"
            " 'trace' => get_comment_meta($c->comment_ID, 'activelead_trace_id', true),"
            " 'feedback' => get_comment_meta($c->comment_ID, 'activelead_feedback', true));", path=path)
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


# Everything the plugin could leave behind, as one flat dict: every option of every site
# ("site<id>:<name>" → value), the comment-meta keys of every site ("site<id>:commentmeta:<key>" →
# count), user-meta keys ("usermeta:<key>" → count) and, on multisite, network options
# ("sitemeta:<key>" → value).
SNAPSHOT_PHP = """
$activelead_snapshot = function () {
    global $wpdb;
    $out = array();
    $ids = is_multisite() ? get_sites(array('fields' => 'ids', 'number' => 0)) : array(get_current_blog_id());
    foreach ($ids as $id) {
        if (is_multisite()) { switch_to_blog($id); }
        foreach ($wpdb->get_results("SELECT option_name, option_value FROM {$wpdb->options}", ARRAY_A) as $row) {
            $out["site$id:" . $row['option_name']] = $row['option_value'];
        }
        foreach ($wpdb->get_results("SELECT meta_key, COUNT(*) AS n FROM {$wpdb->commentmeta} GROUP BY meta_key", ARRAY_A) as $row) {
            $out["site$id:commentmeta:" . $row['meta_key']] = $row['n'];
        }
        if (is_multisite()) { restore_current_blog(); }
    }
    foreach ($wpdb->get_results("SELECT meta_key, COUNT(*) AS n FROM {$wpdb->usermeta} GROUP BY meta_key", ARRAY_A) as $row) {
        $out['usermeta:' . $row['meta_key']] = $row['n'];
    }
    if (is_multisite()) {
        foreach ($wpdb->get_results("SELECT meta_key, meta_value FROM {$wpdb->sitemeta}", ARRAY_A) as $row) {
            $out['sitemeta:' . $row['meta_key']] = $row['meta_value'];
        }
    }
    return $out;
};
"""


def uninstall_plugin(site: WordPress) -> dict[str, Any]:
    """Uninstall the plugin the way Plugins → Delete does: deactivate it (network-wide on
    multisite) in one request, then, in a new one without the plugin loaded, uninstall_plugin()
    (which defines WP_UNINSTALL_PLUGIN and includes uninstall.php). Returns the snapshots taken
    right before and after uninstall.php, and whether the plugin was loaded then. The caller
    re-activates the plugin (reactivate_plugin)."""
    site.eval("require_once ABSPATH . 'wp-admin/includes/plugin.php';"
              "deactivate_plugins('activelead/activelead.php', false, is_multisite()); return true;")
    result: dict[str, Any] = site.eval(
        SNAPSHOT_PHP + "require_once ABSPATH . 'wp-admin/includes/plugin.php';"
        "$loaded = class_exists('Activelead', false);"
        "$before = $activelead_snapshot(); uninstall_plugin('activelead/activelead.php');"
        "return array('loaded' => $loaded, 'defined' => defined('WP_UNINSTALL_PLUGIN'),"
        " 'before' => $before, 'after' => $activelead_snapshot());")
    return result


def reactivate_plugin(site: WordPress) -> None:
    ok = site.eval("require_once ABSPATH . 'wp-admin/includes/plugin.php';"
                   "return activate_plugin('activelead/activelead.php', '', is_multisite()) === null;")
    if ok is not True:
        raise RuntimeError("could not re-activate the plugin after uninstalling it")
