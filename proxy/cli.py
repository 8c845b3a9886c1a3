"""Command-line entry points: `activelead proxy` and `activelead mitm`."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from rules.config import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", default=None,
                        help="activelead.yaml (default: ./activelead.yaml if present)")
    parser.add_argument("--host", default=None, help="listen address (proxy.host)")
    parser.add_argument("--port", type=int, default=None, help="HTTP port (proxy.port)")
    parser.add_argument("--tls-port", type=int, default=None, help="HTTPS port (proxy.tls_port)")
    parser.add_argument("--admin-port", type=int, default=None,
                        help="health/metrics port (proxy.admin_port)")
    parser.add_argument("--workers", "-w", type=int, default=None,
                        help="worker processes (default: proxy.workers, 0 = CPU count)")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    proxy = {
        key: getattr(args, key)
        for key in ("host", "port", "tls_port", "admin_port", "workers")
        if getattr(args, key, None) is not None
    }
    return {"proxy": proxy} if proxy else {}


def run(args: argparse.Namespace) -> int:
    """Start the proxy (blocking); returns the process exit code."""
    from proxy.server import run_workers

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    overrides = _overrides(args)
    if overrides:
        # CLI flags beat env and file; merged into the file's proxy section, not replacing it.
        from proxy.settings import load_settings

        try:
            base = load_settings(args.config).proxy.model_dump(mode="json")
        except ConfigError as exc:
            print(f"activelead proxy: {exc}", file=sys.stderr)
            return 2
        base.update(overrides["proxy"])
        overrides = {"proxy": base}
    try:
        return run_workers(args.config, overrides)
    except ConfigError as exc:
        print(f"activelead proxy: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def add_mitm_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", default=None, help="activelead.yaml")
    parser.add_argument("--site", default=None, help="site id to serve (default: the first)")
    parser.add_argument("--host", default="0.0.0.0", help="listen address")  # noqa: S104
    parser.add_argument("--port", type=int, default=8080, help="listen port")
    parser.add_argument("mitmdump_args", nargs="*", help="extra mitmdump arguments (after --)")


def run_mitm(args: argparse.Namespace) -> int:
    """Run mitmdump in reverse-proxy mode with the Activelead addon (blocking)."""
    from proxy.mitm_addon import run_mitmdump

    return run_mitmdump(
        config=args.config, site=args.site, host=args.host, port=args.port,
        extra=list(args.mitmdump_args),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proxy", description="Activelead proxy")
    add_arguments(parser)
    return run(parser.parse_args(argv))
