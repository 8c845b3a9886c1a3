"""Config: parsed once, precedence init > env > yaml > defaults, errors name the key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from proxy.settings import ProxySettings, compile_path, compile_sites, load_settings
from rules.config import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "activelead.yaml"
    path.write_text(text)
    return path


SITE = """
sites:
  - id: shop
    hosts: [Shop.Example.]
    origin: http://127.0.0.1:8000/
    forms: [{id: contact, path: "/forms/*"}]
"""


def test_yaml_env_and_init_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "proxy: {port: 1111, admin_port: 2222}\nredis: {url: null}\n" + SITE)
    assert load_settings(path).proxy.port == 1111
    monkeypatch.setenv("ACTIVELEAD_PROXY__PORT", "3333")
    s = load_settings(path)
    assert (s.proxy.port, s.proxy.admin_port) == (3333, 2222)
    assert load_settings(path, proxy={"port": 4444}).proxy.port == 4444
    site = compile_sites(s)["shop.example"]
    assert site.config.origin == "http://127.0.0.1:8000"
    assert site.match("POST", "/forms/a") is not None
    assert site.match("POST", "/forms/a/b") is None
    assert site.match("GET", "/forms/a") is None


@pytest.mark.parametrize(("text", "key"), [
    ("proxy: {port: -1}", "proxy.port"),
    ("proxy: {trusted_proxies: [10.0.0.0/33]}", "proxy.trusted_proxies"),
    ("sites: [{id: a, hosts: [a], origin: 'ftp://x'}]", "sites.0.origin"),
    ("sites: [{id: a, hosts: [a], origin: 'http://x', forms: [{id: f, path: 'nope'}]}]",
     "sites.0.forms.0.path"),
    ("sites: [{id: a, hosts: [a], origin: 'http://x', forms: [{id: f, path: /x, "
     "action: redirect}]}]", "sites.0.forms.0"),
    ("sites: [{id: a, hosts: [a], origin: 'http://x', typo: 1}]", "sites.0.typo"),
    ("sites: [{id: a, hosts: [a], origin: 'http://x'}, {id: b, hosts: [a], origin: 'http://y'}]",
     "sites"),
])
def test_bad_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text))
    assert str(err.value).startswith(f"{tmp_path / 'activelead.yaml'}: {key}")


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_settings(tmp_path / "nope.yaml")


@pytest.mark.parametrize(("pattern", "path", "hit"), [
    ("/contact", "/contact", True),
    ("/contact", "/contact/", False),
    ("/a/**", "/a/b/c", True),
    ("/a/*/c", "/a/b/c", True),
    ("/a/*/c", "/a/b/x/c", False),
    ("re:^/api/v[12]/lead$", "/api/v2/lead", True),
])
def test_path_patterns(pattern: str, path: str, hit: bool) -> None:
    assert bool(compile_path(pattern).match(path)) is hit


def test_every_field_has_a_description() -> None:
    from pydantic import BaseModel

    seen: set[type[BaseModel]] = set()

    def walk(model: type[BaseModel]) -> None:
        if model in seen or model.__module__ != "proxy.settings":
            return
        seen.add(model)
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no description"
            for arg in getattr(info.annotation, "__args__", (info.annotation,)):
                inner = getattr(arg, "__args__", (arg,))
                for t in inner:
                    if isinstance(t, type) and issubclass(t, BaseModel):
                        walk(t)

    walk(ProxySettings)
    assert len(seen) >= 8


def test_cli_refuses_a_bad_config_with_the_key(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.services import ROOT

    path = write(tmp_path, "proxy: {port: 70000}\n")
    result = subprocess.run([sys.executable, "-m", "proxy", "--config", str(path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert f"{path}: proxy.port" in result.stderr


def test_worker_count_resolves_zero_to_one_per_cpu() -> None:
    assert ProxySettings().proxy.worker_count == (os.cpu_count() or 1)
    assert ProxySettings(proxy={"workers": 3}).proxy.worker_count == 3
