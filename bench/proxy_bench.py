"""Benchmark: nginx vs mitmproxy vs `activelead proxy` in front of one origin, on 127.0.0.1.

    .venv/bin/python bench/proxy_bench.py [--duration 8] [--connections 32] [--pairs 5]

Starts an origin (an nginx that answers every request itself, so it is never the bottleneck),
nginx as a reverse proxy (1 worker), mitmdump in reverse mode, a bare aiohttp proxy (the floor:
bench/aiohttp_floor.py), `activelead proxy` with 1 and 2 workers and Redis counters, and drives
each with `wrk`; the latency that scoring adds is measured at a fixed half-saturation rate
(bench/fixedrate.py, open loop). Proxy processes are pinned to the CPUs
given by --proxy-cpus and wrk + origin to --load-cpus, so load generator and proxy share the
machine the same way for every contender. Prints requests/s, p50/p99 and ratios. The scored vs
pass-through comparisons (and nginx's GETs against ours) are also run `--pairs` times in turn
and summarised by medians (by req/s and, for the posts, by the proxy's CPU time per request,
from /proc): on a shared VM one run of each kind can land in different weather. Not a test: figures, no assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# the repository root, for the tests' own port helpers (free_port, wait_for_port)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.services import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
POST_BODY = "email=jane.doe%40example.org&name=Jane+Doe&message=Hello%2C+a+quote+for+3+chairs."
# Every request a new visitor: own address and e-mail, so every counter key is cold (first seen).
VISITOR_BODY = "email=v{n}%40example.org&name=Jane+Doe&message=Hello%2C+a+quote+for+3+chairs."
VISITORS_LUA = """
n = 0
request = function()
  n = n + 1
  local headers = {}
  for k, v in pairs(wrk.headers) do headers[k] = v end
  headers["X-Forwarded-For"] = string.format("%d.%d.%d.%d", 20 + math.floor(n / 65536) % 180,
                                             math.floor(n / 256) % 256, n % 256, 1 + n % 250)
  local body = string.gsub(wrk.body, "{n}", math.random(1, 2000000000) .. "x" .. n)
  return wrk.format(nil, nil, headers, body)
end
"""
UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/126.0.0.0 Safari/537.36")

class Procs:
    """Processes started by the benchmark; each is stopped by its own PID."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str], cpus: str | None, log: Path,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        full = (["taskset", "-c", cpus] if cpus else []) + cmd
        proc = subprocess.Popen(full, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                env=env, cwd=ROOT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: the proxy and its workers
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)


def nginx_conf(work: Path, name: str, body: str) -> Path:
    (work / name).mkdir(parents=True, exist_ok=True)
    conf = work / name / "nginx.conf"
    conf.write_text(f"""
daemon off; master_process on; worker_processes 1; pid {work / name}/nginx.pid;
error_log {work / name}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off; client_body_temp_path {work / name}/body; proxy_temp_path {work / name}/proxy;
  fastcgi_temp_path {work / name}/fcgi; uwsgi_temp_path {work / name}/uwsgi;
  scgi_temp_path {work / name}/scgi;
  {body}
}}
""")
    return conf


