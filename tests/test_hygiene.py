"""Reference hygiene and the audit trail: the enrolment gate, removing one reference, the minimum of references
and a plausible threshold before any automatic decision, one image for one person, thresholds outside the
calibrated range, confirmation before erasing a person, and every state change in the hash-chained log.

Over SQLite and PostgreSQL (the ``vault`` and ``cli`` fixtures), with the fake embedder; forged references are
drawn by :mod:`sigvault.synth` (never taken from a dataset).
"""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from conftest import FakeEmbedder, ImageFactory
from sqlalchemy import text
from test_cli import Invoke, cli, vault_state  # noqa: F401 - cli is a fixture
from typer.testing import CliRunner

from sigvault import imaging, scoring
from sigvault.cli import app
from sigvault.config import Settings, sqlite_url
from sigvault.db import decision_log
from sigvault.errors import NotEnoughReferencesError, ReferenceNotFoundError, UsageError
from sigvault.keys import ApiKeys
from sigvault.scoring import ScoringConfig
from sigvault.synth import SyntheticWriter
from sigvault.vault import Vault, upgrade_database


def synth_png(path: Path, writer: int, i: int, *, forged: bool = False) -> Path:
    """A synthetic writer's genuine signature ``i``, or a clumsy imitation of it by another hand."""
    w = SyntheticWriter(writer)
    image = w.forgery(i, skill=0.1) if forged else w.genuine(i)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return path


def entries(vault: Vault) -> list[decision_log.Entry]:
    return list(vault.log_entries())


def vectors_of(embedder: FakeEmbedder, paths: list[Path]) -> np.ndarray:
    return embedder.embed(np.stack([imaging.load_canvas(p, embedder.spec) for p in paths]))


# ------------------------------------------------------------------------------------ the enrolment gate


def test_a_forged_reference_is_refused_and_with_force_shown_and_logged(
    cli: Invoke, tmp_path: Path, home: Path, db_url: str  # noqa: F811
) -> None:
    genuine = [synth_png(tmp_path / f"alice-{i}.png", 3, i) for i in range(3)]
    assert cli("enroll", "alice", *genuine).exit_code == 0
    forged = synth_png(tmp_path / "forged.png", 3, 0, forged=True)
    before = vault_state(home, db_url)

    refused = cli("enroll", "alice", synth_png(tmp_path / "alice-5.png", 3, 5), forged)
    assert (refused.exit_code, refused.stdout) == (1, "")
    assert re.fullmatch(
        rf"error: {re.escape(str(forged))}: unlike 'alice''s other references \(score 0\.\d{{3}}, their threshold "
        r"0\.\d{3}\): another person's signature, an imitation, a blank or a stamp\? Nothing was enrolled; enrol it "
        r"anyway with --force \(and --reason\)\n",
        refused.stderr,
    )
    assert vault_state(home, db_url) == before  # nothing written, not even the good one beside it
    as_json = cli("enroll", "alice", forged, "--json")
    assert json.loads(as_json.stdout)["kind"] == "suspect_reference_error" and as_json.exit_code == 1

    forced = cli("--operator", "clerk-9", "--reason", "specimen confirmed by phone", "enroll", "alice", forged, "--force")
    assert forced.exit_code == 0, forced.stderr
    assert forced.stdout.splitlines()[0] == "added to 'alice': 1 reference(s) added, 4 in total"
    assert forced.stderr.startswith(f"warning: {forged}: unlike 'alice''s other references (score ")
    assert forced.stderr.endswith("); enrolled because forced\n")

    shown = cli("people", "show", "alice").stdout.splitlines()
    warning = shown[-1]
    assert re.fullmatch(
        r"  warning: reference 4 was refused by the enrolment gate \(score 0\.\d{3}, threshold 0\.\d{3}\), enrolled "
        r"with --force by clerk-9 \(log entry 2\) \(specimen confirmed by phone\)",
        warning,
    ), warning
    detail = json.loads(cli("people", "show", "alice", "--json").stdout)
    assert [r["forced"] is not None for r in detail["references"]] == [False, False, False, True]
    listed = json.loads(cli("people", "references", "alice", "--json").stdout)["references"]
    assert listed[3]["forced"] == detail["references"][3]["forced"]

    lines = [json.loads(line) for line in cli("log", "export", "--kind", "enroll").stdout.splitlines()]
    assert [(e["id"], e["operator"], e["reason"]) for e in lines][1] == (2, "clerk-9", "specimen confirmed by phone")
    assert [(f["reference_id"], f["source"]) for f in lines[1]["details"]["forced"]] == [(4, "forged.png")]
    assert "forced" not in lines[0]["details"]
    assert cli("log", "verify").stdout.startswith("decision log intact: 2 entries")


