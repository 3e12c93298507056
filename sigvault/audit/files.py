"""The audit's output folder, written so that an interrupted audit can be finished (``--resume``).

``.audit-state.json`` records what a resumed run must agree with (manifest, policy, model, batch size) and
where the decision log stood when the audit started. Each chunk of records is appended to ``results.jsonl``
then ``results.csv`` and fsynced. A resume keeps the complete lines of ``results.jsonl`` (a torn last line
is cut off), rebuilds ``results.csv`` from them, and takes the rows that were logged but not yet written
back from the decision log (recognised by the audit id in the entry's details) instead of deciding them
again. The result files then equal those of an uninterrupted run byte for byte.
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sigvault.audit.manifest import ManifestInfo, iter_rows
from sigvault.audit.records import csv_header, csv_row, csv_text
from sigvault.durable import atomic_write, open_private, replace_file
from sigvault.errors import UsageError

if TYPE_CHECKING:
    from sigvault.audit.policy import Policy
    from sigvault.audit.summary import Tally
    from sigvault.db.decision_log import Entry
    from sigvault.vault import Vault

STATE_FILE = ".audit-state.json"
RESULTS_JSONL = "results.jsonl"
RESULTS_CSV = "results.csv"
SUMMARY_JSON = "summary.json"
REPORT_HTML = "report.html"


def report_page_name(page: int) -> str:
    """The file of a report page: ``report.html`` for the first, then ``report-2.html``, ``report-3.html``, ..."""
    return REPORT_HTML if page == 1 else f"report-{page}.html"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class AuditState:
    """``.audit-state.json``: what a resumed run must agree with."""

    audit_id: str
    manifest: str
    manifest_sha256: str
    policy_sha256: str | None
    model: str
    batch_size: int
    log_after: int  # decision log head when the audit started; its entries come after
    columns: list[str]
    first_started: str

    @classmethod
    def read(cls, path: Path) -> AuditState:
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise UsageError(
                f"{path}: unreadable audit state ({exc}); start the audit again in an empty --out"
            ) from None



def prepare_outputs(
    vault: Vault,
    info: ManifestInfo,
    out_dir: Path,
    pol: Policy | None,
    model_id: str,
    batch_size: int,
    resume: bool,
    tally: Tally,
    started: str,
) -> tuple[AuditState, int, dict[int, Entry]]:
    """Start fresh output files, or check and repair those of an interrupted audit; the rows already
    written are added to ``tally``.

    Returns (state, rows already written, logged-but-unwritten entries by row index).
    """
    state_path = out_dir / STATE_FILE
    jsonl_path, csv_path = out_dir / RESULTS_JSONL, out_dir / RESULTS_CSV
    if not resume or not state_path.exists():
        existing = [p.name for p in (state_path, jsonl_path, csv_path) if p.exists()]
        if existing:
            raise UsageError(
                f"{out_dir} already holds an audit ({existing[0]}); pass --resume to finish it, or choose another --out"
            )
        log_after = vault.log_head()
        state = AuditState(
            audit_id=uuid.uuid4().hex,
            manifest=str(info.path),
            manifest_sha256=info.sha256,
            policy_sha256=pol.sha256 if pol else None,
            model=model_id,
            batch_size=batch_size,
            log_after=log_after,
            columns=list(info.columns),
            first_started=started,
        )
        # the state first: a kill before the result files exist leaves a folder `--resume` can finish
        # (a resume recreates missing result files)
        atomic_write(state_path, json.dumps(dataclasses.asdict(state), indent=2).encode())
        atomic_write(jsonl_path, b"")
        atomic_write(csv_path, csv_header(state.columns))
        return state, 0, {}

    state = AuditState.read(state_path)
    mismatch = [
        (what, was, now)
        for what, was, now in (
            ("manifest", state.manifest_sha256, info.sha256),
            ("policy", state.policy_sha256, pol.sha256 if pol else None),
            ("model", state.model, model_id),
        )
        if was != now
    ]
    if mismatch:
        what, was, now = mismatch[0]
        raise UsageError(
            f"cannot resume the audit in {out_dir}: the {what} changed since it started ({was} -> {now}); "
            f"resume with the same {what}, or start again in another --out"
        )
    # Keep the complete, consistent lines of results.jsonl; rebuild results.csv from them.
    if not jsonl_path.exists():
        atomic_write(jsonl_path, b"")
    rows = iter_rows(info)
    done = 0
    keep = 0
    csv_tmp = csv_path.with_name(csv_path.name + ".tmp")
    with open(jsonl_path, "rb") as src, open_private(csv_tmp, "wb") as dst:
        dst.write(csv_header(state.columns))
        for raw in src:
            if not raw.endswith(b"\n"):
                break  # torn last line
            try:
                record = json.loads(raw)
            except ValueError:
                break
            row = next(rows, None)
            if row is None or not isinstance(record, dict) or str(record.get("item_id")) != row.item_id:
                raise UsageError(
                    f"{jsonl_path} line {done + 1} does not match row {done + 1} of {info.path.name}; "
                    "start the audit again in an empty --out"
                )
            tally.add(record)
            dst.write(csv_text([csv_row(record, state.columns)]))
            done += 1
            keep += len(raw)
    with open(jsonl_path, "r+b") as fh:
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    replace_file(csv_tmp, csv_path)
    recovered = logged_rows(vault, state, done)
    return state, done, recovered


def logged_rows(vault: Vault, state: AuditState, done: int) -> dict[int, Entry]:
    """Decision log entries of this audit for rows at or after ``done`` (decided but not yet written)."""
    found: dict[int, Entry] = {}
    for entry in vault.log_entries(after=state.log_after):
        details = entry.details or {}
        if entry.kind == "audit" and details.get("audit") == state.audit_id and details.get("row", -1) >= done:
            found[int(details["row"])] = entry
    return found
