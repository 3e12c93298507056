"""The HTTP service's latency and throughput beside in-process ``Vault.verify``, in one run (loopback only, bounded).

    python benchmarks/service_bench.py                                   # SQLite, 1 worker, 10 s per level
    python benchmarks/service_bench.py --workers 2 --seconds 60 --concurrency 1,16 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench   # the issue's load test (an empty database)

A disposable vault (a temporary home; the database given must be empty) gets ``--persons`` synthetic writers of
5 references each and an admin key; ``sigvault serve`` is started on a free port of 127.0.0.1. Questioned scans
are 900x300 PNGs (a cheque's signature box), decoded from bytes every time. Printed: in-process ``verify`` one by
one and ``verify_many`` batched (same vault, same model), then for each concurrency level the HTTP requests'
p50 / p99 latency, requests per second and errors; at the end the decision log is checked (``log verify``) and its
decisions (the log's entries less its events: enrolments, the key) counted against the decisions acknowledged. Every loop is bounded by ``--seconds`` (at most 120) and a count.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.run import scan_png  # noqa: E402
from sigvault.config import Settings, sqlite_url  # noqa: E402

BOX = (900, 300)
MAX_SECONDS = 120
MAX_REQUESTS = 1_000_000  # per level, besides the time bound


def percentiles(values: list[float]) -> str:
    if not values:
        return "no requests"
    return f"p50 {1000 * statistics.median(values):.1f} ms  p99 {1000 * float(np.percentile(values, 99)):.1f} ms"


def multipart(data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.png"\r\n\r\n'.encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def level(url: str, secret: str, items: list[tuple[str, bytes]], clients: int, seconds: float) -> tuple[list[float], int, float]:
    """``clients`` threads verifying round-robin for ``seconds``: (latencies of successes, errors, elapsed)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds
    bodies = [(person, *multipart(data)) for person, data in items]

    def client(k: int) -> None:
        i = k
        while time.perf_counter() < stop and len(latencies) < MAX_REQUESTS:
            person, body, ctype = bodies[i % len(bodies)]
            i += clients
            request = urllib.request.Request(
                f"{url}/v1/persons/{person}/verify", data=body, method="POST",
                headers={"Authorization": f"Bearer {secret}", "Content-Type": ctype},
            )
            t = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    response.read()
                    ok = response.status == 200
            except (urllib.error.URLError, OSError):
                ok = False
            with lock:
                if ok:
                    latencies.append(time.perf_counter() - t)
                else:
                    errors[0] += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    return latencies, errors[0], time.perf_counter() - start


def main() -> None:  # noqa: PLR0915 - one linear script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", default="1,16", help="comma-separated client counts")
    parser.add_argument("--seconds", type=float, default=10.0, help=f"per level, at most {MAX_SECONDS}")
    parser.add_argument("--persons", type=int, default=8)
    parser.add_argument("--database-url", default=None, help="an empty database (default: SQLite in a temporary home)")
    args = parser.parse_args()
    seconds = min(args.seconds, MAX_SECONDS)
    from sigvault.db.engine import make_engine
    from sigvault.keys import ApiKeys
    from sigvault.vault import Vault, VerifyItem, upgrade_database

    with tempfile.TemporaryDirectory(prefix="sigvault-service-bench-") as tmp:
        home = Path(tmp) / "home"
        settings = Settings.resolve(home=home, database_url=args.database_url or sqlite_url(home / "sigvault.db"))
        upgrade_database(settings)
        persons = [f"writer-{k}" for k in range(args.persons)]
        items = [(p, scan_png(100 + k, 20 + j, size=BOX)) for k, p in enumerate(persons) for j in range(4)]
        with Vault.open(settings) as vault:
            for k, person in enumerate(persons):
                vault.enroll(person, [scan_png(100 + k, j, size=BOX) for j in range(5)])
            vault.verify(*items[0])  # warm
            one: list[float] = []
            stop = time.perf_counter() + min(seconds, 10)
            while time.perf_counter() < stop and len(one) < 2000:
                person, data = items[len(one) % len(items)]
                t = time.perf_counter()
                vault.verify(person, data)
                one.append(time.perf_counter() - t)
            batch = [VerifyItem(p, d) for p, d in items] * 4
            t = time.perf_counter()
            vault.verify_many(batch, kind="verify")
            batched_rate = len(batch) / (time.perf_counter() - t)
        engine = make_engine(settings.database_url)
        secret = ApiKeys(engine).create("bench", "verify")[1]
        engine.dispose()

        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        env = {"SIGVAULT_HOME": str(home), "SIGVAULT_DATABASE_URL": settings.database_url, "PATH": "/usr/bin:/bin"}
        if settings.model is not None:
            env["SIGVAULT_MODEL"] = str(settings.model)
        log = (Path(tmp) / "server.log").open("w")
        server = subprocess.Popen(
            [sys.executable, "-m", "sigvault", "serve", "--port", str(port), "--workers", str(args.workers)],
            env={**env, "PYTHONPATH": str(ROOT)}, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 300
            while True:
                if server.poll() is not None or time.monotonic() > deadline:
                    sys.exit("server did not start:\n" + (Path(tmp) / "server.log").read_text())
                try:
                    with urllib.request.urlopen(f"{url}/readyz", timeout=5):
                        break
                except OSError:
                    time.sleep(0.2)
            acknowledged = len(level(url, secret, items, 1, 2.0)[0])  # warm every worker's first requests
            rows = []
            for clients in (int(c) for c in args.concurrency.split(",")):
                latencies, errors, elapsed = level(url, secret, items, clients, seconds)
                acknowledged += len(latencies)
                rows.append((clients, latencies, errors, elapsed))
        finally:
            server.terminate()
            server.wait(60)
            log.close()
        with Vault.open(settings) as vault:
            chain = vault.log_verify()
            # the log also holds events (the enrolments, the key): count the verifications alone
            decisions = sum(1 for e in vault.log_entries() if e.kind in ("verify", "audit"))
    print(f"python benchmarks/service_bench.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"backend {settings.database_url.split(':')[0]}, {args.workers} worker(s), scans {BOX[0]}x{BOX[1]} PNG")
    print(f"in-process verify, one by one: {percentiles(one)}  {len(one) / sum(one):.1f} verifications/s")
    print(f"in-process verify_many, batched: {batched_rate:.1f} verifications/s")
    for clients, latencies, errors, elapsed in rows:
        rate = len(latencies) / elapsed
        print(
            f"HTTP, {clients:>2} client(s): {percentiles(latencies)}  {rate:.1f} requests/s "
            f"({100 * rate / batched_rate:.0f} % of batched in-process)  errors {errors}"
        )
    expected = 1 + len(one) + len(batch) + acknowledged  # warm-up, one by one, batched, HTTP 200s
    print(
        f"decision log: {'intact' if chain.ok else 'BROKEN: ' + str(chain.problem)}, {chain.entries} entries of "
        f"which {decisions} decisions, {expected} decisions acknowledged" + ("" if decisions == expected else ": MISMATCH")
    )


if __name__ == "__main__":
    main()