def test_good_references_pass_the_gate_in_one_batch(vault: Vault, tmp_path: Path) -> None:
    result = vault.enroll("alice", [synth_png(tmp_path / f"a{i}.png", 3, i) for i in range(4)])
    assert (result.n_references, result.forced, result.warnings) == (4, (), ())
    more = vault.enroll("alice", [synth_png(tmp_path / "a5.png", 3, 5)])
    assert (more.n_references, more.forced) == (5, ())


def test_the_same_image_cannot_be_two_persons_reference(cli: Invoke, images: ImageFactory, tmp_path: Path) -> None:  # noqa: F811
    refs = images.refs(1, 3)
    assert cli("enroll", "alice", *refs).exit_code == 0
    copy = tmp_path / "renamed.png"
    copy.write_bytes(refs[1].read_bytes())
    out = cli("enroll", "bob", *images.refs(2, 2), copy)
    assert (out.exit_code, out.stderr) == (
        1,
        f"error: {copy}: the same image is already enrolled for 'alice' (reference 2); one scan is one person's "
        "reference only; nothing was enrolled\n",
    )
    assert cli("people", "list").stdout.splitlines() == [
        line for line in cli("people", "list").stdout.splitlines() if line.startswith("alice\t")
    ]


# ------------------------------------------------------------------------------ one reference removed


def test_people_references_and_remove_reference(
    cli: Invoke, images: ImageFactory, vault: Vault, embedder: FakeEmbedder  # noqa: F811
) -> None:
    refs = images.refs(1, 4)
    assert cli("enroll", "alice", *refs).exit_code == 0
    listed = cli("people", "references", "alice")
    assert listed.exit_code == 0
    rows = listed.stdout.splitlines()
    assert rows[0].startswith("id\tsha256")
    vecs = vectors_of(embedder, refs)
    sims = vecs @ vecs.T
    as_json = json.loads(cli("people", "references", "alice", "--json").stdout)
    assert as_json["person"] == "alice"
    assert [r["reference_id"] for r in as_json["references"]] == [1, 2, 3, 4]
    for i, r in enumerate(as_json["references"]):
        others = np.delete(sims[i], i)
        assert r["mean_similarity"] == pytest.approx(float(others.mean()), abs=1e-5)
        assert r["min_similarity"] == pytest.approx(float(others.min()), abs=1e-5)
        assert r["source"] == f"p1-ref{i + 1}.png" and r["forced"] is None
        assert rows[i + 1].startswith(f"{i + 1}\t{r['sha256'][:16]}\t")
        assert rows[i + 1].endswith(f"\tp1-ref{i + 1}.png")

    out = cli("people", "remove-reference", "alice", "2")
    assert out.exit_code == 0, out.stderr
    left = np.delete(vecs, 1, axis=0)
    expected = scoring.person_threshold(left, embedder.scoring)
    assert out.stdout == (
        f"removed reference 2 of 'alice': 3 left, threshold {expected.value:.4f} ({expected.method})\n"
    )
    assert vault.person("alice").threshold == pytest.approx(expected.value, abs=1e-6)
    assert [r.reference_id for r in vault.person("alice").references] == [1, 3, 4]
    with vault.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM ref_images WHERE ref_id = 2")).scalar_one() == 0
    report = vault.check_index()
    assert report.consistent and report.sql.count == 3
    event = entries(vault)[-1]
    assert (event.kind, event.person_id, event.details["reference_id"], event.details["n_references"]) == (
        "reference-remove", "alice", 2, 3
    )
    assert event.threshold == pytest.approx(expected.value, abs=1e-6)

    below = cli("people", "remove-reference", "alice", "3")
    assert (below.exit_code, below.stderr) == (
        1,
        "error: removing reference 3 would leave 'alice' 2 reference(s), fewer than the 3 needed for automatic "
        "decisions; enrol another first, or pass --force\n",
    )
    unknown = cli("people", "remove-reference", "alice", "2", "--json")
    assert json.loads(unknown.stdout) == {
        "error": True,
        "kind": "reference_not_found_error",
        "message": "'alice' has no reference 2; see `sigvault people references alice`",
        "exit_code": 1,
    }
    forced = json.loads(cli("people", "remove-reference", "alice", "3", "--force", "--json").stdout)
    assert (forced["reference_id"], forced["n_references"]) == (3, 2)
    assert entries(vault)[-1].details["forced"] is True
    cli("people", "remove-reference", "alice", "4", "--force")
    last = cli("people", "remove-reference", "alice", "1", "--force")
    assert (last.exit_code, last.stderr) == (
        1,
        "error: reference 1 is the last of 'alice'; remove the person with `sigvault people remove alice` instead\n",
    )
    assert vault.check_index().consistent and cli("log", "verify").exit_code == 0


