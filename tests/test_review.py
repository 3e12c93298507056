"""The review loop (``sigvault review``): a reviewer's outcome beside the model's decision in the log, outcomes
imported from a CSV all or nothing, and the disagreement figures, exact on a constructed set of decisions.

CLI tests run in-process with the fake embedder over SQLite and PostgreSQL (the ``cli`` fixture of
``test_cli.py``); the report's buttons and export are clicked in a real browser in
``test_audit_report_browser.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import ImageFactory
from test_cli import Invoke, _assert_one_line_error, cli, vault_state  # noqa: F401 - cli is a fixture


def log(cli: Invoke) -> list[dict[str, Any]]:  # noqa: F811
    out = cli("log", "export")
    assert out.exit_code == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def rows(text: str) -> dict[str, str]:
    return dict(line.split(None, 1) for line in text.splitlines())


def verified(cli: Invoke, images: ImageFactory, person: int, variant: int, name: str = "alice") -> dict[str, Any]:  # noqa: F811
    out = cli("verify", name, images.write(f"q-{person}-{variant}.png", person, variant), "--json")
    assert out.exit_code == 0, out.stderr
    return json.loads(out.stdout)


# ------------------------------------------------------------------------------------------ review ITEM


def test_review_records_the_outcome_beside_the_decision(cli: Invoke, images: ImageFactory) -> None:  # noqa: F811
    assert cli("enroll", "alice", *images.refs(1, 3)).exit_code == 0
    genuine = verified(cli, images, 1, 7)
    forged = verified(cli, images, 2, 1)
    assert (genuine["decision"], forged["decision"]) == ("accept", "reject")

    out = cli("--operator", "j.meier", "review", str(forged["decision_id"]), "--outcome", "forged", "--reason", "unlike the card")
    assert out.exit_code == 0, out.stderr
    shown = rows(out.stdout)
    assert list(shown) == ["review-id", "decision-id", "outcome", "reviewer", "reason"]
    first_review = int(shown["review-id"].split()[0])
    assert shown["review-id"] == f"{first_review} (in the decision log)" and first_review > forged["decision_id"]
    assert shown["decision-id"] == (
        f"{forged['decision_id']}: reject for alice (score {forged['score']:.4f}, threshold {forged['threshold']:.4f}, "
        f"P(genuine) {forged['probability']:.3f})"
    )
    assert shown["outcome"] == "forged: the reviewer agrees with the model"
    assert (shown["reviewer"], shown["reason"]) == ("j.meier", "unlike the card")
    assert out.stderr == ""

    # the accepted item found forged: a disagreement, said so; `review record` is the long form
    out = cli("--operator", "j.meier", "review", "record", str(genuine["decision_id"]), "--outcome", "Forged", "--json")
    assert out.exit_code == 0, out.stderr
    payload = json.loads(out.stdout)
    assert {k: payload[k] for k in ("review_id", "decision_id", "outcome", "decision", "agreement", "supersedes")} == {
        "review_id": first_review + 1,
        "decision_id": genuine["decision_id"],
        "outcome": "forged",
        "decision": "accept",
        "agreement": "disagree",
        "supersedes": None,
    }
    assert payload["probability"] == pytest.approx(genuine["probability"])

    entries = log(cli)
    assert [e["kind"] for e in entries if e["kind"] in ("verify", "review")] == ["verify", "verify", "review", "review"]
    review = [e for e in entries if e["kind"] == "review"]
    assert [(e["decision"], e["operator"], e["reason"], e["person_id"]) for e in review] == [
        ("forged", "j.meier", "unlike the card", "alice"),
        ("forged", "j.meier", None, "alice"),
    ]
    assert review[0]["details"] == {
        "decision_id": forged["decision_id"],
        "decision": "reject",
        "model_decision": "reject",
        "score": forged["score"],
        "threshold": forged["threshold"],
        "probability": forged["probability"],
        "decided_at": next(e["at"] for e in entries if e["id"] == forged["decision_id"]),
        "kind": "verify",
    }
    assert review[0]["score"] is None and review[0]["threshold"] == forged["threshold"]
    assert cli("log", "verify").exit_code == 0


def test_a_second_review_needs_amend_and_supersedes(cli: Invoke, images: ImageFactory, home: Path, db_url: str) -> None:  # noqa: F811
    cli("enroll", "alice", *images.refs(1, 3))
    decision = verified(cli, images, 1, 7)["decision_id"]
    first = cli("--operator", "bob", "review", str(decision), "--outcome", "forged", "--json")
    assert first.exit_code == 0
    first_id = json.loads(first.stdout)["review_id"]
    before = vault_state(home, db_url)
    again = cli("review", str(decision), "--outcome", "genuine")
    _assert_one_line_error(
        again,
        1,
        f"decision {decision} was already reviewed: forged by bob (review {first_id}); pass --amend to record a new outcome "
        "that supersedes it",
    )
    assert vault_state(home, db_url) == before
    as_json = cli("review", str(decision), "--outcome", "genuine", "--json")
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["kind"] == "already_reviewed_error"

    amended = cli("--operator", "carol", "review", str(decision), "--outcome", "genuine", "--amend", "--reason", "phoned")
    assert amended.exit_code == 0, amended.stderr
    assert rows(amended.stdout)["supersedes"] == f"review {first_id} (forged), which stays in the log"
    reviews = [e for e in log(cli) if e["kind"] == "review"]
    assert [(e["id"], e["decision"], e["operator"], e["details"].get("supersedes")) for e in reviews] == [
        (first_id, "forged", "bob", None),
        (first_id + 1, "genuine", "carol", first_id),
    ]
    assert cli("log", "verify").exit_code == 0


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("review", "99", "--outcome", "forged"), 1, "decision 99 is not in the decision log; see `sigvault log export`"),
        (("review", "0", "--outcome", "forged"), 1, "decision 0 is not in the decision log; ids start at 1"),
        (
            ("review", "{r}", "--outcome", "forged"),
            1,
            "log entry {r} is an event (review), not a decision; give the id of a verify or audit decision (`sigvault "
            "log export` lists them)",
        ),
        (("review", "{d}", "--outcome", "maybe"), 2, "outcome 'maybe' is not genuine or forged; give one of them"),
        (("review", "{d}"), 2, "give the reviewer's outcome: --outcome genuine or --outcome forged"),
        (
            ("review", "12a", "--outcome", "forged"),
            2,
            "ITEM '12a' is not a decision id; give the decision_id that verify --json or the report shows",
        ),
        (("review", "{d}", "--outcome", "forged", "--reason", "x" * 1001), 2, "the reason is 1001 characters long; the limit is 1000"),
    ],
)
def test_bad_reviews_are_refused_and_change_nothing(
    cli: Invoke, images: ImageFactory, home: Path, db_url: str, args: tuple[str, ...], code: int, message: str  # noqa: F811
) -> None:
    cli("enroll", "alice", *images.refs(1, 3))
    decision = verified(cli, images, 1, 7)["decision_id"]
    other = verified(cli, images, 1, 8)["decision_id"]
    review = json.loads(cli("review", str(other), "--outcome", "genuine", "--json").stdout)["review_id"]
    before = vault_state(home, db_url)
    args = tuple(a.format(d=decision, r=review) for a in args)
    message = message.format(r=review)
    _assert_one_line_error(cli(*args), code, message)
    as_json = cli(*args, "--json")
    assert as_json.exit_code == code and json.loads(as_json.stdout)["message"] == message
    assert vault_state(home, db_url) == before


# -------------------------------------------------------------------------------------------- stats

# (decision as logged, P(genuine), reviewers' outcomes in order, audit) of a constructed set of decisions
CONSTRUCTED = [
    ("accept", 0.95, ["genuine"], None),
    ("accept", 0.92, ["forged"], None),  # an accepted forgery
    ("accept", 0.75, ["genuine"], None),
    ("refer", 0.55, ["genuine"], None),
    ("refer", 0.45, ["genuine"], None),  # leans forged, found genuine
    ("refer", 0.40, ["forged"], None),
    ("reject", 0.05, ["forged"], None),
    ("reject", 0.20, ["genuine"], None),  # a rejected genuine signature
    ("reject", 0.08, ["genuine", "forged"], None),  # amended: counts once, as forged
    ("accept", 1.00, ["genuine"], None),  # the top band includes 1
    ("accept", 0.99, [], None),  # never reviewed: not counted
    ("reject", 0.02, ["forged"], "audit-A1"),
]


def construct(vault: Any, cli: Invoke) -> list[int]:  # noqa: F811
    """Log the constructed decisions as they stand (exact probabilities), then review them with the CLI."""
    from sigvault.db import decision_log
    from sigvault.db.engine import transaction

    news = [
        decision_log.NewEntry(
            kind="audit" if audit else "verify",
            person_id=f"p{i % 3}",
            image_sha256=f"{i:064x}",
            score=p - 0.5,
            threshold=0.0,
            threshold_method="constructed",
            decision=decision,
            probability=p,
            model_id="fake-0",
            references_used=[],
            details={"audit": audit, "row": i, "item_id": f"CHQ-{i}"} if audit else None,
        )
        for i, (decision, p, _, audit) in enumerate(CONSTRUCTED)
    ]
    with transaction(vault.engine, write=True) as conn:
        ids = [e.id for e in decision_log.append(conn, news)]
    for decision_id, (_, _, outcomes, _) in zip(ids, CONSTRUCTED, strict=True):
        for k, outcome in enumerate(outcomes):
            out = cli("review", str(decision_id), "--outcome", outcome, *(["--amend"] if k else []))
            assert out.exit_code == 0, out.stderr
    return ids


def band(name: str, reviewed: int, genuine: int, disagree: int | None, mean: float, **extra: float) -> dict[str, Any]:
    return {
        "band": name,
        **extra,
        "reviewed": reviewed,
        "genuine": genuine,
        "forged": reviewed - genuine,
        "genuine_rate": pytest.approx(genuine / reviewed),
        "mean_probability": pytest.approx(mean),
        "disagree": disagree,
        "disagree_rate": None if disagree is None else pytest.approx(disagree / reviewed),
    }


def empty(name: str, lo: float, hi: float) -> dict[str, Any]:
    return {"band": name, "low": lo, "high": hi, "reviewed": 0, "genuine": 0, "forged": 0, "genuine_rate": None,
            "mean_probability": None, "disagree": 0, "disagree_rate": None}


def test_stats_are_exact_on_a_constructed_set(vault: Any, cli: Invoke) -> None:  # noqa: F811
    construct(vault, cli)
    out = cli("review", "stats", "--json")
    assert out.exit_code == 0, out.stderr
    stats = json.loads(out.stdout)
    assert {k: stats[k] for k in ("since", "audit", "reviewed", "reviews", "superseded")} == {
        "since": None, "audit": None, "reviewed": 11, "reviews": 12, "superseded": 1,
    }
    assert stats["by_decision"] == [
        band("accept", 4, 3, 1, (0.95 + 0.92 + 0.75 + 1.0) / 4),
        band("refer", 3, 2, None, (0.55 + 0.45 + 0.40) / 3),
        band("reject", 4, 1, 1, (0.05 + 0.20 + 0.08 + 0.02) / 4),
    ]
    assert stats["decided"] == band("accept+reject", 8, 4, 2, (0.95 + 0.92 + 0.75 + 1.0 + 0.05 + 0.20 + 0.08 + 0.02) / 8)
    assert stats["by_probability"] == [
        band("0.0-0.1", 3, 0, 0, (0.05 + 0.08 + 0.02) / 3, low=0.0, high=0.1),
        band("0.1-0.3", 1, 1, 1, 0.20, low=0.1, high=0.3),
        band("0.3-0.5", 2, 1, 1, (0.45 + 0.40) / 2, low=0.3, high=0.5),
        band("0.5-0.7", 1, 1, 0, 0.55, low=0.5, high=0.7),
        band("0.7-0.9", 1, 1, 0, 0.75, low=0.7, high=0.9),
        band("0.9-1.0", 3, 2, 1, (0.95 + 0.92 + 1.0) / 3, low=0.9, high=1.0),
    ]

    text = cli("review", "stats")
    assert text.exit_code == 0
    assert text.stdout.splitlines() == [
        "11 reviewed decision(s) (12 review(s), 1 superseded)",
        "",
        "decision       reviewed  genuine  forged  disagree",
        "accept                4        3       1  1 (25.0 %)",
        "refer                 3        2       1  -",
        "reject                4        1       3  1 (25.0 %)",
        "accept+reject         8        4       4  2 (25.0 %)",
        "",
        "P(genuine)     reviewed  genuine  forged  mean P  genuine share  disagree",
        "0.0-0.1               3        0       3   0.050          0.000  0 (0.0 %)",
        "0.1-0.3               1        1       0   0.200          1.000  1 (100.0 %)",
        "0.3-0.5               2        1       1   0.425          0.500  1 (50.0 %)",
        "0.5-0.7               1        1       0   0.550          1.000  0 (0.0 %)",
        "0.7-0.9               1        1       0   0.750          1.000  0 (0.0 %)",
        "0.9-1.0               3        2       1   0.957          0.667  1 (33.3 %)",
    ]

    one = json.loads(cli("review", "stats", "--audit", "audit-A1", "--json").stdout)
    assert (one["audit"], one["reviewed"], one["by_decision"][2]["forged"], one["by_decision"][0]["reviewed"]) == (
        "audit-A1", 1, 1, 0,
    )
    assert json.loads(cli("review", "stats", "--since", "2000-01-01", "--json").stdout)["reviewed"] == 11
    later = cli("review", "stats", "--since", "2999-01-01")
    assert later.stdout == (
        "no reviewed decisions decided since 2999-01-01T00:00:00+00:00; record outcomes with "
        "`sigvault review ITEM --outcome ...`\n"
    )
    _assert_one_line_error(
        cli("review", "stats", "--since", "yesterday"), 2, "--since 'yesterday' is not a date; use YYYY-MM-DD (or an ISO date and time)"
    )
    assert cli("log", "verify").exit_code == 0


def test_an_audits_summary_gains_its_review_figures(vault: Any, cli: Invoke, tmp_path: Path) -> None:  # noqa: F811
    from test_audit import build_dataset

    data = build_dataset(vault, tmp_path, persons=5, items=30)
    out = tmp_path / "out"
    assert cli("audit", data.manifest, "--out", out, "--quiet").exit_code == 1  # the dataset's 6 bad rows
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reviews"] is None
    decisions = [e for e in log(cli) if e["kind"] == "audit" and e["details"]["audit"] == summary["audit_id"]]
    assert len(decisions) == 30
    rejected = [e for e in decisions if e["decision"] == "reject"][:2]
    accepted = [e for e in decisions if e["decision"] == "accept"][:1]
    assert len(rejected) == 2 and accepted
    for e, outcome in [(rejected[0], "forged"), (rejected[1], "genuine"), (accepted[0], "genuine")]:
        done = cli("review", str(e["id"]), "--outcome", outcome)
        assert done.exit_code == 0, done.stderr
        assert rows(done.stdout)["audit"] == f"{summary['audit_id']}, row {e['details']['row'] + 1}, item {e['details']['item_id']}"
    other = cli("verify", "p0", data.manifest.parent / data.rows[0]["image"], "--json")  # outside the audit
    cli("review", str(json.loads(other.stdout)["decision_id"]), "--outcome", "forged")

    by_id = cli("review", "stats", "--audit", summary["audit_id"], "--json")
    figures = json.loads(by_id.stdout)
    assert (figures["reviewed"], figures["decided"]["reviewed"], figures["decided"]["disagree"]) == (3, 3, 1)
    assert [b["reviewed"] for b in figures["by_decision"]] == [1, 0, 2]
    assert json.loads(cli("review", "stats", "--json").stdout)["reviewed"] == 4

    updated = cli("review", "stats", "--audit", out, "--update-summary")
    assert updated.exit_code == 0, updated.stderr
    assert updated.stdout.splitlines()[0] == f"3 reviewed decision(s) of audit {summary['audit_id']} (3 review(s), 0 superseded)"
    assert updated.stdout.splitlines()[-1] == f"wrote these figures into {out / 'summary.json'} (reviews)"
    saved = json.loads((out / "summary.json").read_text())
    assert saved == summary | {"reviews": figures}
    # rewriting the finished audit's files (--resume) recomputes them too
    assert cli("audit", data.manifest, "--out", out, "--resume", "--quiet").exit_code == 1
    assert json.loads((out / "summary.json").read_text())["reviews"] == figures

    _assert_one_line_error(
        cli("review", "stats", "--audit", summary["audit_id"], "--update-summary"),
        2,
        "--update-summary needs --audit DIR, the audit's --out folder holding summary.json",
    )
    _assert_one_line_error(
        cli("review", "stats", "--audit", tmp_path / "images"),
        2,
        f"{tmp_path / 'images'}: holds no audit (.audit-state.json is missing); give the audit's --out folder or its id",
    )


# ---------------------------------------------------------------------------------------- CSV import


def three_decisions(cli: Invoke, images: ImageFactory) -> list[int]:  # noqa: F811
    cli("enroll", "alice", *images.refs(1, 3))
    return [verified(cli, images, person, variant)["decision_id"] for person, variant in ((1, 7), (2, 1), (1, 8))]


def test_import_records_every_row(cli: Invoke, images: ImageFactory, tmp_path: Path) -> None:  # noqa: F811
    a, b, c = three_decisions(cli, images)
    csv_file = tmp_path / "outcomes.csv"
    # as a spreadsheet may save it: a byte-order mark, CRLF, a blank line, a quoted reason with a comma
    csv_file.write_bytes(
        (
            "\ufeffDecision_ID,outcome,reason,reviewer\r\n"
            f'{a},genuine,"matches the card, pen pressure too",j.meier\r\n'
            "\r\n"
            f"{b},FORGED,,\r\n"
            f"{c},genuine,checked by phone,k.frei\r\n"
        ).encode()
    )
    out = cli("--operator", "back-office", "review", "import", csv_file)
    assert out.exit_code == 0, out.stderr
    reviews = [e for e in log(cli) if e["kind"] == "review"]
    first = reviews[0]["id"]
    assert out.stdout.splitlines() == [
        f"recorded 3 outcome(s) from {csv_file} (log entries {first} to {first + 2})",
        "reviewers disagree with the model on 0 of 3 accepted or rejected item(s); 0 referred item(s) judged",
    ]
    assert [(e["details"]["decision_id"], e["decision"], e["operator"], e["reason"]) for e in reviews] == [
        (a, "genuine", "j.meier", "matches the card, pen pressure too"),
        (b, "forged", "back-office", None),
        (c, "genuine", "k.frei", "checked by phone"),
    ]
    assert [(e["details"]["imported_from"], e["details"]["line"], e["details"].get("imported_by")) for e in reviews] == [
        ("outcomes.csv", 2, "back-office"),
        ("outcomes.csv", 4, None),
        ("outcomes.csv", 5, "back-office"),
    ]
    assert cli("log", "verify").exit_code == 0

    # the same file again: refused whole; with --amend every row supersedes its review
    _assert_one_line_error(
        cli("review", "import", csv_file),
        1,
        f"{csv_file} line 2: decision {a} was already reviewed: genuine by j.meier (review {first}); pass --amend to "
        "record a new outcome that supersedes it; nothing was imported",
    )
    amended = cli("review", "import", csv_file, "--amend", "--json")
    assert amended.exit_code == 0, amended.stderr
    payload = json.loads(amended.stdout)
    assert (payload["recorded"], payload["superseded"]) == (3, 3)
    assert [r["supersedes"] for r in payload["reviews"]] == [first, first + 1, first + 2]
    assert json.loads(cli("review", "stats", "--json").stdout)["superseded"] == 3


BAD_FILES = [
    # (file content, with {a} {b} {r}: two decisions and a review event; expected message after "{file}")
    ("decision_id,outcome\n{a},genuine\n{b},maybe\n", " line 3: outcome 'maybe' is not genuine or forged; give one of them (nothing was imported)"),
    ("decision_id,outcome\n{a},genuine\nabc,forged\n", " line 3: decision_id 'abc' is not a decision id (a whole number from 1); nothing was imported"),
    ("decision_id,outcome\n{a},genuine\n-4,forged\n", " line 3: decision_id '-4' is not a decision id (a whole number from 1); nothing was imported"),
    ("decision_id,outcome\n{a},genuine\n999,forged\n", " line 3: decision 999 is not in the decision log; check the id, or the vault the report came from (nothing was imported)"),
    ("decision_id,outcome\n{a},genuine\n{r},forged\n", " line 3: log entry {r} is an event (review), not a decision (nothing was imported)"),
    ("decision_id,outcome\n{a},genuine\n{b},forged\n{a},forged\n", " line 4: decision {a} is also on line 2; keep one outcome per decision (nothing was imported)"),
    ("decision_id,outcome\n{a},genuine\n{r0},genuine\n", " line 3: decision {r0} was already reviewed: genuine by ops (review {r}); pass --amend to record a new outcome that supersedes it; nothing was imported"),
    ("decision_id,outcome,comment\n{a},genuine,x\n", " line 1: unknown column 'comment'; the header names decision_id, outcome, reason, reviewer (reason and reviewer optional)"),
    ("decision_id,reason\n{a},x\n", " line 1: missing column 'outcome'; the header names decision_id, outcome, reason, reviewer (reason and reviewer optional)"),
    ("decision_id,outcome,reason\n{a},genuine,pen, ink\n", " line 2: 4 fields, the header has 3; quote a reason that holds a comma (nothing was imported)"),
    ("decision_id,outcome,reason\n{a},genuine,\"open quote\n", " line 2: malformed CSV (unexpected end of data) (nothing was imported)"),
    ("decision_id,outcome\n", ": no outcomes in the file; export them from report.html first"),
    ("", ": empty file; expected a header line naming decision_id, outcome, reason, reviewer (the last two optional)"),
    ("decision_id,outcome,reason\n{a},genuine," + "x" * 1001 + "\n", " line 2: the reason is 1001 characters long; the limit is 1000 (nothing was imported)"),
]


@pytest.mark.parametrize(("content", "message"), BAD_FILES, ids=range(len(BAD_FILES)))
def test_a_bad_row_imports_nothing(
    cli: Invoke, images: ImageFactory, home: Path, db_url: str, tmp_path: Path, content: str, message: str  # noqa: F811
) -> None:
    a, b, r0 = three_decisions(cli, images)
    r = json.loads(cli("--operator", "ops", "review", str(r0), "--outcome", "genuine", "--json").stdout)["review_id"]
    csv_file = tmp_path / "outcomes.csv"
    csv_file.write_text(content.format(a=a, b=b, r=r, r0=r0), encoding="utf-8")
    before = vault_state(home, db_url)
    exported = cli("log", "export").stdout
    _assert_one_line_error(cli("review", "import", csv_file), 2 if "already reviewed" not in message else 1,
                           f"{csv_file}{message.format(a=a, r=r, r0=r0)}")
    assert vault_state(home, db_url) == before
    assert cli("log", "export").stdout == exported


def test_unreadable_files(cli: Invoke, tmp_path: Path) -> None:  # noqa: F811
    missing = tmp_path / "nope.csv"
    _assert_one_line_error(cli("review", "import", missing), 2, f"{missing}: no such file; give the CSV exported from report.html")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("decision_id,outcome,reason\n1,genuine,Zürich\n".encode("latin-1"))
    _assert_one_line_error(cli("review", "import", latin), 2, f"{latin} line 2: not UTF-8 text (byte 38); save the file as UTF-8")
    as_json = json.loads(cli("review", "import", missing, "--json").stdout)
    assert (as_json["kind"], as_json["exit_code"]) == ("review_file_error", 2)


@pytest.mark.parametrize("command", [["review"], ["review", "record"], ["review", "import"], ["review", "stats"]])
def test_every_review_command_has_help_with_an_example(command: list[str]) -> None:
    from typer.testing import CliRunner

    from sigvault.cli import app

    out = CliRunner().invoke(app, [*command, "--help"])
    assert out.exit_code == 0
    assert "Example:\n    sigvault " in out.stdout or "Example:\n  sigvault " in out.stdout


def test_two_reviewers_at_once_record_one_review(vault: Any, images: ImageFactory) -> None:
    """Two reviews of one decision at the same moment: the log's lock lets one in; the other is refused."""
    import threading

    from sigvault.review import AlreadyReviewedError, iter_reviews, record_review

    vault.enroll("alice", images.refs(1, 3))
    decision = vault.verify("alice", images.write("q.png", 1, 7)).decision_id
    barrier = threading.Barrier(2)
    results: list[str] = []

    def review(outcome: str) -> None:
        barrier.wait()
        try:
            results.append(record_review(vault, decision, outcome, operator=f"reviewer-{outcome}").outcome)
        except AlreadyReviewedError:
            results.append("refused")

    threads = [threading.Thread(target=review, args=(o,)) for o in ("genuine", "forged")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results) in (["forged", "refused"], ["genuine", "refused"])
    assert [r.outcome for r in iter_reviews(vault)] == [o for o in results if o != "refused"]
    assert vault.log_verify().ok
