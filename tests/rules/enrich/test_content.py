from __future__ import annotations

import pytest

from rules.enrich.content import ContentEnricher, has_mixed_script_word


@pytest.fixture(scope="module")
def content() -> ContentEnricher:
    return ContentEnricher()


@pytest.mark.parametrize(
    ("text", "spam"),
    [
        ("URGENT! You have won a £1000 cash prize. To claim call 09061701461 now", True),
        ("Increase your traffic! We offer SEO services, backlinks and guest posts.", True),
        ("Buy cheap viagra online, best price", True),
        ("Double your bitcoin: invest today, guaranteed profit from our trading bot", True),
        ("Can you call me back tomorrow about the quote?", False),
        ("Is there free parking near your office?", False),
        ("I won't be home until 6, please deliver after that.", False),
    ],
)
def test_spam_phrases(content: ContentEnricher, text: str, spam: bool) -> None:
    assert (content.facts(text).spam_score >= 4) is spam


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("' OR '1'='1", "sql"),
        ("1 UNION SELECT username, password FROM users", "sql"),
        ("admin'--", "sql"),
        ("<script>alert(document.cookie)</script>", "xss"),
        ("<img src=x onerror=alert(1)>", "xss"),
        ("javascript:alert(1)", "xss"),
        ('{"$gt": ""}', "nosql"),
        ("{{7*7}}", "template"),
        ("${jndi:ldap://x}", "template"),
        ("; cat /etc/passwd", "command"),
        ("../../../etc/passwd", "path"),
        ("Hi, I'm O'Brien and I'd like 3 or 4 rooms; thanks", None),
        ("Use 50% off -- limited", None),
    ],
)
def test_injection(content: ContentEnricher, text: str, kind: str | None) -> None:
    assert content.injection_kind(text) == kind


def test_links_markup_caps_repeat(content: ContentEnricher) -> None:
    f = content.facts("see http://a.example/x.com and www.b.example and spam.ru")
    assert f.links == 3
    assert content.facts("[url=http://x.example]x[/url]").markup_links
    assert content.facts("CALL NOW TO GET YOUR FREE QUOTE TODAY").caps_ratio > 0.9
    assert content.facts("buy now please\n" * 4).repeated
    assert not content.facts("one line\nanother line here").repeated


def test_mixed_scripts() -> None:
    assert has_mixed_script_word("your раypal account")
    assert not has_mixed_script_word("Привет, how are you")


def test_huge_hostile_text_is_linear(content: ContentEnricher) -> None:
    text = ("a" * 50 + "'" + " or " * 10) * 400 + "<" * 5000
    assert content.facts(text).chars == len(text)