def test_remove_reference_errors_change_nothing(vault: Vault, images: ImageFactory) -> None:
    vault.enroll("alice", images.refs(1, 3))
    before = vault.person("alice")
    with pytest.raises(ReferenceNotFoundError):
        vault.remove_reference("alice", 7)
    with pytest.raises(NotEnoughReferencesError):
        vault.remove_reference("alice", 1)
    assert vault.person("alice") == before and len(entries(vault)) == 1


# ------------------------------------------------------------- minimum of references, plausible thresholds


def test_too_few_references_refer_every_decision(vault: Vault, images: ImageFactory) -> None:
    vault.enroll("alice", images.refs(1, 2))
    q, stranger = images.write("q.png", 1, 7), images.write("s.png", 2, 1)
    result = vault.verify("alice", q)
    reason = "2 reference(s), 3 needed before any automatic accept or reject"
    assert (result.decision, result.model_decision, result.referred) == ("refer", "accept", reason)
    assert vault.verify("alice", stranger).decision == "refer"  # a rejection is not automatic either
    logged = entries(vault)[-2]
    assert (logged.decision, logged.details) == ("refer", {"model_decision": "accept", "referred": reason})
    detail = vault.person("alice")
    assert (detail.automatic, detail.refer_reason, detail.min_references) == (False, reason, 3)

    vault.enroll("alice", [images.write("third.png", 1, 3)])
    assert vault.verify("alice", q).decision == "accept" and vault.verify("alice", q).referred is None
    assert vault.verify("alice", stranger).decision == "reject"
    assert vault.person("alice").automatic


def test_the_minimum_is_a_setting(settings: Settings, embedder: FakeEmbedder, images: ImageFactory) -> None:
    upgrade_database(settings)
    env = {"SIGVAULT_HOME": str(settings.home), "SIGVAULT_DATABASE_URL": settings.database_url}
    resolved = Settings.resolve(env={**env, "SIGVAULT_MIN_REFERENCES": "2"})
    assert resolved.min_references == 2
    with pytest.raises(UsageError, match=r"^SIGVAULT_MIN_REFERENCES='none' is not a positive whole number"):
        Settings.resolve(env={**env, "SIGVAULT_MIN_REFERENCES": "none"})
    with Vault.open(resolved, embedder=embedder) as vault:
        vault.enroll("alice", images.refs(1, 2))
        assert vault.verify("alice", images.write("q.png", 1, 7)).decision == "accept"
        assert vault.person("alice").min_references == 2


