from __future__ import annotations

import pytest

from rules.enrich.email import EmailEnricher, looks_gibberish


@pytest.fixture(scope="module")
def emails() -> EmailEnricher:
    return EmailEnricher()


@pytest.mark.parametrize(
    ("address", "valid", "domain"),
    [
        ("jane@example.org", True, "example.org"),
        ("Jane.Doe+news@Sub.Example.CO.UK", True, "sub.example.co.uk"),
        ("josé@correo.es", True, "correo.es"),
        ("user@bücher.de", True, "xn--bcher-kva.de"),
        ("a..b@example.com", False, "example.com"),
        ("john@@example.com", False, "example.com"),
        ("no-at.example.com", False, "no-at.example.com"),
        ("x@localhost", False, "localhost"),
        ("x" * 65 + "@example.com", False, "example.com"),
        ("<script>@example.com", False, "example.com"),
        ("a@" + "b" * 64 + ".com", False, "b" * 64 + ".com"),
    ],
)
def test_syntax(emails: EmailEnricher, address: str, valid: bool, domain: str) -> None:
    facts = emails.facts(address)
    assert (facts.valid, facts.domain) == (valid, domain)


@pytest.mark.parametrize(
    ("address", "flags"),
    [
        ("a@mailinator.com", {"disposable"}),
        ("a@x.guerrillamail.com", {"disposable"}),
        ("info@example.com", {"role"}),
        ("no.reply@example.com", {"role"}),
        ("jane@gmail.com", {"free"}),
        ("jane+tag@gmail.com", {"free", "plus"}),
        ("xkq7zpw9bv3t@example.com", {"gibberish"}),
        ("jane.smith@example.com", set()),
    ],
)
def test_classification(emails: EmailEnricher, address: str, flags: set[str]) -> None:
    facts = emails.facts(address)
    got = {f for f in ("disposable", "role", "free", "plus", "gibberish") if getattr(facts, f)}
    assert got == flags


@pytest.mark.parametrize(
    ("local", "gibberish"),
    [("xkq7zpw9bv3t", True), ("a8f3k2m9q1", True), ("hdjskqwrt", True),
     ("john.smith84", False), ("christopher", False), ("maria_rossi", False), ("bob", False)],
)
def test_gibberish(local: str, gibberish: bool) -> None:
    assert looks_gibberish(local) is gibberish
