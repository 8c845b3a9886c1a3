"""A tiny origin site for `activelead up`: one page with a contact form, no JavaScript of its own.

It stands in for the customer's own site behind the proxy, and shows what reached it: the
`X-Activelead-*` headers the proxy added to the forwarded submission. The proxy adds the rest to
the page on its way out: the render token, the honeypot and the JS snippet's tag with the demo
project's site key (`data-site="pk_…"`), as it would for a customer's unchanged site.
"""

from __future__ import annotations

import html

from aiohttp import web

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Demo shop - contact</title></head>
<body>
<h1>Contact us</h1>
<form method="post" action="/contact">
  <label>Name <input name="name" autocomplete="name"></label><br>
  <label>E-mail <input name="email" type="email" autocomplete="email"></label><br>
  <label>Message <textarea name="message"></textarea></label><br>
  <button type="submit">Send</button>
</form>
</body></html>
"""


async def index(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


async def contact(request: web.Request) -> web.Response:
    form = await request.post()
    results = {k: v for k, v in request.headers.items() if k.lower().startswith("x-activelead-")}
    rows = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in results.items())
    name = html.escape(str(form.get("name", "")))
    body = (f"<!doctype html><title>Thanks</title><h1>Thanks {name}!</h1>"
            f"<p>The origin received your message with:</p><ul>{rows}</ul>")
    return web.Response(text=body, content_type="text/html")


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_post("/contact", contact)
    return app


if __name__ == "__main__":
    import sys

    web.run_app(create_app(), host="127.0.0.1", port=int(sys.argv[1]), print=None)