def test_an_implausible_threshold_refers_every_decision(cli: Invoke, images: ImageFactory) -> None:  # noqa: F811
    cli.models["current"] = FakeEmbedder(scoring=ScoringConfig(threshold_range=(0.9, 0.99)))  # type: ignore[attr-defined]
    cli("enroll", "alice", *images.refs(1, 3))
    shown = json.loads(cli("people", "show", "alice", "--json").stdout)
    assert shown["automatic"] is False
    assert re.fullmatch(
        r"threshold 0\.\d{4} is outside \[0\.9000, 0\.9900\], the range seen on calibration writers: the references "
        r"disagree too much, or too little; check them \(`sigvault people references`\)",
        shown["refer_reason"],
    )
    text_lines = cli("people", "show", "alice").stdout.splitlines()
    assert text_lines[2] == f"decisions  every one is refer: {shown['refer_reason']}"
    verified = cli("verify", "alice", images.write("q.png", 1, 7))
    assert "decision     refer\n" in verified.stdout
    assert f"referred     every decision is refer: {shown['refer_reason']}\n" in verified.stdout
    # an operator's override, inside the range, is the operator's to answer for: automatic again
    assert cli("people", "threshold", "alice", "0.95").exit_code == 0
    assert json.loads(cli("people", "show", "alice", "--json").stdout)["automatic"] is True


def test_thresholds_outside_the_calibrated_range_need_force(cli: Invoke, images: ImageFactory) -> None:  # noqa: F811
    cli.models["current"] = FakeEmbedder(scoring=ScoringConfig(threshold_range=(0.2, 0.9)))  # type: ignore[attr-defined]
    cli("enroll", "alice", *images.refs(1, 3))
    out = cli("people", "threshold", "alice", "0.95")
    assert (out.exit_code, out.stderr) == (
        2,
        "error: threshold 0.95 is outside [0.2000, 0.9000], the range of thresholds seen on calibration writers; "
        "pass --force (and --reason) to set it all the same\n",
    )
    low = cli("people", "threshold", "alice", "--json", "--", "-0.5")
    assert (low.exit_code, json.loads(low.stdout)["kind"]) == (2, "usage_error")
    forced = cli("--reason", "test cheque run", "people", "threshold", "alice", "0.95", "--force", "--json")
    assert json.loads(forced.stdout) == {
        "person": "alice", "threshold": 0.95, "threshold_method": "override", "is_override": True
    }
    absurd = cli("people", "threshold", "alice", "1.5", "--force")
    assert (absurd.exit_code, absurd.stderr) == (
        2, "error: threshold 1.5 is outside [-1, 1], the range of a cosine similarity score\n"
    )
    events = [json.loads(line) for line in cli("log", "export", "--kind", "threshold-set").stdout.splitlines()]
    assert len(events) == 1
    assert (events[0]["threshold"], events[0]["reason"], events[0]["details"]["forced"]) == (0.95, "test cheque run", True)
    assert events[0]["details"]["new"] == {"value": 0.95, "method": "override"}


# --------------------------------------------------------------------------------- people remove asks


