"""Kill ``sigvault enroll`` and ``sigvault audit`` with SIGKILL at random moments and check what survives.

    nice -n 15 python scripts/stress_kill.py --enroll-kills 50 --audit-kills 50 --seed 1 --out /tmp/stress-kill

Real CLI subprocesses (``python -m sigvault``) with the real shipped model (or ``SIGVAULT_MODEL``), on a
fresh SQLite home (or ``--database-url``, an empty PostgreSQL database at head). Inputs are synthetic
signatures from :mod:`sigvault.synth`.

Enroll: each round enrolls a new person (or adds references to an existing one) with 2 to 4 images and
sends SIGKILL after a random delay drawn over the whole life of an enroll (half of the delays in its last
fifth, where the transaction commits and the index is saved). After every kill:

- all-or-nothing: the person has exactly the references it had before, or those plus every image of the
  killed call (compared by SHA-256), never a part of them;
- ``sigvault index check`` reports the index consistent with SQL; when it does not (the kill fell between
  the SQL commit and the index save) the next command that uses the index (``sigvault identify``) must
  repair it, checked by a second ``index check``;
- ``sigvault log verify`` reports the decision log intact (every 10th round and at the end).

Audit: manifests of mixed rows (genuine, forged, unknown person, missing image) are audited with
``--resume`` again and again, each run killed after a random delay, until a run finishes. Then every row
is in ``results.jsonl`` once, in manifest order, identical to an uninterrupted audit of the same manifest;
the decision log holds exactly one entry per decided row (counted per row index), none for error rows.

Prints a summary and writes it as JSON to ``--out``/summary.json. Exit status 1 if any check failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class Cli:
    """Runs ``sigvault`` commands against one home and database, each in its own process.

    ``fork=False``: ``python -m sigvault ...`` subprocesses. ``fork=True`` (the default): the same CLI
    entry point (``sigvault.cli.main``) in a process forked from this one, which has already imported
    sigvault and its libraries (not loaded the model: every command loads it as usual). Same code, same
    SIGKILL, without paying Python's and the libraries' start-up for every run, which on a machine busy
    with training and under ``nice -n 15`` costs tens of seconds each.
    """

    def __init__(self, home: Path, database_url: str | None, *, fork: bool = True) -> None:
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "SIGVAULT_HOME": str(home)}
        self.env["SIGVAULT_DATABASE_URL"] = database_url or ""
        self.fork = fork
        self.tmp = home.parent / "cli-output"
        self.tmp.mkdir(parents=True, exist_ok=True)
        if fork:
            import faiss  # noqa: F401
            import onnxruntime  # noqa: F401
            import scipy.ndimage  # noqa: F401
            import sqlalchemy  # noqa: F401

            import sigvault.audit  # noqa: F401
            import sigvault.cli  # noqa: F401
            import sigvault.db.engine  # noqa: F401
            import sigvault.report  # noqa: F401
            import sigvault.vault  # noqa: F401

    def cmd(self, *args: object) -> list[str]:
        return [sys.executable, "-m", "sigvault", *map(str, args)]

    def run(self, *args: object, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        if not self.fork:
            return subprocess.run(
                self.cmd(*args), env=self.env, capture_output=True, text=True, timeout=timeout, check=False
            )
        proc = self.start(*args)
        proc.wait(timeout)
        out, err = proc.outputs()
        return subprocess.CompletedProcess(self.cmd(*args), proc.returncode, out, err)

    def start(self, *args: object) -> Any:
        if not self.fork:
            return subprocess.Popen(self.cmd(*args), env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return Forked(self, [str(a) for a in args])


class Forked:
    """A forked ``sigvault`` command, with the part of the Popen interface this script uses."""

    def __init__(self, cli: Cli, args: list[str]) -> None:
        self.out = cli.tmp / f"{os.getpid()}-{time.monotonic_ns()}.out"
        self.err = self.out.with_suffix(".err")
        self.returncode: int | None = None
        self.stderr = None
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: become `sigvault ARGS`
            code = 1
            try:
                os.environ.clear()
                os.environ.update(cli.env)
                out = os.open(self.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                err = os.open(self.err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(out, 1)
                os.dup2(err, 2)
                sys.argv = ["sigvault", *args]
                from sigvault.cli import main

                try:
                    main()
                    code = 0
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.pid = pid

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(["sigvault"], timeout or 0)
            time.sleep(0.005)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def outputs(self) -> tuple[str, str]:
        texts = []
        for path in (self.out, self.err):
            texts.append(path.read_text(errors="replace") if path.exists() else "")
            path.unlink(missing_ok=True)
        return texts[0], texts[1]


def kill_after(proc: Any, delay: float) -> tuple[bool, float]:
    """SIGKILL ``proc`` after ``delay`` seconds unless it ended; returns (killed, seconds it ran)."""
    t0 = time.monotonic()
    try:
        proc.wait(timeout=delay)
        killed = False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed = True
    if proc.stderr is not None:
        proc.stderr.close()
    if isinstance(proc, Forked):
        proc.outputs()
    return killed, time.monotonic() - t0


def draw_delay(rng: random.Random, duration: float) -> float:
    """Over the whole life of the command, half of the time in its last fifth (commit and index save)."""
    if rng.random() < 0.5:
        return rng.uniform(0.0, duration)
    return rng.uniform(0.8 * duration, 1.05 * duration)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Checker:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.counts: Counter[str] = Counter()

    def fail(self, message: str) -> None:
        print(f"FAIL: {message}", flush=True)
        self.failures.append(message)


def references_of(cli: Cli, person: str, check: Checker) -> set[str] | None:
    out = cli.run("people", "show", person, "--json")
    if out.returncode == 1 and "is not enrolled" in out.stderr:
        return None
    if out.returncode != 0:
        check.fail(f"people show {person}: exit {out.returncode}: {out.stderr.strip()}")
        return None
    return {r["sha256"] for r in json.loads(out.stdout)["references"]}


def check_index_and_log(cli: Cli, check: Checker, probe: Path, label: str, *, log: bool = True) -> str:
    out = cli.run("index", "check")
    result = "index consistent"
    if out.returncode == 0:
        check.counts[f"{label}: index consistent right after the kill"] += 1
    else:
        result = "index behind SQL, repaired by identify"
        check.counts[f"{label}: index behind SQL after the kill (then repaired by the next command)"] += 1
        repaired = cli.run("identify", probe, "--top", "1")
        again = cli.run("index", "check")
        if repaired.returncode != 0 or again.returncode != 0:
            check.fail(f"{label}: index not repaired by identify: {out.stderr.strip()} / {again.stderr.strip()}")
    if not log:  # enroll does not write the log: checked every 10th round and at the end
        return result
    verified = cli.run("log", "verify")
    check.counts[f"{label}: log verify runs, all intact unless a failure is listed"] += 1
    if verified.returncode != 0:
        check.fail(f"{label}: log verify: {verified.stderr.strip()}")
    return result + ", log intact"


# ---------------------------------------------------------------------------------------------- enroll


def stress_enroll(
    cli: Cli, work: Path, kills: int, rng: random.Random, check: Checker, max_minutes: float
) -> dict[str, object]:
    from sigvault.synth import SyntheticWriter

    images = work / "enroll-images"
    images.mkdir(parents=True, exist_ok=True)

    def write_images(writer: int, first: int, n: int) -> list[Path]:
        paths = []
        w = SyntheticWriter(writer)
        for i in range(first, first + n):
            path = images / f"w{writer}-{i}.png"
            if not path.exists():
                w.genuine(i).save(path)
            paths.append(path)
        return paths

    # Calibrate: uninterrupted enrolls of 3 images; the kill delays are drawn over their median duration,
    # which is then kept up to date with the rounds that finished before their kill (the machine is shared).
    durations = []
    for k in range(3):
        t0 = time.monotonic()
        done = cli.run("enroll", f"calibration-{k}", *write_images(1000 + k, 0, 3))
        durations.append(time.monotonic() - t0)
        if done.returncode != 0:
            raise SystemExit(f"calibration enroll failed: {done.stderr}")
    probe = write_images(1000, 10, 1)[0]
    print(f"enroll: uninterrupted enrolls take {[round(d, 2) for d in durations]} s", flush=True)

    persons: dict[str, int] = {}  # person -> images used so far
    known: dict[str, set[str]] = {}  # person -> the references it has (SHA-256)
    killed = finished = 0
    round_no = 0
    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + 60 * max_minutes
    while killed < kills and time.monotonic() < deadline:
        round_no += 1
        existing = [p for p in persons if persons[p] < 12]
        if existing and rng.random() < 0.3:
            person = rng.choice(existing)
        else:
            person = f"person-{round_no}"
            persons[person] = 0
        writer = 1 + list(persons).index(person)
        n = rng.randint(2, 4)
        paths = write_images(writer, persons[person], n)
        new = {sha(p) for p in paths}
        before = known.get(person, set())  # what `people show` said after the previous round
        duration = statistics.median(durations[-9:])
        delay = draw_delay(rng, duration)
        proc = cli.start("enroll", person, *paths)
        was_killed, ran = kill_after(proc, delay)
        if not was_killed:
            durations.append(ran)
        killed += was_killed
        finished += not was_killed
        after = references_of(cli, person, check) or set()
        known[person] = after
        if after == before:
            outcome = "nothing enrolled"
        elif after == before | new:
            outcome = "all enrolled"
            persons[person] += n
        else:
            outcome = "PARTIAL"
            check.fail(f"enroll {person}: {len(after - before)} of {n} references after a kill at {ran:.2f} s")
        outcomes[f"{'killed' if was_killed else 'finished'}: {outcome}"] += 1
        if not was_killed and outcome != "all enrolled":
            check.fail(f"enroll {person} finished (exit {proc.returncode}) but enrolled nothing")
        stop = killed >= kills or time.monotonic() > deadline
        checked = check_index_and_log(cli, check, probe, "enroll", log=round_no % 10 == 0 or stop)
        print(
            f"enroll round {round_no}: {'killed' if was_killed else 'finished'} at {ran:.2f} s, {outcome}, {checked}",
            flush=True,
        )
    strays = sorted(str(p.name) for p in (Path(cli.env["SIGVAULT_HOME"]) / "index").glob(".*.tmp"))
    return {
        "uninterrupted_enroll_s_median": round(statistics.median(durations), 2),
        "rounds": round_no,
        "killed": killed,
        "finished_before_the_kill": finished,
        "outcomes": dict(outcomes),
        "stray_index_temp_files": len(strays),
    }


# ----------------------------------------------------------------------------------------------- audit


def build_manifest(work: Path, name: str, rows: int, persons: list[tuple[str, int]], rng: random.Random) -> Path:
    from sigvault.synth import SyntheticWriter

    folder = work / "audit-images"
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["item_id,person,image"]
    for i in range(rows):
        person, writer = rng.choice(persons)
        kind = rng.random()
        if kind < 0.05:
            lines.append(f"{name}-{i},nobody-{i},{folder / 'absent.png'}")
            continue
        if kind < 0.1:
            lines.append(f"{name}-{i},{person},{folder / 'absent.png'}")
            continue
        w = SyntheticWriter(writer)
        path = folder / f"{name}-{i}.png"
        (w.genuine(100 + i) if kind < 0.6 else w.forgery(i)).save(path)
        lines.append(f"{name}-{i},{person},{path}")
    manifest = work / f"{name}.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def audit_log_rows(cli: Cli, audit_id: str) -> Counter[int]:
    out = cli.run("log", "export")
    counts: Counter[int] = Counter()
    for line in out.stdout.splitlines():
        entry = json.loads(line)
        details = entry.get("details") or {}
        if entry["kind"] == "audit" and details.get("audit") == audit_id:
            counts[int(details["row"])] += 1
    return counts


def stress_audit(
    cli: Cli, work: Path, kills: int, rng: random.Random, check: Checker, rows: int, batch_size: int, max_minutes: float
) -> dict[str, object]:
    persons = [(f"person-{k}", k) for k in range(1, 5)]
    for person, writer in persons:  # make sure the audited persons exist (the enroll stress may have run)
        if references_of(cli, person, check) is None:
            from sigvault.synth import SyntheticWriter

            paths = []
            for i in range(3):
                paths.append(work / f"audit-ref-{writer}-{i}.png")
                SyntheticWriter(writer).genuine(50 + i).save(paths[-1])
            out = cli.run("enroll", person, *paths)
            if out.returncode != 0:
                raise SystemExit(f"enroll for the audit failed: {out.stderr}")
    probe = work / "audit-ref-probe.png"
    from sigvault.synth import SyntheticWriter

    SyntheticWriter(1).genuine(99).save(probe)

    killed = audits = 0
    per_audit = []
    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + 60 * max_minutes
    while killed < kills and time.monotonic() < deadline:
        audits += 1
        name = f"a{audits}"
        manifest = build_manifest(work, name, rows, persons, rng)
        reference = work / f"{name}-uninterrupted"
        t0 = time.monotonic()
        full = cli.run("audit", manifest, "--out", reference, "--batch-size", batch_size)
        duration = time.monotonic() - t0
        if full.returncode not in (0, 1):
            raise SystemExit(f"uninterrupted audit failed: {full.stderr}")
        out_dir = work / f"{name}-killed"
        attempts = audit_kills = 0
        while True:
            attempts += 1
            proc = cli.start("audit", manifest, "--out", out_dir, "--batch-size", batch_size, "--resume")
            if killed >= kills or audit_kills >= 12 or time.monotonic() > deadline:
                was_killed, ran = kill_after(proc, 3600)
            else:
                # a resumed run only decides what is left: draw over the whole run's duration anyway, so
                # kills also land in model loading, the resume's repair of the files and the report
                was_killed, ran = kill_after(proc, draw_delay(rng, duration))
            if not was_killed:
                if proc.returncode not in (0, 1):
                    check.fail(f"{name}: resumed audit exit {proc.returncode}")
                    err = cli.run("audit", manifest, "--out", out_dir, "--batch-size", batch_size, "--resume")
                    print(err.stderr, flush=True)
                    outcomes[f"resume refused: {err.stderr.strip()[:160]}"] += 1
                break
            killed += 1
            audit_kills += 1
            written = (
                (out_dir / "results.jsonl").read_bytes().count(b"\n") if (out_dir / "results.jsonl").exists() else 0
            )
            outcomes["killed"] += 1
            print(f"{name} attempt {attempts}: killed at {ran:.2f} s with {written}/{rows} rows written", flush=True)
        # every row exactly once, identical to the uninterrupted run
        same = (out_dir / "results.jsonl").read_bytes() == (reference / "results.jsonl").read_bytes()
        same_csv = (out_dir / "results.csv").read_bytes() == (reference / "results.csv").read_bytes()
        if not (same and same_csv):
            check.fail(f"{name}: results differ from the uninterrupted audit")
        records = [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines()]
        state = json.loads((out_dir / ".audit-state.json").read_text())
        logged = audit_log_rows(cli, state["audit_id"])
        decided = [i for i, r in enumerate(records) if r["decision"] != "error"]
        twice = sorted(i for i, n in logged.items() if n > 1)
        if sorted(logged) != decided or twice:
            check.fail(f"{name}: log rows {sorted(logged)[:5]}..., twice {twice[:5]}, decided {len(decided)}")
        per_audit.append(
            {
                "audit": name,
                "rows": len(records),
                "decided_rows": len(decided),
                "log_entries": sum(logged.values()),
                "rows_logged_twice": len(twice),
                "kills": audit_kills,
                "runs": attempts,
                "identical_to_uninterrupted": same and same_csv,
            }
        )
        check_index_and_log(cli, check, probe, "audit")
        print(f"{name}: {per_audit[-1]}", flush=True)
    return {"killed": killed, "audits": audits, "outcomes": dict(outcomes), "per_audit": per_audit}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--enroll-kills", type=int, default=50)
    parser.add_argument("--audit-kills", type=int, default=50)
    parser.add_argument("--rows", type=int, default=24, help="rows per audit manifest")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--max-minutes", type=float, default=float("inf"), help="per phase: start no new round after this"
    )
    parser.add_argument("--database-url", default=None, help="an empty database at head (default: SQLite in --out)")
    parser.add_argument("--out", type=Path, required=True, help="work directory (created; must be new)")
    parser.add_argument("--no-fork", action="store_true", help="start every command as `python -m sigvault`")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=False)
    rng = random.Random(args.seed)
    cli = Cli(args.out / "home", args.database_url, fork=not args.no_fork)
    check = Checker()
    started = time.monotonic()
    summary: dict[str, object] = {
        "command": " ".join(sys.argv),
        "database": args.database_url or "sqlite (in --out/home)",
        "model": os.environ.get("SIGVAULT_MODEL") or "shipped",
        "processes": "python -m sigvault" if args.no_fork else "forked from a parent that imported sigvault",
    }
    if args.enroll_kills:
        summary["enroll"] = stress_enroll(cli, args.out, args.enroll_kills, rng, check, args.max_minutes)
    if args.audit_kills:
        summary["audit"] = stress_audit(
            cli, args.out, args.audit_kills, rng, check, args.rows, args.batch_size, args.max_minutes
        )
    summary["checks"] = dict(check.counts)
    summary["failures"] = check.failures
    summary["elapsed_s"] = round(time.monotonic() - started, 1)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 1 if check.failures else 0


if __name__ == "__main__":
    sys.exit(main())
