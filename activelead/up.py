"""`activelead up`: the product on embedded defaults.

Today: loads the engine from activelead.yaml (or defaults) and scores the bundled sample
submissions, printing one verdict per line with a one-line summary. Services (proxy, control API)
join here as they land.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

from activelead.cli import _load_engine, score_lines


def run_up(args: argparse.Namespace) -> int:
    engine = _load_engine(args.config)
    sample = Path(args.sample)
    if not sample.exists():
        print(f"activelead up: sample file {sample} not found", file=sys.stderr)
        return 2
    out = io.StringIO()
    with sample.open(encoding="utf-8") as fh:
        failures = score_lines(engine, fh, out)
    print(f"Activelead scored {sample} with {len(engine.rules)} rules:")
    for line in out.getvalue().splitlines():
        verdict = json.loads(line)
        if "error" in verdict:
            print(f"  line {verdict['line']}: {verdict['error']}")
            continue
        labels = ", ".join(verdict["labels"]) or "-"
        print(f"  {verdict['decision']:<8} score {verdict['score']:>3}  {labels}")
    return 1 if failures else 0