def test_people_remove_asks_on_a_terminal(
    cli: Invoke, images: ImageFactory, home: Path, db_url: str, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    cli("enroll", "alice", *images.refs(1, 3))
    monkeypatch.setattr("sigvault.cli._stdin_is_terminal", lambda: True)
    env = {"SIGVAULT_HOME": str(home), "SIGVAULT_DATABASE_URL": db_url}
    runner = CliRunner()
    before = vault_state(home, db_url)
    no = runner.invoke(app, ["people", "remove", "alice"], input="n\n", env=env)
    assert no.exit_code == 1
    assert no.stderr.startswith("erase 'alice', 3 reference(s) and their stored images? [y/N]:")
    assert no.stderr.endswith("error: 'alice' was not removed\n")
    assert vault_state(home, db_url) == before
    yes = runner.invoke(app, ["people", "remove", "alice"], input="y\n", env=env)
    assert yes.exit_code == 0  # CliRunner echoes the typed answer to stdout; a terminal shows it where typed
    assert "removed 'alice' and 3 reference(s)" in yes.stdout.splitlines()  # then the erasure's line
    assert cli("people", "list").stdout == "nobody is enrolled\n"


# ------------------------------------------------------------------------------------ the audit trail


def test_every_state_change_is_logged_with_who_and_why(vault: Vault, images: ImageFactory) -> None:
    vault.operator, vault.reason = "clerk-1", "new account 5521"
    refs = images.refs(1, 4)
    enrolled = vault.enroll("alice", refs)
    computed = enrolled.threshold
    vault.set_threshold("alice", 0.5)
    reset = vault.set_threshold("alice", None)
    removal = vault.remove_reference("alice", 2)
    vault.enroll("bob", images.refs(2, 3), operator="api-key:teller")
    vault.remove("alice")
    keys = ApiKeys(vault.engine, operator=vault.operator, reason=vault.reason)
    keys.create("teller", "enroll")
    keys.revoke("teller")
    keys.revoke("teller")  # nothing changes: nothing logged

    log = entries(vault)
    assert [(e.id, e.kind, e.person_id) for e in log] == [
        (1, "enroll", "alice"),
        (2, "threshold-set", "alice"),
        (3, "threshold-reset", "alice"),
        (4, "reference-remove", "alice"),
        (5, "enroll", "bob"),
        (6, "person-remove", "alice"),
        (7, "key-create", ""),
        (8, "key-revoke", ""),
    ]
    assert [e.operator for e in log] == ["clerk-1"] * 4 + ["api-key:teller"] + ["clerk-1"] * 3
    assert {e.reason for e in log} == {"new account 5521"}
    assert all(e.is_event and e.score is None and e.probability is None for e in log)
    first = log[0].details
    assert first["created"] is True and first["n_references"] == 4
    assert [(r["reference_id"], r["sha256"]) for r in first["references"]] == [
        (a.reference_id, a.sha256) for a in enrolled.added
    ]
    assert log[0].threshold == pytest.approx(computed) and log[0].model_id == "fake-0"
    assert log[1].details["old"] == {"value": pytest.approx(computed), "method": enrolled.threshold_method,
                                     "is_override": False}
    assert (log[1].threshold, log[1].details["new"]) == (0.5, {"value": 0.5, "method": "override"})
    assert log[2].details["old"]["value"] == 0.5 and log[2].threshold == pytest.approx(reset.threshold)
    assert log[3].threshold == pytest.approx(removal.threshold)
    assert [r["reference_id"] for r in log[5].details["references"]] == [1, 3, 4]
    assert log[6].details == {"name": "teller", "scope": "enroll"}
    assert vault.log_verify().ok and vault.log_verify().entries == 8
    from sigvault.results import Verification

    with pytest.raises(ValueError, match="is a enroll event, not a verification"):
        Verification.from_entry(log[0], "x")


def test_reembed_and_restore_are_logged(settings: Settings, images: ImageFactory, tmp_path: Path) -> None:
    from sigvault.backup import backup_vault, restore_vault

    upgrade_database(settings)
    with Vault.open(settings, embedder=FakeEmbedder()) as vault:
        vault.enroll("alice", images.refs(1, 3))
    with Vault.open(settings, embedder=FakeEmbedder(seed=1)) as vault:
        vault.operator = "ops"
        vault.reembed()
        event = entries(vault)[-1]
        assert (event.kind, event.operator, event.model_id) == ("reembed", "ops", "fake-1")
        assert event.details == {
            "previous_models": {"fake-0": 3}, "n_references": 3, "n_persons": 1, "overrides_cleared": []
        }
    backup = backup_vault(settings, tmp_path / "bk")
    target = Settings(
        home=tmp_path / "restored",
        database_url=sqlite_url(tmp_path / "restored" / "sigvault.db"),
        operator="ops-2",
        reason="disaster drill",
    )
    result = restore_vault(target, tmp_path / "bk")
    assert result.tables["decisions"] == 2 and result.log_head[0] == 3
    with Vault.open(target, embedder=FakeEmbedder(seed=1)) as vault:
        restored = entries(vault)[-1]
        assert (restored.id, restored.kind, restored.operator, restored.reason) == (3, "restore", "ops-2", "disaster drill")
        assert restored.details["backup_head"] == {"id": 2, "hash": backup.manifest["log"]["head_hash"]}
        assert restored.details["replaced"] is None
        assert vault.log_verify().ok


def test_log_export_filters_keep_each_line_checkable(cli: Invoke, images: ImageFactory, tmp_path: Path) -> None:  # noqa: F811
    cli("enroll", "alice", *images.refs(1, 3))
    cli("enroll", "bob", *images.refs(2, 3))
    cli("verify", "alice", images.write("q.png", 1, 7))
    cli("people", "threshold", "bob", "0.6")

    def export(*args: str) -> list[dict]:
        out = cli("log", "export", *args)
        assert out.exit_code == 0, out.stderr
        return [json.loads(line) for line in out.stdout.splitlines()]

    everything = export()
    assert [(e["kind"], e["person_id"]) for e in everything] == [
        ("enroll", "alice"), ("enroll", "bob"), ("verify", "alice"), ("threshold-set", "bob")
    ]
    assert [e["id"] for e in export("--person", "alice")] == [1, 3]
    assert [e["id"] for e in export("--kind", "enroll", "--kind", "threshold-set")] == [1, 2, 4]
    assert [e["id"] for e in export("--person", "bob", "--kind", "verify")] == []
    today = datetime.now(UTC).date()
    assert len(export("--since", today.isoformat(), "--until", today.isoformat())) == 4
    assert export("--since", (today + timedelta(days=1)).isoformat()) == []
    assert export("--until", (today - timedelta(days=1)).isoformat()) == []
    subset = export("--kind", "verify", "--kind", "enroll")
    assert all(decision_log.exported_entry_ok(e) for e in subset)
    assert subset[1]["prev_hash"] == everything[0]["hash"]  # the chain fields travel with each line
    subset[2]["decision"] = "reject"
    assert not decision_log.exported_entry_ok(subset[2])

    written = tmp_path / "alice.jsonl"
    assert cli("log", "export", "--person", "alice", "-o", written).exit_code == 0
    checked = cli("log", "verify", "--export", written)
    assert (checked.exit_code, checked.stdout) == (0, f"{written}: 2 entries intact (0 chained to the entry before)\n")
    whole = tmp_path / "all.jsonl"
    cli("log", "export", "-o", whole)
    assert cli("log", "verify", "--export", whole).stdout == f"{whole}: 4 entries intact (3 chained to the entry before)\n"
    lines = whole.read_text().splitlines()
    lines[2] = lines[2].replace('"decision": "accept"', '"decision": "reject"')
    whole.write_text("\n".join(lines) + "\n")
    broken = cli("log", "verify", "--export", whole)
    assert (broken.exit_code, broken.stderr) == (1, f"error: {whole}: line 3 (entry 3) was altered\n")
    lines = [json.loads(line) for line in written.read_text().splitlines()]
    written.write_text("\n".join(json.dumps(x) for x in reversed(lines)) + "\n")
    assert cli("log", "verify", "--export", written).stderr == f"error: {written}: line 2: entry 1 is out of order\n"

    bad_kind = cli("log", "export", "--kind", "decisions")
    assert (bad_kind.exit_code, bad_kind.stderr) == (
        2,
        "error: --kind 'decisions' is not a log entry kind; use one of verify, audit, enroll, reference-remove, "
        "threshold-set, threshold-reset, person-remove, restore, reembed, key-create, key-revoke, review\n",
    )
    bad_date = cli("log", "export", "--since", "12/01/2026")
    assert (bad_date.exit_code, bad_date.stderr) == (
        2, "error: --since '12/01/2026' is not a date; write it as YYYY-MM-DD (UTC)\n"
    )
    backwards = cli("log", "export", "--since", "2026-12-02", "--until", "2026-12-01")
    assert backwards.stderr == "error: --since 2026-12-02 is after --until 2026-12-01; nothing could match\n"
