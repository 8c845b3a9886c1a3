"""What the visitor gets when a review-band post is held for a step-up (proxy/stages/stepup.py).

* A form post from a page (a navigation) gets a small HTML page: the step-up challenge and the
  post's own fields as JSON data, and the step-up script (`/__activelead/stepup.<hash>.js`, built
  from plugins/js-snippet/src/stepup.js) that solves the proof-of-work and posts the fields again,
  with the token, to the same URL. Without JavaScript the page says what to do.
* An AJAX post gets a 428 JSON answer that the snippet's `activelead.stepUp(answer, form)` turns
  into the fields and header for the retry.

Pure functions, no I/O: every value from the post is escaped for where it goes (JSON inside a
script element, text inside HTML).
"""

from __future__ import annotations

import json

from rules.challenge import FIELD, HEADER, Challenge

# The page only runs our script and a blob: Web Worker; it loads and frames nothing else. No
# form-action: an origin that redirects the re-post to another host must keep working.
CSP = ("default-src 'none'; script-src 'self'; worker-src blob:; style-src 'unsafe-inline'; "
       "base-uri 'none'; frame-ancestors 'none'")
DATA_ID = "activelead-stepup-data"
BUDGET_MS = 60_000  # the interstitial has nothing else to do: a slow phone may take its time

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><meta name="robots" content="noindex">
<title>One moment</title>
<style>body{{font:17px/1.5 system-ui,sans-serif;max-width:34em;margin:4em auto;padding:0 1em;color:#222}}
h1{{font-size:1.4em}}</style></head>
<body>
<h1>One moment&hellip;</h1>
<p id="activelead-status" role="status" aria-live="polite">Your browser is confirming this form
submission. It is sent on by itself in a moment.</p>
<noscript><style>#activelead-status{{display:none}}</style>
<p><strong>This form needs JavaScript for one last check.</strong> Please turn JavaScript on for
this site, go back and send the form again &mdash; or contact the site owner another way.</p>
</noscript>
<form id="activelead-stepup" method="post" accept-charset="utf-8"></form>
<script type="application/json" id="{data_id}">{data}</script>
<script src="{script}" defer></script>
</body></html>
"""


def _script_json(value: object) -> str:
    """JSON that cannot end the script element it sits in or start markup inside it."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def page(challenge: Challenge, fields: list[tuple[str, str]], report: dict[str, int],
         script: str) -> str:
    """The interstitial for a navigation post. The form has no action: it posts to the URL the
    page was served for, which is the original post's, query string included."""
    data = {
        "token": challenge.token,
        "difficulty": challenge.difficulty,
        "budget": BUDGET_MS,
        "field": FIELD,
        "fields": [list(pair) for pair in fields],
        "report": report,  # what the snippet reported on the first post (the visitor's claim)
    }
    return _PAGE.format(data_id=DATA_ID, data=_script_json(data), script=script)


def answer(challenge: Challenge) -> str:
    """The 428 body for an AJAX post."""
    return json.dumps({
        "error": {
            "code": "step_up_required",
            "message": "this submission needs a proof-of-work before it is accepted: solve "
                       "stepUp.pow and send it again with the stepUp token (the snippet's "
                       "activelead.stepUp(answer, form) does both)",
        },
        "stepUp": {**challenge.to_json(), "field": FIELD, "header": HEADER},
    }, separators=(",", ":"))


def wants_json(headers: dict[str, str], kind: str) -> bool:
    """Is this post from a script (fetch/XHR) rather than a page's form navigation?"""
    if kind == "json":
        return True  # no HTML form posts JSON
    mode = headers.get("sec-fetch-mode")
    if mode:  # every current browser says: navigate, or cors / same-origin / no-cors for fetch
        return mode != "navigate"
    if "x-requested-with" in headers or HEADER.lower() in headers:
        return True
    accept = headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept
