"""`activelead` subcommands. Each service module supplies add_arguments/run; this file only wires."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from rules.config import ConfigError, load_yaml, parse_scoring
from rules.datasets import DataFileError

DEFAULT_CONFIG = "activelead.yaml"


def _load_engine(config_path: str) -> Any:
    from rules import Engine

    path = Path(config_path)
    data = load_yaml(path) if path.exists() else {}
    return Engine.from_config(parse_scoring(data, str(path)), str(path))


# -- score ---------------------------------------------------------------------------------------


def score_lines(engine: Any, lines: Iterable[str], out: IO[str]) -> int:
    """Score JSON lines in order; a bad line yields an error object and the rest still score."""
    from rules import MemoryCounters, Submission, SubmissionError

    counters = MemoryCounters()  # velocity across the lines of one run
    failures = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            sub = Submission.from_json(json.loads(line))
        except json.JSONDecodeError as exc:
            failures += 1
            result: dict[str, Any] = {"line": number, "error": "invalid_json", "message": str(exc)}
        except SubmissionError as exc:
            failures += 1
            result = {"line": number, "error": "invalid_submission", "errors": exc.errors}
        else:
            keys = engine.velocity_keys(sub)
            counts = counters.hit_now([(k, w) for _, k, w in keys]) if not sub.is_test else []
            velocity = {name: c for (name, _, _), c in zip(keys, counts, strict=False)}
            result = engine.score(sub, velocity).to_json()
        out.write(json.dumps(result, ensure_ascii=False) + "\n")
        out.flush()
    return failures


def cmd_score(args: argparse.Namespace) -> int:
    engine = _load_engine(args.config)
    if args.file and args.file != "-":
        with open(args.file, encoding="utf-8", errors="replace") as fh:
            failures = score_lines(engine, fh, sys.stdout)
    else:
        with open(sys.stdin.fileno(), encoding="utf-8", errors="replace", closefd=False) as stdin:
            failures = score_lines(engine, stdin, sys.stdout)
    if failures:
        print(f"activelead score: {failures} line(s) could not be scored", file=sys.stderr)
    return 1 if failures else 0


# -- rules ---------------------------------------------------------------------------------------


def cmd_rules_test(args: argparse.Namespace) -> int:
    from rules.testing import run_all

    results = run_all(_load_engine(args.config))
    failed = [r for r in results if not r.passed]
    for r in results if args.verbose else failed:
        print(r.describe())
    rules = len({r.rule_id for r in results})
    print(f"{len(results)} cases in {rules} rules: {len(results) - len(failed)} passed, "
          f"{len(failed)} failed")
    return 1 if failed else 0


def lint_rules() -> list[str]:
    """Problems with the rule files: ids unique and matching names, each with hit and miss cases."""
    from rules.ruleset import compile_rule, rule_files

    problems: list[str] = []
    seen: dict[str, Path] = {}
    for path in rule_files():
        try:
            rule = compile_rule(load_yaml(path), str(path))
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        if not path.name.startswith(f"{rule.id}-"):
            problems.append(f"{path}: id {rule.id} does not match the file name")
        if path.parent.name[:1] != rule.id[:1]:
            problems.append(f"{path}: id {rule.id} is not in its pack's number range")
        if rule.id in seen:
            problems.append(f"{path}: id {rule.id} also used by {seen[rule.id]}")
        seen[rule.id] = path
        if not rule.doc.tests.hit or not rule.doc.tests.miss:
            problems.append(f"{path}: needs at least one hit and one miss test case")
        if not rule.doc.description:
            problems.append(f"{path}: needs a description")
    return problems


def cmd_rules_lint(args: argparse.Namespace) -> int:
    problems = lint_rules()
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problem(s)")
    return 1 if problems else 0


# -- doctor / data -------------------------------------------------------------------------------


def cmd_doctor(args: argparse.Namespace) -> int:
    from rules.engine import Enrichers

    try:
        engine = _load_engine(args.config)
    except ConfigError as exc:
        print(f"config: {exc}")
        return 1
    enrichers: Enrichers = engine.enrichers
    print(f"config: {args.config} ({'found' if Path(args.config).exists() else 'defaults'})")
    print(f"rules: {len(engine.rules)} active ({len(engine.builtin)} built-in)")
    print(f"data loaded in {enrichers.load_seconds:.2f} s:")
    for item in enrichers.describe():
        size = "" if item["size"] is None else f"{item['size']:>8,}"
        print(f"  {item['name']:<28} {size:>9}  {item['date']:<10}  {item['source']}")
    return 0


def cmd_data_update(args: argparse.Namespace) -> int:
    from rules.datasets import override_dir
    from rules.update import update

    overrides = dict(item.split("=", 1) for item in args.source or [])
    report = update(Path(args.dir) if args.dir else override_dir(), overrides,
                    set(args.only) if args.only else None, args.timeout)
    for name, result in report:
        print(f"{name}: {result}")
    return 1 if any("FAILED" in result for _, result in report) else 0


# -- services (each lives in its own package; imported only when asked for) ----------------------


def _service(module: str, add: str, run: str) -> tuple[Callable[..., None], Callable[..., int]]:
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        try:
            getattr(importlib.import_module(module), add)(parser)
        except ImportError:
            parser.set_defaults(_missing=module)

    def run_command(args: argparse.Namespace) -> int:
        mod = importlib.import_module(module)
        return int(getattr(mod, run)(args))

    return add_arguments, run_command


def cmd_up(args: argparse.Namespace) -> int:
    from activelead.up import run_up

    return run_up(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="activelead", description="Activelead lead protection")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", default=DEFAULT_CONFIG, help="path to activelead.yaml")
        return p

    p = with_config(sub.add_parser("score", help="score JSON-lines submissions, one verdict per line"))
    p.add_argument("file", nargs="?", help="JSON lines file (default: stdin)")
    p.set_defaults(func=cmd_score)

    rules = sub.add_parser("rules", help="rule packs").add_subparsers(dest="rules_command",
                                                                      required=True)
    p = with_config(rules.add_parser("test", help="run every rule's own test cases"))
    p.add_argument("--verbose", action="store_true", help="list passing cases too")
    p.set_defaults(func=cmd_rules_test)
    rules.add_parser("lint", help="check rule files").set_defaults(func=cmd_rules_lint)

    with_config(sub.add_parser("doctor", help="show loaded data sets")).set_defaults(func=cmd_doctor)

    data = sub.add_parser("data", help="data sets").add_subparsers(dest="data_command",
                                                                   required=True)
    p = data.add_parser("update", help="refresh data from the publishers' URLs")
    p.add_argument("--dir", help="target directory (default: $ACTIVELEAD_DATA_DIR or var/data)")
    p.add_argument("--only", action="append", help="only this source (repeatable)")
    p.add_argument("--source", action="append", metavar="NAME=URL", help="override a URL")
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(func=cmd_data_update)

    for name, module, add, run, help_text in (
        ("proxy", "proxy.cli", "add_arguments", "run", "run the protecting reverse proxy"),
        ("mitm", "proxy.cli", "add_mitm_arguments", "run_mitm", "run the mitmproxy adapter"),
        ("control-api", "control_api.cli", "add_arguments", "run", "run the control API"),
    ):
        add_fn, run_fn = _service(module, add, run)
        p = sub.add_parser(name, help=help_text)
        add_fn(p)
        p.set_defaults(func=run_fn)
    # control_api.cli defines the `grant` sub-command itself
    add_fn, run_fn = _service("control_api.cli", "add_credits_arguments", "run_credits")
    p = sub.add_parser("credits", help="prepaid credits (grant)")
    add_fn(p)
    p.set_defaults(func=run_fn)

    p = with_config(sub.add_parser("up", help="start the product on embedded defaults"))
    from activelead.up import add_arguments as add_up_arguments

    add_up_arguments(p)
    p.set_defaults(func=cmd_up)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if getattr(args, "_missing", None):
        print(f"activelead: {args._missing} is not available in this installation",
              file=sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except (ConfigError, DataFileError) as exc:
        print(f"activelead: {exc}", file=sys.stderr)
        return 2
