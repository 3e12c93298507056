"""``sigvault audit --cluster``: the audit on a Dask LocalCluster of 2 worker processes over PostgreSQL.

Every test checks what the user gets: the result files row by row against a single-process audit of the same
manifest on the same vault, and the decision log (one entry per decided row, ``log verify`` clean). The vault
uses the real shipped model (the workers load it themselves, as in production), small drawn images and a
manifest of some 55 rows with bad rows among them; one module-scoped PostgreSQL database holds it, and each
audit is told apart by its audit id.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import pg_database
from test_audit import Dataset, audit_entries, build_dataset, read_jsonl, same_files

from sigvault.audit import run_audit
from sigvault.config import Settings

pytest.importorskip("distributed", reason="the cluster extra is not installed: pip install 'sigvault[cluster]'")

TESTS = Path(__file__).resolve().parent
BATCH, PARTITION = 4, 8  # small partitions: several per worker, so faults land mid-run
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}


@dataclass
class World:
    settings: Settings
    data: Dataset
    single: Path  # the single-process audit's output folder: what every cluster run must reproduce
    root: Path

    @property
    def env(self) -> dict[str, str]:
        return {**ENV, "SIGVAULT_HOME": str(self.settings.home), "SIGVAULT_DATABASE_URL": self.settings.database_url}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A PostgreSQL vault (its own database) with 4 enrolled persons, a manifest and its single-process audit."""
    from sigvault.vault import Vault, upgrade_database

    root = tmp_path_factory.mktemp("cluster")
    with pg_database("sigvault_cluster") as url:
        settings = Settings(home=root / "home", database_url=url)
        upgrade_database(settings)
        with Vault.open(settings) as vault:
            data = build_dataset(vault, root, persons=4, items=48)
            # one row names its image by URL (read through fsspec), on one machine and on the workers alike
            url_row = {**data.rows[1], "item_id": "URL-0", "image": (root / data.rows[1]["image"]).as_uri()}
            data.rows.append(url_row)
            with open(data.manifest, "a", newline="", encoding="utf-8") as fh:
                csv.DictWriter(fh, data.columns).writerow(url_row)
            single = root / "single"
            run_audit(vault, data.manifest, single, batch_size=BATCH)
        yield World(settings, data, single, root)


KILLER = '''
"""Dask worker preload: once armed (the file named by SIGVAULT_TEST_KILL exists), the first worker to commit a
batch of decisions SIGKILLs itself right after the commit, before its partition is done."""
import os, signal
import sigvault.vault

_arm = os.environ["SIGVAULT_TEST_KILL"]
Vault = sigvault.vault.Vault
_verify_many = Vault.__dict__.get("_unpatched_verify_many", Vault.verify_many)  # the preload may run twice
Vault._unpatched_verify_many = _verify_many


def verify_many(self, *args, **kwargs):
    out = _verify_many(self, *args, **kwargs)
    try:
        os.rename(_arm, _arm + ".fired")  # one worker wins, once
    except OSError:
        return out
    with open(_arm + ".fired", "w") as fh:
        fh.write(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)


sigvault.vault.Vault.verify_many = verify_many
'''


@dataclass
class Cluster:
    address: str
    client: object
    arm: Path  # create it to have a worker SIGKILL itself after its next commit


@pytest.fixture(scope="module")
def cluster(world: World) -> Iterator[Cluster]:
    """A LocalCluster of 2 worker processes (1 thread each) reached over tcp, as a remote scheduler would be."""
    from distributed import Client, LocalCluster

    preload = world.root / "killer.py"
    preload.write_text(KILLER)
    arm = world.root / "kill-armed"
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            preload=[str(preload)],
            env={"SIGVAULT_TEST_KILL": str(arm), "PYTHONPATH": ENV["PYTHONPATH"]},
        ) as local,
        Client(local) as client,
    ):
        yield Cluster(local.scheduler_address, client, arm)


