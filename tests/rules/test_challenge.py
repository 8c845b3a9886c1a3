"""rules/challenge.py: signed challenges, binding, expiry, rotation, proof-of-work, reports."""

from __future__ import annotations

import hashlib

import pytest

from rules.challenge import (
    MAX_DIFFICULTY,
    ChallengeKeyError,
    ChallengeRequestError,
    ChallengeSigner,
    StepUp,
    leading_zero_bits,
    normalise_origin,
    origin_of_url,
    parse_report,
    pow_ok,
    solve_pow,
    verify,
)
from rules.counters import MemoryCounters

SECRET = "s" * 32
ORIGIN = "https://shop.example"
REPORT = "k=42,p=310,c=3,v=0,f=4,i=1800,d=9000,u=0,w=0,h=0"


class Clock:
    def __init__(self) -> None:
        self.now = 1_732_352_026.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock | None = None, **kw: object) -> ChallengeSigner:
    return ChallengeSigner(SECRET, clock=clock or Clock(), **kw)  # type: ignore[arg-type]


def posted(signer: ChallengeSigner, report: str = REPORT, difficulty: int = 0,
           site: str = "pk_live_1", origin: str = ORIGIN, form: str = "/contact") -> str:
    token = signer.issue(site, origin, form, difficulty).token
    if difficulty:
        n = solve_pow(token, difficulty)
        report = f"{report},n={n},s=120"
    return f"{token}~{report}"


def test_valid_token_gives_elapsed_and_behaviour() -> None:
    clock = Clock()
    signer = make(clock)
    value = posted(signer)
    clock.now += 7.5
    check = signer.check(value, site_key="pk_live_1", origin=ORIGIN, form="/contact")
    assert check.state == "valid", check.reason
    assert check.elapsed_ms == 7500
    assert check.behaviour == {"keys": 42, "pointer": 310, "clicks": 3, "pastes": 0, "focus": 4,
                               "firstInteractionMs": 1800, "dwellMs": 9000, "untrusted": 0,
                               "webdriver": 0, "hints": 0}
    assert not check.automation and not check.pow_solved
    assert (check.site_key, check.origin, check.form) == ("pk_live_1", ORIGIN, "/contact")


def test_token_shape_is_short_and_field_safe() -> None:
    token = make().issue("pk_live_1", ORIGIN, "/contact").token
    assert token.startswith("c1.") and len(token) < 200
    assert all(ch.isalnum() or ch in "._-" for ch in token)


@pytest.mark.parametrize(("expect", "state", "reason"), [
    ({"site_key": "pk_other"}, "invalid", "another site key"),
    ({"origin": "https://evil.example"}, "invalid", "another origin"),
    ({"origin": "http://shop.example"}, "invalid", "another origin"),
    ({"form": "/signup"}, "invalid", "another form"),
    ({"form": ["/signup", "contact-id"]}, "invalid", "another form"),
    ({"form": ["/signup", "/contact"]}, "valid", ""),
    ({"origin": "HTTPS://Shop.Example:443/"}, "valid", ""),  # normalised before comparing
    ({}, "valid", ""),  # nothing known: only the signature counts
])
def test_binding(expect: dict[str, object], state: str, reason: str) -> None:
    signer = make()
    check = signer.check(posted(signer), **expect)  # type: ignore[arg-type]
    assert check.state == state
    assert reason in check.reason


def test_expiry() -> None:
    clock = Clock()
    signer = make(clock, ttl_s=60)
    value = posted(signer)
    clock.now += 61
    assert signer.check(value).state == "expired"
    clock.now -= 61 + 120  # issued "in the future": a clock gone wrong or a forged time
    assert signer.check(value).state == "invalid"