def start_redis(procs: Procs, work: Path, cpus: str | None) -> int:
    """A throwaway redis-server (no persistence): its port, once it listens."""
    port = free_port()
    procs.start(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no"], cpus, work / "redis.log")
    wait_for_port(port, timeout_s=30.0)
    return port


def start_origin_and_redis(procs: Procs, work: Path, cpus: str) -> tuple[int, int]:
    """An nginx origin that answers every request itself, and a redis-server: (ports)."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    origin_port = free_port()
    conf = nginx_conf(work, "origin", f"""
  server {{ listen 127.0.0.1:{origin_port} reuseport backlog=4096;
    location / {{ return 200 "hello from the origin\\n"; }} }}""")
    procs.start([nginx, "-c", str(conf), "-p", str(work / "origin")], cpus, work / "origin.log")
    redis_port = start_redis(procs, work, cpus)
    wait_for_port(origin_port, timeout_s=30.0)
    return origin_port, redis_port


def proxy_config(path: Path, *, port: int, workers: int, state: Path, origin_port: int,
                 redis_port: int, **proxy: object) -> Path:
    """`activelead proxy` in monitor mode, Redis counters, events spooled for a control API that
    is down (they pile up on disk), one form whose per-IP limit counts but never trips."""
    import yaml

    path.write_text(yaml.safe_dump({
        "proxy": {"host": "127.0.0.1", "port": port, "admin_port": free_port(),
                  "workers": workers, "state_dir": str(state),
                  "trusted_proxies": ["127.0.0.0/8"],  # the new-visitor runs send X-Forwarded-For
                  "render_secret": "bench-secret-0123456789",
                  "control_api": {"url": f"http://127.0.0.1:{free_port()}", "edge_token": "x",
                                  "flush_interval_s": 5}, **proxy},
        "redis": {"url": f"redis://127.0.0.1:{redis_port}/0"},
        "sites": [{"id": "bench", "hosts": ["site.test"],
                   "origin": f"http://127.0.0.1:{origin_port}", "mode": "monitor",
                   "forms": [{"id": "contact", "path": "/contact",
                              "rate_limit": {"requests": 1_000_000}}]}],
    }))
    return path


def wrk(url: str, cpus: str, duration: int, connections: int, post: bool, host: str,
        work: Path, visitors: bool = False) -> tuple[float, float, float]:
    cmd = ["taskset", "-c", cpus, "wrk", "-t1", f"-c{connections}", f"-d{duration}s",
           "--latency", "-H", f"Host: {host}", url]
    if post:
        script = work / "post.lua"
        script.write_text(
            'wrk.method = "POST"\n'
            f'wrk.body = "{VISITOR_BODY if visitors else POST_BODY}"\n'
            'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
            f'wrk.headers["User-Agent"] = "{UA}"\n'
            'wrk.headers["Accept-Language"] = "en-GB,en;q=0.9"\n'
            + (VISITORS_LUA if visitors else "")
        )
        cmd[4:4] = ["-s", str(script)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        print(f"    note: {non2xx.group(1)} non-2xx responses from {url}", file=sys.stderr)

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)\b", out)
        assert m, out
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        return float(m.group(1)) * scale

    return rps, pct("50"), pct("99")


def fixed_rate(url: str, cpus: str, rate: float, seconds: int,
               host: str, visitors: bool = False) -> tuple[float, float, float]:
    """Evenly spaced requests at `rate` (bench/fixedrate.py, open loop). (rps, p50, p99)."""
    cmd = ["taskset", "-c", cpus, sys.executable, str(ROOT / "bench" / "fixedrate.py"), url,
           "--rate", f"{rate:.0f}", "--seconds", str(seconds),
           "--post", VISITOR_BODY if visitors else POST_BODY, *(["--visitors"] if visitors else []),
           "--header", f"Host: {host}", "--header", f"User-Agent: {UA}",
           "--header", "Accept-Language: en-GB,en;q=0.9",
           "--header", "Content-Type: application/x-www-form-urlencoded"]
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    return float(out["rate"]), float(out["p50"]), float(out["p99"])


def _tree(pid: int) -> list[int]:
    """`pid` and its children (a proxy's workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [pid, *(int(c) for c in children.read_text().split())] if children.exists() else [pid]


def rss_mb(pid: int) -> float:
    total = 0.0
    for p in _tree(pid):
        m = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{p}/status").read_text())
        total += int(m.group(1)) / 1024 if m else 0
    return total


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` and its children so far (/proc)."""
    total = 0.0
    for p in _tree(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--proxy-cpus", default="0", help="CPUs for the proxy under test")
    ap.add_argument("--load-cpus", default="1", help="CPUs for wrk and the origin")
    ap.add_argument("--skip-mitm", action="store_true")
    ap.add_argument("--pairs", type=int, default=5,
                    help="pass-through and scored POST runs alternated this many times: the "
                         "ratio as the median of adjacent pairs, by req/s and by CPU/request")
    args = ap.parse_args()
    for tool in ("nginx", "wrk", "taskset", "redis-server"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            print(f"{tool} is required", file=sys.stderr)
            return 2
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    work = Path(tempfile.mkdtemp(prefix="activelead-bench-"))
    procs = Procs()
    results: dict[str, tuple[float, float, float]] = {}
    mem: dict[str, float] = {}
    halves: dict[tuple[str, str], list[tuple[float, float, float]]] = {}  # one row per round
    pairs: list[tuple[float, float, float, float]] = []  # rps and CPU us/req: pass, scored
    get_pairs: list[tuple[float, float]] = []  # GET req/s: nginx, activelead (1 worker)
    try:
        origin_port, redis_port = start_origin_and_redis(procs, work, args.load_cpus)

        def run(name: str, port: int, path: str, post: bool, host: str = "site.test",
                connections: int = args.connections, visitors: bool = False) -> None:
            url = f"http://127.0.0.1:{port}{path}"
            wrk(url, args.load_cpus, 2, connections, post, host, work, visitors)  # warm-up
            results[name] = wrk(url, args.load_cpus, args.duration, connections, post,
                                host, work, visitors)
            rps, p50, p99 = results[name]
            print(f"  {name:<44} {rps:>10.0f} req/s  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms",
                  flush=True)

        print(f"proxy on CPUs {args.proxy_cpus}; wrk + origin on CPUs {args.load_cpus}; "
              f"{args.connections} connections, {args.duration}s per run")
        run("origin direct", origin_port, "/", False)

        nginx_port = free_port()
        conf = nginx_conf(work, "proxy", f"""
  upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 64; }}
  server {{ listen 127.0.0.1:{nginx_port} reuseport backlog=4096;
    location / {{ proxy_pass http://origin; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }} }}""")
        p = procs.start([nginx, "-c", str(conf), "-p", str(work / "proxy")], args.proxy_cpus,
                        work / "nginx.log")
        wait_for_port(nginx_port, timeout_s=30.0)
        run("nginx (1 worker) GET", nginx_port, "/", False)
        run("nginx (1 worker) POST", nginx_port, "/contact", True)
        nginx_proc = p  # kept (idle) for the GET pairs below

        if not args.skip_mitm:
            mitm_port = free_port()
            exe = str(Path(sys.executable).parent / "mitmdump")
            p = procs.start([exe, "--mode", f"reverse:http://127.0.0.1:{origin_port}@{mitm_port}",
                             "--listen-host", "127.0.0.1", "-q",
                             "--set", f"confdir={work / 'mitm'}"], args.proxy_cpus,
                            work / "mitm.log")
            wait_for_port(mitm_port, timeout_s=30.0)
            run("mitmproxy reverse GET", mitm_port, "/", False)
            procs.stop(p)

        floor_port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        p = procs.start([sys.executable, str(ROOT / "bench" / "aiohttp_floor.py"), str(floor_port),
                         f"http://127.0.0.1:{origin_port}"], args.proxy_cpus,
                        work / "floor.log", env=env)
        wait_for_port(floor_port, timeout_s=30.0)
        run("bare aiohttp proxy (floor) GET", floor_port, "/", False)
        run("bare aiohttp proxy (floor) POST", floor_port, "/contact", True)
        procs.stop(p)

        # The same GETs with the fast path off (every request through aiohttp), for scale.
        port = free_port()
        cfg = proxy_config(work / "activelead-aiohttp.yaml", port=port, workers=1,
                           state=work / "state-aiohttp", origin_port=origin_port,
                           redis_port=redis_port, fast_path=False)
        p = procs.start([sys.executable, "-m", "proxy", "--config", str(cfg)], args.proxy_cpus,
                        work / "activelead-aiohttp.log", env=env)
        wait_for_port(port, timeout_s=30.0)
        run("activelead (1 worker) GET, fast path off", port, "/", False)
        procs.stop(p)

        for workers in (1, 2):
            port = free_port()
            cfg = proxy_config(work / f"activelead-{workers}.yaml", port=port, workers=workers,
                               state=work / f"state{workers}", origin_port=origin_port,
                               redis_port=redis_port)
            cpus = args.proxy_cpus if workers == 1 else f"{args.proxy_cpus},{args.load_cpus}"
            p = procs.start([sys.executable, "-m", "proxy", "--config", str(cfg)], cpus,
                            work / f"activelead-{workers}.log", env=env)
            wait_for_port(port, timeout_s=30.0)
            label = f"activelead ({workers} worker{'s' if workers > 1 else ''})"
            run(f"{label} GET pass-through", port, "/", False)
            if workers == 1:
                run(f"{label} POST pass-through", port, "/other", True)
                run(f"{label} POST scored (rules + Redis)", port, "/contact", True)
                run(f"{label} POST scored, new visitors", port, "/contact", True, visitors=True)
                # "Scoring adds" is about latency below saturation: hold half the scored
                # saturation rate fixed and compare scored with pass-through posts.
                # Both scored scenarios at half the one-visitor saturation, and new visitors
                # also at half their own (lower) saturation, each against pass-through posts
                # at the same rate.
                half = results[f"{label} POST scored (rules + Redis)"][0] / 2
                half_new = results[f"{label} POST scored, new visitors"][0] / 2
                # Repeated `--pairs` times in turn, so that a slow spell of the VM hits both
                # kinds alike; what scoring adds is then the median of each round's difference.
                for _ in range(max(1, args.pairs)):
                    for name, path, visitors, rate, of in (
                        ("pass-through", "/other", False, half, "half saturation"),
                        ("scored", "/contact", False, half, "half saturation"),
                        ("scored, new visitors", "/contact", True, half, "half saturation"),
                        ("pass-through", "/other", False, half_new, "half new-visitor saturation"),
                        ("scored, new visitors", "/contact", True, half_new,
                         "half new-visitor saturation"),
                    ):
                        key = f"{label} POST {name} at {rate:.0f}/s ({of})"
                        got = fixed_rate(f"http://127.0.0.1:{port}{path}", args.load_cpus,
                                         rate, args.duration, "site.test", visitors)
                        rps, p50, p99 = got
                        print(f"  {key:<44} {rps:>10.0f} req/s  p50 {p50:7.2f} ms  "
                              f"p99 {p99:7.2f} ms", flush=True)
                        halves.setdefault((name, of), []).append(got)
                # The ratio again from alternating runs: this VM's speed drifts by several
                # per cent within a minute, so one run of each kind can mislead. CPU time per
                # request (from /proc) is also immune to the hypervisor taking the core away.
                url = f"http://127.0.0.1:{port}"
                for _ in range(args.pairs):
                    row: list[float] = []
                    for path in ("/other", "/contact"):
                        before = cpu_s(p.pid)
                        rps = wrk(url + path, args.load_cpus, args.duration, args.connections,
                                  True, "site.test", work)[0]
                        row += [rps, (cpu_s(p.pid) - before) / (rps * args.duration) * 1e6]
                    pairs.append((row[0], row[1], row[2], row[3]))
                    print(f"  {label} POST pass-through / scored pair  {row[0]:>6.0f} / "
                          f"{row[2]:.0f} req/s, CPU {row[1]:.0f} / {row[3]:.0f} us per request",
                          flush=True)
                # Likewise nginx's GETs and ours, in turn (each idle while the other runs).
                for _ in range(args.pairs):
                    theirs = wrk(f"http://127.0.0.1:{nginx_port}/", args.load_cpus,
                                 args.duration, args.connections, False, "site.test", work)[0]
                    ours = wrk(url + "/", args.load_cpus, args.duration, args.connections,
                               False, "site.test", work)[0]
                    get_pairs.append((theirs, ours))
                    print(f"  nginx / {label} GET pair  {theirs:>6.0f} / {ours:.0f} req/s",
                          flush=True)
                procs.stop(nginx_proc)
                mem[label] = rss_mb(p.pid)
            procs.stop(p)
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)

    def ratio(a: str, b: str) -> str:
        if a in results and b in results and results[b][0]:
            return f"{results[a][0] / results[b][0]:.2f}"
        return "n/a"

    a1 = "activelead (1 worker)"
    print("\nratios (requests/s)")
    print(f"  activelead GET / nginx GET (per worker)       {ratio(f'{a1} GET pass-through', 'nginx (1 worker) GET')}")
    print(f"  activelead GET / mitmproxy GET                {ratio(f'{a1} GET pass-through', 'mitmproxy reverse GET')}")
    print(f"  activelead 2 workers / 1 worker (GET)         {ratio('activelead (2 workers) GET pass-through', f'{a1} GET pass-through')}")
    print(f"  scored POST / pass-through POST               {ratio(f'{a1} POST scored (rules + Redis)', f'{a1} POST pass-through')}")
    print(f"  scored POST, new visitors / pass-through POST {ratio(f'{a1} POST scored, new visitors', f'{a1} POST pass-through')}")
    if get_pairs:
        by_rps = statistics.median(ours / theirs for theirs, ours in get_pairs)
        print(f"  activelead GET / nginx GET, median of {len(get_pairs)} alternating pairs: "
              f"{by_rps:.3f}")
    if pairs:
        by_rps = statistics.median(scored / passed for passed, _, scored, _ in pairs)
        by_cpu = statistics.median(passed / scored for _, passed, _, scored in pairs)
        print(f"  scored POST / pass-through POST, median of {len(pairs)} alternating pairs: "
              f"{by_rps:.2f} by req/s, {by_cpu:.2f} by CPU per request")
    if f"{a1} POST scored (rules + Redis)" in results and f"{a1} POST pass-through" in results:
        s, t = results[f"{a1} POST scored (rules + Redis)"], results[f"{a1} POST pass-through"]
        print(f"  scoring adds at saturation: p50 {s[1] - t[1]:+.2f} ms, p99 {s[2] - t[2]:+.2f} ms")
    for scored, of in (("scored", "half saturation"), ("scored, new visitors", "half saturation"),
                       ("scored, new visitors", "half new-visitor saturation")):
        if (scored, of) in halves and ("pass-through", of) in halves:
            rounds = list(zip(halves[(scored, of)], halves[("pass-through", of)], strict=True))
            p50s = [s[1] - t[1] for s, t in rounds]
            p99s = [s[2] - t[2] for s, t in rounds]
            print(f"  scoring adds at {of} ({scored}): p50 {statistics.median(p50s):+.2f} ms, "
                  f"p99 {statistics.median(p99s):+.2f} ms (median of "
                  f"{', '.join(f'{a:+.2f}/{b:+.2f}' for a, b in zip(p50s, p99s, strict=True))})")
    print(f"  activelead GET / bare aiohttp GET (floor)     {ratio(f'{a1} GET pass-through', 'bare aiohttp proxy (floor) GET')}")
    print(f"  fast path on / off (GET)                      {ratio(f'{a1} GET pass-through', f'{a1} GET, fast path off')}")
    print(f"  activelead POST / bare aiohttp POST (floor)   {ratio(f'{a1} POST pass-through', 'bare aiohttp proxy (floor) POST')}")
    for name, mb in mem.items():
        print(f"  {name} RSS after the runs: {mb:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