def audit_cli(world: World, out: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sigvault", "audit", str(world.data.manifest), "--out", str(out), "--batch-size",
         str(BATCH), "--partition-size", str(PARTITION), *args],
        env=world.env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def check_log(world: World, out: Path) -> None:
    """Every decided row of the audit in ``out`` is in the decision log exactly once, and the chain verifies."""
    from sigvault.vault import Vault

    audit_id = json.loads((out / "summary.json").read_text())["audit_id"]
    records = read_jsonl(out / "results.jsonl")
    decided = {i for i, r in enumerate(records) if r["decision"] != "error"}
    with Vault.open(world.settings) as vault:
        entries = audit_entries(vault, audit_id)
        rows = [e.details["row"] for e in entries]
        assert sorted(rows) == sorted(decided)  # each decided row once, nothing else
        for e in entries:  # the logged decision is the one in the results
            assert (e.details["item_id"], e.decision) == (records[e.details["row"]]["item_id"], records[e.details["row"]]["decision"])
    verify = subprocess.run([sys.executable, "-m", "sigvault", "log", "verify"], env=world.env, capture_output=True, text=True, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.postgres
@pytest.mark.slow
def test_local_cluster_matches_single_process(world: World) -> None:
    """`--cluster local:2`: the same result files as the single-process audit, bad rows as error rows."""
    out = world.root / "local2"
    done = audit_cli(world, out, "--cluster", "local:2", "--json")
    assert done.returncode == 1, done.stderr  # some rows could not be decided, as on one machine
    same_files(world.single, out)
    records = read_jsonl(out / "results.jsonl")
    assert [r["item_id"] for r in records] == [r["item_id"] for r in world.data.rows]
    errors = {r["item_id"]: r["error_kind"] for r in records if r["decision"] == "error"}
    assert errors == {
        "BAD-0": "unknown_person",
        "BAD-1": "unreadable_image",
        "BAD-2": "no_ink",
        "BAD-3": "missing_image",
        "BAD-4": "unreadable_image",
        "BAD-5": "invalid_person",
    }
    assert next(r for r in records if r["item_id"] == "URL-0")["decision"] != "error"  # read through fsspec
    summary = json.loads(done.stdout)
    single = json.loads((world.single / "summary.json").read_text())
    assert summary["counts"] == single["counts"] and summary["error_kinds"] == single["error_kinds"]
    assert summary["cluster"] == "local:2" and summary["workers"] == 2
    check_log(world, out)


@pytest.mark.postgres
@pytest.mark.slow
def test_worker_sigkilled_mid_partition(world: World, cluster: Cluster) -> None:
    """A worker SIGKILLed right after committing part of a partition: the scheduler reruns the partition on
    another worker, the rerun logs only what was not logged, and the audit completes with every row once."""
    from sigvault.audit import run_cluster_audit

    before = set(cluster.client.run(os.getpid).values())  # type: ignore[attr-defined]
    cluster.arm.write_text("armed")
    out = world.root / "killed-worker"
    summary = run_cluster_audit(
        world.settings, world.data.manifest, out, cluster=cluster.address, batch_size=BATCH, partition_size=PARTITION
    )
    fired = Path(f"{cluster.arm}.fired")
    assert fired.exists() and int(fired.read_text()) in before  # a worker really died mid-run
    same_files(world.single, out)
    assert summary.rows == len(world.data.rows)
    check_log(world, out)


CLIENT = """
import sys, time
from pathlib import Path
from sigvault.audit import run_cluster_audit
from sigvault.config import Settings

settings = Settings(home=Path({home!r}), database_url={url!r})
run_cluster_audit(settings, Path(sys.argv[1]), Path(sys.argv[2]), cluster={address!r}, batch_size={batch},
                  partition_size={partition}, in_flight=2, progress=lambda p: time.sleep(0.3))
"""


@pytest.mark.postgres
@pytest.mark.slow
def test_client_killed_then_resume(world: World, cluster: Cluster) -> None:
    """The client SIGKILLed mid-run: `--resume` skips the partitions written and completes the audit, with
    the files of the single-process audit and each decision logged once."""
    out = world.root / "killed-client"
    script = world.root / "client.py"
    script.write_text(
        CLIENT.format(
            home=str(world.settings.home), url=world.settings.database_url, address=cluster.address, batch=BATCH, partition=PARTITION
        )
    )
    proc = subprocess.Popen([sys.executable, str(script), str(world.data.manifest), str(out)], env=world.env, stderr=subprocess.PIPE)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if results.exists() and results.read_bytes().count(b"\n") >= 2 * PARTITION:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the audit ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"  # type: ignore[union-attr]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()  # type: ignore[union-attr]
    written = results.read_bytes().count(b"\n")
    assert 2 * PARTITION <= written < len(world.data.rows)

    done = audit_cli(world, out, "--cluster", cluster.address, "--resume", "--json")
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    assert summary["resumed_rows"] == written
    same_files(world.single, out)
    check_log(world, out)


def test_a_repeated_batch_logs_each_item_once(vault, images) -> None:  # noqa: ANN001
    """The exactly-once rule a cluster worker relies on, on both backends: a partition rerun after its worker
    committed part of it logs only the rows not yet logged, and returns the stored decisions of the others."""
    from sigvault.vault import LogOnce, VerifyItem

    vault.enroll("alice", images.refs(1, 3))
    vault.verify("alice", images.write("other.png", 1, 8))  # an entry of another kind, before the audit
    once = LogOnce(after=vault.log_head(), scope={"audit": "A"})
    items = [VerifyItem("alice", images.write(f"q{r}.png", 1, 10 + r), details={"audit": "A", "row": r}) for r in range(4)]
    first = vault.verify_many(items[:2], batch_size=2, once=once)  # committed, then the worker died
    rerun = vault.verify_many(items, batch_size=2, once=once)
    entries = [e for e in vault.log_entries() if (e.details or {}).get("audit") == "A"]
    assert sorted(e.details["row"] for e in entries) == [0, 1, 2, 3]
    assert [r.decision_id for r in rerun[:2]] == [r.decision_id for r in first]  # the stored decisions
    assert vault.log_verify().ok


def test_sqlite_vault_refused(tmp_path: Path) -> None:
    """A SQLite vault cannot be shared by workers on other machines: refused in one line, nothing written."""
    out = tmp_path / "out"
    manifest = tmp_path / "m.csv"
    manifest.write_text("item_id,person,image\nA-1,alice,a.png\n")
    env = {**ENV, "SIGVAULT_HOME": str(tmp_path / "home")}
    env.pop("SIGVAULT_DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "sigvault", "audit", str(manifest), "--out", str(out), "--cluster", "local:2"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "PostgreSQL" in done.stderr and "nothing was audited" in done.stderr
    assert not out.exists()


def test_missing_dask_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from sigvault.audit import run_cluster_audit
    from sigvault.errors import UsageError

    monkeypatch.setitem(sys.modules, "distributed", None)  # as if Dask were not installed
    settings = Settings(home=tmp_path / "home", database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    with pytest.raises(UsageError, match=r"pip install 'sigvault\[cluster\]'"):
        run_cluster_audit(settings, tmp_path / "m.csv", tmp_path / "out", cluster="local:2")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text", ["local:0", "local:two", "scheduler:8786", ""])
def test_bad_cluster_address(text: str) -> None:
    from sigvault.audit.cluster import parse_cluster
    from sigvault.errors import UsageError

    with pytest.raises(UsageError, match="--cluster"):
        parse_cluster(text)