def test_key_rotation() -> None:
    clock = Clock()
    old = ChallengeSigner("old-secret-0123456789", clock=clock)
    value = posted(old)
    rotated = ChallengeSigner("new-secret-0123456789", ["old-secret-0123456789"], clock=clock)
    assert rotated.check(value).state == "valid"
    assert rotated.issue("pk_1", ORIGIN, "/c").token.split(".")[1] != value.split(".")[1]
    retired = ChallengeSigner("new-secret-0123456789", clock=clock)
    assert retired.check(value).reason == "unknown key id"


@pytest.mark.parametrize("mangle", [
    lambda v: "",
    lambda v: v.replace("c1.", "c2.", 1),
    lambda v: v.split("~")[0][:-2] + "AA~" + v.split("~")[1],  # signature
    lambda v: v.replace("pk_live_1", "pk_live_2"),  # site key swapped in the clear part
    lambda v: v.replace(".0.", ".1.", 1),  # difficulty lowered/raised
    lambda v: v + "," * 2000,  # oversized
    lambda v: v.replace("k=42", "k=4\u0662"),  # non-ASCII digit
    lambda v: "a.b.c.d.e.f.g.h.i",
    lambda v: ".........",
])
def test_forged_or_broken_tokens_are_invalid_or_missing(mangle: object) -> None:
    signer = make()
    value = posted(signer)
    check = signer.check(mangle(value))  # type: ignore[operator]
    assert check.state in ("invalid", "missing")
    assert check.state == "missing" or check.reason


@pytest.mark.parametrize("report", [
    "k=1,k=2",  # twice
    "x=1",  # unknown
    "k=-1", "k=1.5", "k=", "k", "k=99999999999", "k=4294967296", "w=2",
    "k=1,,p=2",
    "=1",
    "k=1;p=2",
    "k=" + "1" * 300,
])
def test_hostile_reports_are_refused(report: str) -> None:
    with pytest.raises(ValueError):
        parse_report(report)
    signer = make()
    assert signer.check(posted(signer, report=report)).state == "invalid"


def test_report_limits() -> None:
    assert parse_report("") == {}
    assert parse_report("k=4294967295") == {"keys": 4294967295}
    with pytest.raises(ValueError, match="longer than"):
        parse_report(",".join(["k=1"] * 100))


@pytest.mark.parametrize(("report", "automation"), [
    ("w=1,h=0", True), ("w=0,h=16", True), ("w=0,h=0", False), ("k=3", False),
])
def test_automation_from_report(report: str, automation: bool) -> None:
    signer = make()
    assert signer.check(posted(signer, report=report)).automation is automation


def test_proof_of_work() -> None:
    signer = make()
    value = posted(signer, difficulty=10)
    check = signer.check(value)
    assert check.state == "valid" and check.pow_solved
    token, report = value.split("~")
    n = int(report.split("n=")[1].split(",")[0])
    assert pow_ok(token, n, 10)
    assert leading_zero_bits(hashlib.sha256(f"{token}:{n}".encode()).digest()) >= 10
    # the smallest wrong answer, and a missing one, are refused
    wrong = next(m for m in range(10_000) if not pow_ok(token, m, 10))
    assert signer.check(value.replace(f"n={n}", f"n={wrong}")).reason == "proof-of-work wrong"
    no_work = value.replace(f",n={n},s=120", "")
    missing = signer.check(no_work)
    assert (missing.state, missing.reason) == ("invalid", "proof-of-work missing")
    assert missing.behaviour["keys"] == 42  # what was seen is still reported


def test_proof_of_work_not_asked_means_not_solved() -> None:
    signer = make()
    check = signer.check(posted(signer) + ",n=5,s=1")
    assert check.state == "valid" and not check.pow_solved


def test_leading_zero_bits() -> None:
    assert leading_zero_bits(b"\x00\x00\x80") == 16
    assert leading_zero_bits(b"\x01") == 7
    assert leading_zero_bits(b"\x00\x00") == 16


