"""Render protection: put a signed token and a honeypot into each protected <form> of a page.

Works on the decoded HTML with one compiled regex over form start tags (no DOM, no per-request
compilation); compressed bodies are decoded and re-encoded with the same coding.
"""

from __future__ import annotations

import gzip
import html
import re
import zlib
from collections.abc import Mapping
from urllib.parse import urljoin, urlsplit

from proxy.settings import Site
from proxy.tokens import TOKEN_FIELD, TokenSigner

try:  # brotli is optional: without it, br-encoded pages are passed on unchanged
    import brotli as _brotli  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover
    _brotli = None

_FORM_TAG = re.compile(rb"<form\b[^>]*>", re.IGNORECASE)
_ATTR = re.compile(
    rb"""([a-zA-Z_:][-a-zA-Z0-9_:.]*)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+))"""
)
_CHARSET = re.compile(r"charset=([\w.:-]+)", re.IGNORECASE)
_BODY_END = re.compile(rb"</body\s*>", re.IGNORECASE)

# Off-screen rather than display:none (some bots skip hidden inputs); the data-* attributes tell
# 1Password, LastPass, Bitwarden and Dashlane not to autofill it, so people never trip it.
_HONEYPOT = (
    '<div style="position:absolute!important;left:-10000px;top:auto;width:1px;height:1px;'
    'overflow:hidden" aria-hidden="true"><input type="text" name="{name}" value="" '
    'tabindex="-1" autocomplete="off" data-1p-ignore data-lpignore="true" '
    'data-bwignore="true" data-form-type="other"></div>'
)

CODINGS = {"", "identity", "gzip", "x-gzip", "deflate"} | ({"br"} if _brotli else set())


class RenderError(Exception):
    """The body could not be decoded as its Content-Encoding says; it is passed on unchanged."""


def decode(body: bytes, coding: str, limit: int) -> bytes | None:
    """The page `body` decodes to, or None when that is more than `limit` bytes. Never inflates
    past the limit: 2 MiB of gzip can hold 2 GB of spaces (a decompression bomb, or merely a
    huge page), and a page that size is passed on as it came. RenderError when the body does
    not decode as its coding says (corrupt or cut short)."""
    try:
        if coding in ("gzip", "x-gzip"):
            return _inflate(body, 16 + zlib.MAX_WBITS, limit)
        if coding == "deflate":
            try:
                return _inflate(body, zlib.MAX_WBITS, limit)
            except zlib.error:  # some servers send raw deflate without the zlib wrapper
                return _inflate(body, -zlib.MAX_WBITS, limit)
        if coding == "br" and _brotli is not None:
            unbrotli = _brotli.Decompressor()
            page = bytes(unbrotli.process(body, output_buffer_limit=limit + 1))
            if len(page) > limit:
                return None
            if not unbrotli.is_finished():
                raise RenderError("cannot decode br body: cut short")
            return page
    except RenderError:
        raise
    except Exception as exc:  # zlib.error, brotli.error: whatever the codec says is broken
        raise RenderError(f"cannot decode {coding} body: {exc}") from exc
    return body if len(body) <= limit else None


def _inflate(data: bytes, wbits: int, limit: int) -> bytes | None:
    """zlib, raw deflate or gzip (all members) of `data`, or None past `limit` bytes."""
    out = bytearray()
    while True:
        inflater = zlib.decompressobj(wbits)
        out += inflater.decompress(data, limit + 1 - len(out))
        if len(out) > limit:
            return None
        if not inflater.eof:
            raise RenderError("cannot decode body: cut short")
        data = inflater.unused_data
        if wbits < 16 + zlib.MAX_WBITS or not data.startswith(b"\x1f\x8b"):
            return bytes(out)  # anything after the (last) member is ignored, as gzip does


def encode(body: bytes, coding: str) -> bytes:
    if coding in ("gzip", "x-gzip"):
        return gzip.compress(body, compresslevel=5)
    if coding == "deflate":
        return zlib.compress(body, 5)
    if coding == "br" and _brotli is not None:
        return bytes(_brotli.compress(body, quality=5))
    return body


