"""Soak: memory of one `activelead proxy` worker over 1 million requests, sampled as it goes.

    .venv/bin/python bench/proxy_soak.py [--requests 1000000] [--sample-every 100000]

Starts an nginx origin, a redis-server and `activelead proxy` (1 worker, Redis counters, the full
default rule set, events spooled for a control API that is down, so the spool grows on disk, not
in memory) and drives it with `wrk` running a Lua script that mixes page GETs and scored form
POSTs from ever-new client IPs, e-mails and texts (X-Forwarded-For from a trusted 127.0.0.1): the
worst case for every cache and counter table. Prints the worker's RSS after each slice and the
growth over the second half. Not a test: figures, no assertions.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.proxy_bench import Procs, proxy_config, rss_mb, start_origin_and_redis
from tests.services import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent

# Every request is new to the proxy: a fresh client IP (from 16M), e-mail and message.
MIX = r"""
counter = 0
request = function()
  counter = counter + 1
  local ip = string.format("%d.%d.%d.%d", 11 + (counter % 200), math.random(0, 255),
                           math.random(0, 255), math.random(1, 254))
  wrk.headers["X-Forwarded-For"] = ip
  if counter % 2 == 0 then
    return wrk.format("GET", "/page/" .. counter)
  end
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  local body = "email=visitor" .. counter .. "%40example" .. (counter % 977) .. ".org" ..
               "&name=Visitor+" .. counter .. "&message=Hello%2C+order+" .. counter ..
               "+please+call+me+back+" .. math.random(1, 1000000)
  return wrk.format("POST", "/contact", nil, body)
end
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--sample-every", type=int, default=100_000)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--proxy-cpus", default="0")
    ap.add_argument("--load-cpus", default="1")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="activelead-soak-"))
    procs = Procs()
    try:
        origin_port, redis_port = start_origin_and_redis(procs, work, args.load_cpus)
        port = free_port()
        cfg = proxy_config(work / "activelead.yaml", port=port, workers=1, state=work / "state",
                           origin_port=origin_port, redis_port=redis_port,
                           trusted_proxies=["127.0.0.0/8"])
        proc = procs.start([sys.executable, "-m", "proxy", "--config", str(cfg)],
                           args.proxy_cpus, work / "proxy.log",
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
        wait_for_port(port, timeout_s=30.0)
        script = work / "mix.lua"
        script.write_text(MIX)
        done, samples = 0, [(0, rss_mb(proc.pid))]
        print(f"1 worker on CPU {args.proxy_cpus}, wrk on {args.load_cpus}, {args.connections} "
              f"connections; RSS at start {samples[0][1]:.0f} MB", flush=True)
        started = time.monotonic()
        while done < args.requests:
            # wrk runs for a duration: size each run from the rate seen so far
            rate = done / (time.monotonic() - started) if done else 1500.0
            seconds = max(2, min(120, round(args.sample_every / rate)))
            out = subprocess.run(
                ["taskset", "-c", args.load_cpus, "wrk", "-t1", f"-c{args.connections}",
                 f"-d{seconds}s", "-s", str(script), "-H", "Host: site.test",
                 f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True).stdout
            m = re.search(r"(\d+) requests in", out)
            done += int(m.group(1)) if m else 0
            errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            samples.append((done, rss_mb(proc.pid)))
            print(f"  {done:>9,} requests  RSS {samples[-1][1]:6.1f} MB"
                  f"{'  non-2xx: ' + errors.group(1) if errors else ''}", flush=True)
        half = [mb for n, mb in samples if n >= args.requests / 2]
        print(f"\n{done:,} requests in {time.monotonic() - started:.0f} s; RSS peak "
              f"{max(mb for _, mb in samples):.0f} MB, final {samples[-1][1]:.0f} MB; "
              f"growth over the second half {half[-1] - half[0]:+.1f} MB")
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