async def test_single_use() -> None:
    signer = make(Clock())
    counters = MemoryCounters()
    value = posted(signer)
    assert (await verify(signer, counters, value)).state == "valid"
    again = await verify(signer, counters, value)
    assert (again.state, again.reason) == ("replayed", "challenge already used")
    # a report changed by the replayer does not make it new
    changed = value.replace("k=42", "k=43")
    assert (await verify(signer, counters, changed)).state == "replayed"
    # refused tokens are not remembered (the real post can still come)
    other = posted(signer)
    assert (await verify(signer, counters, other, origin="https://evil.example")).state == "invalid"
    assert (await verify(signer, counters, other)).state == "valid"


@pytest.mark.parametrize(("args", "code"), [
    (("pk live", ORIGIN, "/c", 0), "invalid_site"),
    (("", ORIGIN, "/c", 0), "invalid_site"),
    (("p" * 65, ORIGIN, "/c", 0), "invalid_site"),
    (("pk_1", "null", "/c", 0), "invalid_origin"),
    (("pk_1", "ftp://x", "/c", 0), "invalid_origin"),
    (("pk_1", "https://x/path", "/c", 0), "invalid_origin"),
    (("pk_1", ORIGIN, "/c\n", 0), "invalid_form"),
    (("pk_1", ORIGIN, "/" * 201, 0), "invalid_form"),
    (("pk_1", ORIGIN, "/c", MAX_DIFFICULTY + 1), "invalid_difficulty"),
    (("pk_1", ORIGIN, "/c", -1), "invalid_difficulty"),
])
def test_issue_refuses_what_no_page_sends(args: tuple[str, str, str, int], code: str) -> None:
    with pytest.raises(ChallengeRequestError) as info:
        make().issue(*args)
    assert info.value.code == code


def test_bad_keys_fail_loudly() -> None:
    with pytest.raises(ChallengeKeyError, match="at least 16"):
        ChallengeSigner("short")
    with pytest.raises(ChallengeKeyError, match="ttl_s"):
        ChallengeSigner(SECRET, ttl_s=1)


@pytest.mark.parametrize(("raw", "norm"), [
    ("https://Shop.Example", "https://shop.example"),
    ("https://shop.example:443", "https://shop.example"),
    ("http://shop.example:80/", "http://shop.example"),
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ("http://[::1]:8080", "http://[::1]:8080"),
    ("https://shop.example:99999", ""),
    ("null", ""), ("", ""), ("https://a/b", ""), ("javascript:alert(1)", ""),
])
def test_normalise_origin(raw: str, norm: str) -> None:
    assert normalise_origin(raw) == norm


def test_origin_of_url() -> None:
    assert origin_of_url("https://shop.example/contact?x=1") == "https://shop.example"
    assert origin_of_url("/relative") == ""


@pytest.mark.parametrize(("recent", "suspicious", "difficulty"), [
    (1, False, 0), (21, False, 18), (1, True, 18),
])
def test_step_up(recent: float, suspicious: bool, difficulty: int) -> None:
    assert StepUp().difficulty(recent, suspicious) == difficulty
    assert StepUp(base=12).difficulty(recent, suspicious) == max(12, difficulty)