def _attrs(tag: bytes) -> dict[str, str]:
    out = {}
    for m in _ATTR.finditer(tag):
        value = m.group(2) if m.group(2) is not None else (m.group(3) or m.group(4) or b"")
        out[m.group(1).decode("ascii", "replace").lower()] = html.unescape(
            value.decode("utf-8", "replace")
        )
    return out


_OWN_SNIPPET = b"/__activelead/activelead."


def inject(
    page: bytes, *, site: Site, signer: TokenSigner, page_path: str, snippet_src: str | None = None,
    snippet_site: str = "",
) -> tuple[bytes, int]:
    """Return the page with protection added and how many forms were protected.

    With `snippet_src`, the snippet's tag (with `data-site` when `snippet_site` is given) goes
    before </body>, unless the page already loads the snippet itself.
    """
    count = 0
    honeypot = _HONEYPOT.format(name=html.escape(site.honeypot)).encode()

    def add(m: re.Match[bytes]) -> bytes:
        nonlocal count
        attrs = _attrs(m.group(0))
        if attrs.get("method", "get").lower() != "post":
            return m.group(0)
        action = urlsplit(urljoin(page_path, attrs.get("action") or page_path))
        if action.netloc and action.netloc.lower() not in site.config.hosts:
            return m.group(0)  # posts to another host: not ours to protect
        path = action.path or "/"
        if site.match_action(path) is None:
            return m.group(0)
        token = signer.sign(site.id, path, site.honeypot)
        count += 1
        return (
            m.group(0)
            + f'<input type="hidden" name="{TOKEN_FIELD}" value="{token}">'.encode()
            + honeypot
        )

    out = _FORM_TAG.sub(add, page)
    if snippet_src and count and snippet_src.encode() not in page and _OWN_SNIPPET not in page:
        data = f' data-site="{html.escape(snippet_site)}"' if snippet_site else ""
        script = f'<script src="{html.escape(snippet_src)}"{data} async></script>'.encode()
        out, n = _BODY_END.subn(lambda m: script + m.group(0), out, count=1)
        if not n:
            out += script
    return out, count


def renderable(site: Site, method: str, status: int, headers: Mapping[str, str]) -> bool:
    """Whether an origin answer gets render protection. `headers` answers lower-case names
    (a CIMultiDict, or a dict built with lower-case keys)."""
    if not site.render_enabled or method != "GET" or status != 200:
        return False
    if "content-range" in headers or "no-transform" in headers.get("cache-control", "").lower():
        return False
    if headers.get("x-accel-buffering", "").lower() == "no":  # the origin streams it (nginx's
        return False                                          # convention): never held
    length = headers.get("content-length", "")
    if length.isdigit() and int(length) > site.config.render.max_html_bytes:
        return False
    return wants_render(headers.get("content-type", ""), headers.get("content-encoding", ""))


def wants_render(content_type: str, coding: str) -> bool:
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype not in ("text/html", "application/xhtml+xml"):
        return False
    charset = _CHARSET.search(content_type)
    # The form tags we look for are ASCII; any ASCII-compatible charset is safe to edit as bytes.
    if charset and charset.group(1).lower().replace("-", "") in ("utf16", "utf32", "utf16le",
                                                                  "utf16be"):
        return False
    return coding.lower() in CODINGS


def protect_page(body: bytes, coding: str, *, site: Site, signer: TokenSigner,
                 page_path: str) -> bytes | None:
    """The whole (possibly compressed) page with its protected forms marked, or None when
    nothing was added. RenderError when the body does not decode as its coding says."""
    page = decode(body, coding, site.config.render.max_html_bytes)
    if page is None:
        return None
    page, count = inject(
        page, site=site, signer=signer, page_path=page_path, snippet_src=site.snippet_src,
        snippet_site=site.config.snippet.site_key,
    )
    return encode(page, coding) if count else None


def rendered_etag(etag: str | None) -> str | None:
    """A strong ETag of the origin's page, weakened: the rendered bytes differ per visitor."""
    return "W/" + etag if etag and not etag.startswith("W/") else etag
