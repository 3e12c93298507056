"""Several processes enrolling different persons and verifying at the same time, then checks.

    nice -n 15 python scripts/stress_concurrency.py --processes 4 --seconds 60 --out /tmp/conc-sqlite
    nice -n 15 python scripts/stress_concurrency.py --processes 4 --seconds 60 --out /tmp/conc-pg \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/<empty database>

Each worker process runs sigvault commands back to back for ``--seconds``, exactly as a user's
``sigvault`` process does (the typer app in-process: settings resolved, vault opened, one command, vault
closed; errors mapped to one line and an exit code): ``enroll`` of a new person with 3 images, 2 ``verify``
of that person, and every 4th round an ``identify`` (which brings the shared index file up to date under
its lock). ``--embedder fake`` (default) uses the tests' FakeEmbedder, so the database and the index file,
not the network, are the bottleneck and lock contention is at its worst; ``--embedder shipped`` uses the
real model.

Afterwards: every reference a worker was told was enrolled is in SQL, with nothing else (no lost and no
extra reference); the decision log is intact and holds one entry per successful verify; the index file is
consistent with SQL without any repair; no command failed (in particular no "database is locked"). Prints
operations per second and latencies, writes ``--out``/summary.json. Exit status 1 if a check failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def worker(index: int, home: Path, url: str, start_at: float, seconds: float, embedder: str, out: Path) -> None:
    from typer.testing import CliRunner

    if embedder == "fake":
        from conftest import FakeEmbedder

        import sigvault.embedder

        sigvault.embedder.load_embedder = lambda path=None, **kw: FakeEmbedder()  # type: ignore[assignment]
    from conftest import signature_png

    from sigvault.cli import app

    images = out.parent / f"images-{index}"
    images.mkdir(parents=True, exist_ok=True)
    pool = []
    for writer in range(12):
        paths = []
        for v in range(1, 6):
            p = images / f"w{writer}-{v}.png"
            p.write_bytes(signature_png(100 * index + writer, v))
            paths.append(p)
        pool.append(paths)
    runner = CliRunner()
    env = {"SIGVAULT_HOME": str(home), "SIGVAULT_DATABASE_URL": url}
    log: list[dict] = []

    def run(op: str, *args: object) -> bool:
        t0 = time.perf_counter()
        result = runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=True)
        ok = result.exit_code == 0
        log.append(
            {
                "op": op,
                "ok": ok,
                "s": time.perf_counter() - t0,
                "exit": result.exit_code,
                "error": None if ok else (result.stderr or repr(result.exception))[-500:],
            }
        )
        return ok

    # warm up (imports, the index module, the database driver) off the clock, then start together
    import faiss  # noqa: F401
    import scipy.ndimage  # noqa: F401

    runner.invoke(app, ["people", "list"], env=env)
    runner.invoke(app, ["compare", str(pool[0][0]), str(pool[0][1])], env=env)
    time.sleep(max(0.0, start_at - time.time()))
    enrolled: dict[str, list[str]] = {}
    deadline = time.monotonic() + seconds
    k = 0
    while time.monotonic() < deadline:
        k += 1
        person = f"w{index}-{k}"
        refs = pool[k % len(pool)][:3]
        if run("enroll", "enroll", person, *refs):
            enrolled[person] = [hashlib.sha256(p.read_bytes()).hexdigest() for p in refs]
            for q in pool[k % len(pool)][3:5]:
                run("verify", "verify", person, q)
        if k % 4 == 0:
            run("identify", "identify", pool[k % len(pool)][4], "--top", "3")
    (out / f"worker-{index}.json").write_text(json.dumps({"enrolled": enrolled, "log": log}))


def check(home: Path, url: str, results: list[dict], embedder: str) -> dict:
    if embedder == "fake":
        from conftest import FakeEmbedder

        model = FakeEmbedder()
    else:
        from sigvault.embedder import load_embedder

        model = load_embedder()
    from sigvault.config import Settings
    from sigvault.db import queries
    from sigvault.db.engine import transaction
    from sigvault.vault import Vault

    failures = []
    expected = {p: sorted(s) for r in results for p, s in r["enrolled"].items()}
    with Vault.open(Settings(home=home, database_url=url), embedder=model) as vault:
        report = vault.check_index()  # before anything could repair it
        chain = vault.log_verify()
        found: dict[str, list[str]] = {}
        with transaction(vault.engine) as conn:
            for person in queries.all_persons(conn):
                refs, _ = queries.person_references(conn, person.pk)
                found[person.person_id] = sorted(r.sha256 for r in refs)
    lost = sorted(p for p in expected if found.get(p) != expected[p])
    extra = sorted(set(found) - set(expected))
    if lost:
        failures.append(f"{len(lost)} persons whose references differ from what enroll reported: {lost[:5]}")
    if extra:
        failures.append(f"{len(extra)} persons in SQL that no enroll reported: {extra[:5]}")
    if not report.consistent:
        failures.append(f"index not consistent with SQL: {report.problem}")
    verifies = sum(1 for r in results for e in r["log"] if e["op"] == "verify" and e["ok"])
    if not chain.ok or chain.entries != verifies:
        failures.append(f"decision log: ok={chain.ok} entries={chain.entries}, successful verifies {verifies}")
    return {
        "persons": len(found),
        "references": sum(len(v) for v in found.values()),
        "index_consistent": report.consistent,
        "index_vectors": report.index.count if report.index else None,
        "log_entries": chain.entries,
        "log_intact": chain.ok,
        "failures": failures,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--embedder", choices=["fake", "shipped"], default="fake")
    parser.add_argument("--database-url", default=None, help="an empty database (default: SQLite in --out)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    home = args.out / "home"
    url = args.database_url or f"sqlite:///{home / 'sigvault.db'}"
    parser_start = args.start_at
    if args.worker is not None:
        worker(args.worker, home, url, parser_start, args.seconds, args.embedder, args.out)
        return 0
    args.out.mkdir(parents=True, exist_ok=False)
    from sigvault.config import Settings
    from sigvault.vault import upgrade_database

    upgrade_database(Settings(home=home, database_url=url))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [
        sys.executable,
        __file__,
        "--out",
        str(args.out),
        "--seconds",
        str(args.seconds),
        "--embedder",
        args.embedder,
    ]
    if args.database_url:
        base += ["--database-url", args.database_url]
    start_at = time.time() + 15 + 5 * args.processes  # time for every worker to start and warm up
    base += ["--start-at", str(start_at)]
    procs = [subprocess.Popen([*base, "--worker", str(i)], env=env) for i in range(args.processes)]
    t0 = time.monotonic() + max(0.0, start_at - time.time())
    codes = [p.wait() for p in procs]
    wall = time.monotonic() - t0
    results = [json.loads((args.out / f"worker-{i}.json").read_text()) for i in range(args.processes)]
    entries = [e for r in results for e in r["log"]]
    by_op: dict[str, list[float]] = {}
    for e in entries:
        if e["ok"]:
            by_op.setdefault(e["op"], []).append(e["s"])
    errors = Counter(e["error"].strip().splitlines()[-1][:200] for e in entries if not e["ok"])
    checked = check(home, url, results, args.embedder)
    failures = list(checked.pop("failures"))
    if any(codes):
        failures.append(f"worker exit codes {codes}")
    if errors:
        failures.append(f"{sum(errors.values())} commands failed")
    locked = sum(n for msg, n in errors.items() if "locked" in msg.lower())
    ok_ops = sum(len(v) for v in by_op.values())
    summary = {
        "command": " ".join(sys.argv),
        "database": "postgresql" if args.database_url else "sqlite",
        "embedder": args.embedder,
        "processes": args.processes,
        "seconds": args.seconds,
        "wall_s": round(wall, 1),
        "operations_ok": ok_ops,
        "operations_failed": sum(errors.values()),
        "database_is_locked_errors": locked,
        "ops_per_s": round(ok_ops / args.seconds, 1),
        "per_op": {
            op: {
                "n": len(v),
                "per_s": round(len(v) / args.seconds, 1),
                "p50_ms": round(1000 * statistics.median(v), 1),
                "p95_ms": round(1000 * sorted(v)[int(0.95 * (len(v) - 1))], 1),
                "max_ms": round(1000 * max(v), 1),
            }
            for op, v in sorted(by_op.items())
        },
        "errors": dict(errors),
        **checked,
        "failures": failures,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
