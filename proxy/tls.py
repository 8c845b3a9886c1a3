"""TLS termination: one certificate per site chosen by SNI, reloaded when the files change."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from proxy.settings import ProxySettings

log = logging.getLogger("activelead.proxy.tls")


class TlsConfigError(Exception):
    """A site's certificate or key cannot be loaded; names the site and the file."""


def _load(cert: Path, key: Path, site: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"site {site!r}: cannot load {cert} / {key}: {exc}") from exc
    return ctx


class SniContexts:
    """Holds a context per host; the listening context only dispatches by server name."""

    def __init__(self, settings: ProxySettings) -> None:
        self._sites = [(s.id, s.hosts, s.tls) for s in settings.sites if s.tls is not None]
        if not self._sites:
            raise TlsConfigError("tls_port is set but no site has a `tls:` section")
        self._by_host: dict[str, ssl.SSLContext] = {}
        self._stamps: dict[str, tuple[float, float]] = {}
        self.reload(force=True)
        self.listener = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        first = self._sites[0][2]
        assert first is not None
        # The listener needs some certificate of its own for clients without SNI.
        self.listener.load_cert_chain(str(first.cert_file), str(first.key_file))
        self.listener.minimum_version = ssl.TLSVersion.TLSv1_2
        self.listener.set_alpn_protocols(["http/1.1"])
        self.listener.sni_callback = self._pick

    def _pick(self, sslobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        if server_name:
            ctx = self._by_host.get(server_name.lower().rstrip("."))
            if ctx is not None:
                sslobj.context = ctx
        return None

    def reload(self, force: bool = False) -> bool:
        """Re-read certificates whose files changed; a broken new file keeps the old one."""
        changed = False
        for site_id, hosts, tls in self._sites:
            assert tls is not None
            try:
                stamp = (tls.cert_file.stat().st_mtime, tls.key_file.stat().st_mtime)
            except OSError as exc:
                if force:
                    raise TlsConfigError(f"site {site_id!r}: {exc}") from exc
                log.error("site %s: certificate unreadable, keeping the loaded one: %s",
                          site_id, exc)
                continue
            if not force and self._stamps.get(site_id) == stamp:
                continue
            try:
                ctx = _load(tls.cert_file, tls.key_file, site_id)
            except TlsConfigError as exc:
                if force:
                    raise
                log.error("%s; keeping the loaded certificate", exc)
                continue
            for host in hosts:
                self._by_host[host] = ctx
            self._stamps[site_id] = stamp
            changed = True
            if not force:
                log.info("site %s: certificate reloaded", site_id)
        return changed