@pytest.mark.parametrize("kw", [
    {"base": 27}, {"risky": -1}, {"rate_limit": 0}, {"rate_limit": 10, "hard_limit": 5},
])
def test_step_up_bad_config(kw: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        StepUp(**kw)


# --- step-up challenges (s1): what the proxy asks of a review-band post ----------------------


def step_up_value(signer: ChallengeSigner, elapsed_ms: float | None = 400, difficulty: int = 8,
                  report: str = "w=0,h=0", solve: bool = True) -> str:
    token = signer.issue_step_up("pk_live_1", ORIGIN, "/contact", difficulty, elapsed_ms).token
    if solve:
        report += f",n={solve_pow(token, difficulty)},s=90"
    return f"{token}~{report}"


def test_step_up_time_runs_from_the_start_of_the_form() -> None:
    clock = Clock()
    signer = make(clock)
    value = step_up_value(signer, elapsed_ms=400)  # the first post came 0.4 s into the form
    assert value.startswith("s1.") and value.split("~")[0].count(".") == 9
    clock.now += 1.5  # the interstitial's proof-of-work
    check = signer.check(value, site_key="pk_live_1", origin=ORIGIN, form="/contact")
    assert check.state == "valid", check.reason
    assert check.step_up and check.difficulty == 8 and check.pow_solved
    assert check.elapsed_ms == 1900  # 0.4 s of filling-in + 1.5 s, not 1.5 s alone


def test_step_up_without_a_known_start_has_no_time() -> None:
    clock = Clock()
    signer = make(clock)
    value = step_up_value(signer, elapsed_ms=None)
    clock.now += 1
    check = signer.check(value)
    assert check.state == "valid" and check.elapsed_ms is None  # no time trap either way


def test_step_up_expires_from_its_issue_not_from_the_start() -> None:
    clock = Clock()
    signer = make(clock, ttl_s=60)
    value = step_up_value(signer, elapsed_ms=3_600_000)  # a form left open for an hour
    clock.now += 30
    assert signer.check(value).state == "valid"
    clock.now += 31
    assert signer.check(value).state == "expired"


def test_snippet_challenges_carry_their_difficulty() -> None:
    signer = make()
    assert signer.check(posted(signer)).difficulty == 0
    plain = signer.check(posted(signer, difficulty=6))
    assert (plain.difficulty, plain.step_up) == (6, False)


@pytest.mark.parametrize(("mangle", "reason"), [
    (lambda v: v.replace(",n=", ",x=", 1), "report"),  # unknown key
    (lambda v: v.split(",n=")[0], "proof-of-work missing"),  # asked and not paid
    (lambda v: v.replace("s1.", "c1.", 1), "not a challenge token"),  # passed off as the other kind
    (lambda v: v.replace("~", ".~", 1), "not a challenge token"),
    (lambda v: ".".join([*v.split(".")[:8], "1", *v.split(".")[9:]]), "bad signature"),  # moved
    (lambda v: v.replace(".8.", ".1.", 1), "bad signature"),  # difficulty lowered
])
def test_forged_step_up_tokens_are_invalid(mangle: object, reason: str) -> None:
    signer = make()
    check = signer.check(mangle(step_up_value(signer)))  # type: ignore[operator]
    assert check.state == "invalid" and reason in check.reason


def test_a_snippet_challenge_cannot_pass_as_a_step_up() -> None:
    signer = make()
    token = signer.issue("pk_live_1", ORIGIN, "/contact", 8).token
    parts = token.split(".")
    forged = ".".join(["s1", *parts[1:8], "", parts[8]])
    assert signer.check(forged).reason == "bad signature"


async def test_step_up_tokens_are_single_use() -> None:
    signer = make(Clock())
    counters = MemoryCounters()
    value = step_up_value(signer)
    assert (await verify(signer, counters, value)).state == "valid"
    again = await verify(signer, counters, value)
    assert (again.state, again.pow_solved, again.difficulty) == ("replayed", False, 8)


@pytest.mark.parametrize(("difficulty", "elapsed"), [(0, 10.0), (MAX_DIFFICULTY + 1, 10.0)])
def test_step_up_needs_some_work(difficulty: int, elapsed: float) -> None:
    with pytest.raises(ChallengeRequestError) as info:
        make().issue_step_up("pk_1", ORIGIN, "/c", difficulty, elapsed)
    assert info.value.code == "invalid_difficulty"


async def test_single_use_across_replicas_through_redis() -> None:
    """Two proxy replicas share the replay set through a real redis-server."""
    from rules.counters import RedisCounters
    from tests.services import redis_server

    signer = make(Clock())
    with redis_server() as redis:
        one, two = RedisCounters(redis.url), RedisCounters(redis.url)
        try:
            value = posted(signer)
            assert (await verify(signer, one, value)).state == "valid"
            assert (await verify(signer, two, value)).state == "replayed"
        finally:
            await one.close()
            await two.close()
