"""Precision and recall of each signal and of the final decision on ../shared/eval (labelled data).

Each data set isolates one signal: every other input is a plain human submission, so a label
that appears is caused by the data under test.

    .venv/bin/python bench/eval_scorer.py [--eval-dir ../shared/eval]
"""

from __future__ import annotations

import argparse
import csv
import ipaddress
import json
import random
from collections.abc import Iterable
from pathlib import Path

from rules import Engine, Submission

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/126.0.0.0 Safari/537.36")
HOME_IPS = ["81.2.69.142", "73.15.20.1", "86.12.1.1", "92.40.1.5", "24.6.1.1", "109.150.1.1",
            "2a02:c7c:1234::1", "90.12.1.1", "79.192.1.1", "151.20.1.1"]  # access networks


def base(**over: object) -> Submission:
    data: dict[str, object] = {"ip": "81.2.69.142", "email": "anna.keller@example.org",
                               "userAgent": CHROME, "fields": {"message": "Hello"}}
    data.update(over)
    return Submission.from_json(data)


def report(name: str, label: str, positives: Iterable[bool], negatives: Iterable[bool],
           decision_pos: Iterable[bool] = (), decision_neg: Iterable[bool] = ()) -> None:
    pos, neg = list(positives), list(negatives)
    tp, fn = sum(pos), len(pos) - sum(pos)
    fp = sum(neg)
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    line = (f"{name:<34} {label:<18} n+={len(pos):>5} n-={len(neg):>5}  "
            f"precision {precision:6.1%}  recall {recall:6.1%}  FP rate {fp / max(len(neg), 1):6.2%}")
    dpos, dneg = list(decision_pos), list(decision_neg)
    if dpos or dneg:
        line += (f"  | blocked: {sum(dpos) / max(len(dpos), 1):6.1%} of +, "
                 f"{sum(dneg) / max(len(dneg), 1):6.2%} of -")
    print(line)


def eval_text(engine: Engine, path: Path) -> None:
    rows = list(csv.reader(path.open(encoding="utf-8", errors="replace"), delimiter="\t"))[1:]
    verdicts = [(label, engine.score(base(fields={"message": text}))) for label, text, *_ in rows]
    spam = [v for label, v in verdicts if label == "spam"]
    ham = [v for label, v in verdicts if label == "ham"]
    for signal in ("spam_content", "link_spam"):
        report(f"text/{path.name}", signal, (signal in v.labels for v in spam),
               (signal in v.labels for v in ham))
    report(f"text/{path.name}", "decision!=allowed", (v.decision != "allowed" for v in spam),
           (v.decision != "allowed" for v in ham),
           (v.decision == "blocked" for v in spam), (v.decision == "blocked" for v in ham))


def eval_useragents(engine: Engine, browsers: Path, spiders: Path) -> None:
    def uas(path: Path) -> list[str]:
        rows = list(csv.reader(path.open(encoding="utf-8"), delimiter="\t"))
        return [row[0] for row in rows[1:] if row]

    bot_labels = {"bot_user_agent", "automation_client", "missing_user_agent", "verified_crawler"}
    good = [engine.score(base(userAgent=ua)) for ua in uas(browsers)]
    bad = [engine.score(base(userAgent=ua)) for ua in uas(spiders)]
    report("useragents (spiders vs browsers)", "any bot label",
           (bool(bot_labels & set(v.labels)) for v in bad),
           (bool(bot_labels & set(v.labels)) for v in good),
           (v.decision == "blocked" for v in bad), (v.decision == "blocked" for v in good))


def eval_ranges(engine: Engine, eval_dir: Path) -> None:
    rng = random.Random(7)
    nets: list[str] = []
    aws = json.loads((eval_dir / "ipranges/aws-ip-ranges.json").read_text())
    nets += [p["ip_prefix"] for p in aws["prefixes"]] + [p["ipv6_prefix"] for p in aws["ipv6_prefixes"]]
    gcp = json.loads((eval_dir / "ipranges/google-cloud-ip-ranges.json").read_text())
    nets += [p.get("ipv4Prefix") or p["ipv6Prefix"] for p in gcp["prefixes"]]
    oci = json.loads((eval_dir / "ipranges/oracle-cloud-ip-ranges.json").read_text())
    nets += [c["cidr"] for r in oci["regions"] for c in r["cidrs"]]
    nets += [row[0] for row in csv.reader((eval_dir / "ipranges/digitalocean.csv").open()) if row]
    sample = rng.sample(nets, min(3000, len(nets)))
    ips = []
    for cidr in sample:
        net = ipaddress.ip_network(cidr, strict=False)
        offset = rng.randrange(min(net.num_addresses, 1 << 20))
        ips.append(str(net.network_address + offset))
    dc = [engine.score(base(ip=ip)) for ip in ips]
    home = [engine.score(base(ip=ip)) for ip in HOME_IPS]
    report("ipranges (cloud, sampled 3000)", "datacenter_ip", ("datacenter_ip" in v.labels for v in dc),
           ("datacenter_ip" in v.labels for v in home),
           (v.decision == "blocked" for v in dc), (v.decision == "blocked" for v in home))


def eval_attacks(engine: Engine, eval_dir: Path, ham_texts: list[str]) -> None:
    payloads = []
    for path in sorted((eval_dir / "attacks").glob("*.txt")):
        payloads += [ln.rstrip("\n") for ln in path.open(encoding="utf-8", errors="replace")
                     if ln.strip()]
    hits = [engine.score(base(fields={"name": p})) for p in payloads]
    clean = [engine.score(base(fields={"message": t})) for t in ham_texts]
    report("attacks (payloads vs SMS ham)", "injection_attempt",
           ("injection_attempt" in v.labels for v in hits),
           ("injection_attempt" in v.labels for v in clean),
           (v.decision == "blocked" for v in hits), (v.decision == "blocked" for v in clean))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--eval-dir", default=str(Path(__file__).resolve().parents[2] / "shared/eval"))
    args = parser.parse_args()
    eval_dir = Path(args.eval_dir)
    if not eval_dir.is_dir():
        print(f"no evaluation data at {eval_dir}; nothing to do")
        return
    engine = Engine.from_config()
    sms = eval_dir / "text/sms_spam_collection.tsv"
    eval_text(engine, sms)
    eval_useragents(engine, eval_dir / "useragents/browsers_uap_core.tsv",
                    eval_dir / "useragents/spiders_uap_core.tsv")
    eval_ranges(engine, eval_dir)
    ham = [row[1] for row in csv.reader(sms.open(encoding="utf-8", errors="replace"),
                                        delimiter="\t") if row and row[0] == "ham"]
    eval_attacks(engine, eval_dir, ham)


if __name__ == "__main__":
    main()
