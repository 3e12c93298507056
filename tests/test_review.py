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
            "log entry {r} is a review event, not a decision; give the id of a verify or audit decision (`sigvault "
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
