"""The HTTP service: the real server (``sigvault serve``, uvicorn) started on a free port of 127.0.0.1 and talked
to over HTTP, on SQLite (one worker) and on PostgreSQL (two workers). One server per backend for the module.

The server loads a small ONNX model written here that computes what ``conftest.FakeEmbedder`` computes (block
means, centred, a fixed projection), so it runs through the product's own model loading in milliseconds.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import PG_SERVER, _pg_admin, _pg_unreachable, signature_png
from test_cli import png_bomb, vault_state
from typer.testing import CliRunner

from sigvault.cli import app

ROOT = Path(__file__).resolve().parents[1]
MAX_BODY = 2_000_000
KEYS = {"admin": "admin", "enroller": "enroll", "verifier": "verify", "gone": "verify"}


# ------------------------------------------------------------------------------------------ the model


def fake_model(folder: Path, seed: int = 0, dim: int = 32) -> Path:
    """model.onnx + model_card.json: canvas (n, 1, 64, 128) -> FakeEmbedder's linear map -> L2-normalised."""
    import onnx
    from onnx import helper, numpy_helper

    h, w = 64, 128
    pool = np.zeros((h * w, 8 * 16), dtype=np.float64)
    ys, xs = np.divmod(np.arange(h * w), w)
    pool[np.arange(h * w), (ys // (h // 8)) * 16 + xs // (w // 16)] = 1.0 / ((h // 8) * (w // 16))
    centre = np.eye(128) - 1.0 / 128
    proj = np.random.default_rng(seed).standard_normal((8 * 16, dim)).astype(np.float32)
    weight = (pool @ centre @ proj.astype(np.float64)).astype(np.float32)
    nodes = [
        helper.make_node("Flatten", ["canvas"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["raw"]),
        helper.make_node("LpNormalization", ["raw"], ["embedding"], axis=1, p=2),
    ]
    graph = helper.make_graph(
        nodes,
        "fake",
        [helper.make_tensor_value_info("canvas", onnx.TensorProto.FLOAT, ["n", 1, h, w])],
        [helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, ["n", dim])],
        initializer=[numpy_helper.from_array(weight, "w")],
    )
    folder.mkdir(parents=True, exist_ok=True)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    card = {"name": "fake", "embed_dim": dim, "preprocess": {"canvas_height": h, "canvas_width": w}, "scoring": {}}
    (folder / "model_card.json").write_text(json.dumps(card))
    return folder


# ------------------------------------------------------------------------------------------- a client


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


def multipart(files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for field, filename, data in files:
        out.write(f"--{boundary}\r\n".encode())
        out.write(f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'.encode())
        out.write(b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


@dataclass
class Server:
    url: str
    home: Path
    db_url: str
    model: Path
    secrets: dict[str, str]
    backend: str
    pid: int = 0  # the server process (with several workers: uvicorn's supervisor)

    def call(
        self,
        method: str,
        path: str,
        *,
        key: str | None = "admin",
        files: list[tuple[str, str, bytes]] | None = None,
        json_body: Any = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {self.secrets.get(key, key)}"
        if files is not None:
            body, sent["Content-Type"] = multipart(files)
        elif json_body is not None:
            body, sent["Content-Type"] = json.dumps(json_body).encode(), "application/json"
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, raw, got = response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as exc:
            status, raw, got = exc.code, exc.read(), dict(exc.headers)
        text = raw.decode()
        parsed = json.loads(text) if got.get("content-type", "").startswith("application/json") else text
        return Answer(status, parsed, got)

    def state(self) -> dict[str, str]:
        """Every table's rows and the index files (the SQLite file's bytes move with WAL checkpoints: left out)."""
        return {k: v for k, v in vault_state(self.home, self.db_url).items() if not k.endswith(".db")}

    def env(self) -> dict[str, str]:
        return {"SIGVAULT_HOME": str(self.home), "SIGVAULT_DATABASE_URL": self.db_url, "SIGVAULT_MODEL": str(self.model)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def pg_module_url() -> Iterator[str]:
    reason = _pg_unreachable()
    if reason:
        pytest.skip(reason)
    from sqlalchemy import text

    name = f"sigvault_test_{uuid.uuid4().hex[:16]}"
    admin = _pg_admin()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``sigvault serve`` on a free port: SQLite with one worker, PostgreSQL with two; keys made beforehand."""
    from sigvault.config import Settings, sqlite_url
    from sigvault.keys import ApiKeys
    from sigvault.vault import upgrade_database

    base = tmp_path_factory.mktemp(f"service-{request.param}")
    home = base / "home"
    db_url = sqlite_url(home / "sigvault.db") if request.param == "sqlite" else request.getfixturevalue("pg_module_url")
    model = fake_model(base / "model")
    settings = Settings(home=home, database_url=db_url)
    upgrade_database(settings)
    from sigvault.db.engine import make_engine

    engine = make_engine(db_url)
    keys = ApiKeys(engine)
    secrets = {name: keys.create(name, scope)[1] for name, scope in KEYS.items()}
    keys.revoke("gone")
    engine.dispose()
    port = free_port()
    workers = "1" if request.param == "sqlite" else "2"
    srv = Server(f"http://127.0.0.1:{port}", home, db_url, model, secrets, request.param)
    log = (base / "server.log").open("w")
    env = {**os.environ, "PYTHONPATH": str(ROOT), **srv.env(), "SIGVAULT_MAX_BODY_BYTES": str(MAX_BODY)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sigvault", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", workers],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    srv.pid = proc.pid
    try:
        deadline = time.monotonic() + 240  # a few seconds alone; minutes on a machine busy training
        while True:
            assert proc.poll() is None, (base / "server.log").read_text()
            try:
                if srv.call("GET", "/healthz", key=None).status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "server did not start:\n" + (base / "server.log").read_text()
            time.sleep(0.1)
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    text = (base / "server.log").read_text()
    assert "Traceback" not in text, text  # no request made the server fail


def png(person: int, variant: int = 0, **kw: Any) -> bytes:
    return signature_png(person, variant, **kw)


def enroll(server: Server, person: str, n: int, seed: int) -> Answer:
    files = [("images", f"{person}-ref{i}.png", png(seed, i)) for i in range(1, n + 1)]
    return server.call("POST", f"/v1/persons/{person}/references", key="enroller", files=files)


def chain_ok(server: Server) -> tuple[bool, int]:
    from sigvault.db import decision_log
    from sigvault.db.engine import make_engine, transaction

    engine = make_engine(server.db_url)
    try:
        with transaction(engine) as conn:
            report = decision_log.verify_chain(conn)
    finally:
        engine.dispose()
    return report.ok, report.entries


def log_after(server: Server, after: int) -> list[Any]:
    """The decision log's entries with ids above ``after``."""
    from sigvault.db import decision_log
    from sigvault.db.engine import make_engine, transaction

    engine = make_engine(server.db_url)
    try:
        with transaction(engine) as conn:
            return list(decision_log.iter_entries(conn, after=after))
    finally:
        engine.dispose()


def index_clean(server: Server) -> bool:
    from sigvault.config import Settings
    from sigvault.vault import Vault

    settings = Settings(home=server.home, database_url=server.db_url, model=server.model)
    with Vault.open(settings) as vault:
        return vault.check_index().consistent


# ------------------------------------------------------------------------------------------ happy paths


def test_health_needs_no_key_and_readiness_names_the_model(server: Server) -> None:
    assert server.call("GET", "/healthz", key=None).body == {"status": "ok"}
    ready = server.call("GET", "/readyz", key=None)
    assert ready.status == 200 and ready.body["status"] == "ready" and ready.body["model"].startswith("fake-")


def test_enroll_then_verify_as_the_cli_does_and_the_log_names_the_key(server: Server, tmp_path: Path) -> None:
    enrolled = enroll(server, "alice", 3, seed=1)
    assert enrolled.status == 200, enrolled.body
    assert enrolled.body["person"] == "alice" and enrolled.body["created"] is True
    assert [a["source"] for a in enrolled.body["added"]] == ["alice-ref1.png", "alice-ref2.png", "alice-ref3.png"]

    questioned = png(1, 7)
    answer = server.call("POST", "/v1/persons/alice/verify", key="verifier", files=[("image", "q.png", questioned)])
    assert answer.status == 200, answer.body
    (tmp_path / "q.png").write_bytes(questioned)
    cli = subprocess.run(
        [sys.executable, "-m", "sigvault", "verify", "alice", str(tmp_path / "q.png"), "--json"],
        env={**os.environ, "PYTHONPATH": str(ROOT), **server.env()}, capture_output=True, text=True, check=True,
    )
    by_cli = json.loads(cli.stdout)
    assert set(answer.body) == set(by_cli)
    assert answer.body["decision_id"] + 1 == by_cli["decision_id"]
    assert answer.body["source"] == "q.png"
    for field in ("decision", "score", "threshold", "threshold_method", "probability", "model", "references"):
        assert answer.body[field] == by_cli[field], field

    logged = server.call("GET", f"/v1/decisions/{answer.body['decision_id']}", key="verifier")
    assert logged.status == 200
    assert (
        logged.body["details"] == {"api_key": "verifier"}
        and logged.body["operator"] == "api-key:verifier"
        and logged.body["score"] == answer.body["score"]
    )
    assert server.call("GET", f"/v1/decisions/{by_cli['decision_id']}").body["details"] is None  # the CLI's
    assert chain_ok(server)[0]


def test_compare_identify_people_thresholds_and_remove(server: Server) -> None:
    start = chain_ok(server)[1]
    assert enroll(server, "bob", 3, seed=2).status == 200
    assert enroll(server, "dora", 3, seed=3).status == 200
    odd = server.call("POST", "/v1/persons/bob/references", key="enroller", files=[("images", "odd.png", png(9, 1))])
    assert (odd.status, odd.body["code"]) == (409, "suspect_reference")
    assert odd.body["message"].startswith("odd.png: unlike 'bob''s other references (score ")
    taken = server.call("POST", "/v1/persons/bob/references", key="enroller", files=[("images", "d.png", png(3, 1))])
    assert (taken.status, taken.body["code"]) == (409, "duplicate_reference")  # dora's reference 1, renamed
    same = server.call("POST", "/v1/compare", key="verifier", files=[("image_a", "a.png", png(2, 1)), ("image_b", "b.png", png(2, 8))])
    assert same.status == 200 and same.body["a"] == "a.png" and 0 <= same.body["probability"] <= 1
    found = server.call("POST", "/v1/identify?top=2", key="verifier", files=[("image", "u.png", png(3, 9))])
    assert found.status == 200 and found.body["candidates"][0]["person"] == "dora"
    listed = server.call("GET", "/v1/persons", key="verifier").body["people"]
    assert {"bob", "dora"} <= {p["person"] for p in listed}
    shown = server.call("GET", "/v1/persons/bob", key="verifier").body
    assert shown["person"] == "bob" and len(shown["references"]) == 3 and shown["is_override"] is False

    put = server.call("PUT", "/v1/persons/bob/threshold", json_body={"value": 0.5})
    assert put.status == 200 and put.body == {"person": "bob", "threshold": 0.5, "threshold_method": "override", "is_override": True}
    reset = server.call("DELETE", "/v1/persons/bob/threshold")
    assert reset.status == 200 and reset.body["is_override"] is False and reset.body["threshold"] == shown["threshold"]

    gone = server.call("DELETE", "/v1/persons/bob")
    assert gone.status == 200 and {k: gone.body[k] for k in ("person", "n_references")} == {"person": "bob", "n_references": 3}
    assert gone.body["erased"] is True or gone.body["waiting_for"]  # PostgreSQL: what the erasure waits for
    missing = server.call("GET", "/v1/persons/bob", key="verifier")
    assert (missing.status, missing.body["code"]) == (404, "person_not_found")
    assert index_clean(server)
    # every change is in the log, each naming the key that asked for it
    events = [e for e in log_after(server, start) if e.person_id == "bob"]
    assert [(e.kind, e.operator) for e in events] == [
        ("enroll", "api-key:enroller"),
        ("threshold-set", "api-key:admin"),
        ("threshold-reset", "api-key:admin"),
        ("person-remove", "api-key:admin"),
    ]
    shown_event = server.call("GET", f"/v1/decisions/{events[1].id}", key="verifier").body
    assert (shown_event["kind"], shown_event["threshold"], shown_event["score"]) == ("threshold-set", 0.5, None)
    assert shown_event["details"]["old"]["value"] == shown["threshold"]
    assert chain_ok(server)[0]


def test_a_reviewer_outcome_over_http_is_logged_with_the_key(server: Server) -> None:
    assert enroll(server, "rita", 3, seed=11).status == 200
    answer = server.call("POST", "/v1/persons/rita/verify", key="verifier", files=[("image", "q.png", png(11, 7))])
    did = answer.body["decision_id"]
    path = f"/v1/decisions/{did}/review"
    first = server.call("POST", path, key="verifier", json_body={"outcome": "forged", "reason": "unlike the card"})
    assert first.status == 200, first.body
    assert {k: first.body[k] for k in ("decision_id", "outcome", "decision", "operator", "reason", "supersedes")} == {
        "decision_id": did, "outcome": "forged", "decision": answer.body["decision"], "operator": "api-key:verifier",
        "reason": "unlike the card", "supersedes": None,
    }
    logged = server.call("GET", f"/v1/decisions/{first.body['review_id']}", key="verifier").body
    assert (logged["kind"], logged["decision"], logged["operator"], logged["details"]["decision_id"]) == (
        "review", "forged", "api-key:verifier", did,
    )
    before = server.state()
    refused = [
        (server.call("POST", path, key="verifier", json_body={"outcome": "genuine"}), 409, "already_reviewed"),
        (server.call("POST", path, key="verifier", json_body={"outcome": "maybe"}), 400, "invalid_request"),
        (server.call("POST", f"/v1/decisions/{first.body['review_id']}/review", key="verifier", json_body={"outcome": "forged"}), 409, "not_a_decision"),
        (server.call("POST", "/v1/decisions/999999/review", key="verifier", json_body={"outcome": "forged"}), 404, "decision_not_found"),
        (server.call("POST", path, key=None, json_body={"outcome": "forged"}), 401, "missing_key"),
    ]
    assert [(a.status, a.body["code"]) for a, _, _ in refused] == [(s, c) for _, s, c in refused]
    assert refused[0][0].body["message"].startswith(f"decision {did} was already reviewed: forged by api-key:verifier")
    assert server.state() == before
    amended = server.call("POST", path, key="admin", json_body={"outcome": "genuine", "amend": True})
    assert amended.status == 200 and amended.body["supersedes"] == first.body["review_id"]
    assert chain_ok(server)[0]


def test_openapi_schema_lists_the_endpoints_and_the_bearer_scheme(server: Server) -> None:
    schema = server.call("GET", "/openapi.json", key=None).body
    assert {"/v1/persons/{person}/verify", "/v1/persons/{person}/references", "/v1/decisions/{decision_id}",
            "/v1/decisions/{decision_id}/review"} <= set(schema["paths"])
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_metrics_count_requests_and_decisions(server: Server) -> None:
    assert enroll(server, "erin", 2, seed=4).status == 200
    server.call("POST", "/v1/persons/erin/verify", key="verifier", files=[("image", "q.png", png(4, 5))])
    # metrics are per worker process: with several workers, scrape until the one that verified answers
    decided = re.compile(r'sigvault_decisions_total\{process="\d+",decision="(accept|refer|reject)"\} [1-9]')
    for _ in range(40):
        text = server.call("GET", "/metrics", key="verifier").body
        if decided.search(text):
            break
    assert decided.search(text)
    assert 'route="/v1/persons/{person}/verify",status="200"' in text


# ---------------------------------------------------------------------------------- refused requests

BOMB: list[bytes] = []


def _bomb(tmp: Path) -> bytes:
    if not BOMB:
        BOMB.append(png_bomb(tmp / "bomb.png").read_bytes())
    return BOMB[0]


@pytest.mark.parametrize(
    "case, method, path, key, payload, status, code, message",
    [
        ("no key", "POST", "/v1/persons/alice/verify", None, "image", 401, "missing_key", "no API key given"),
        ("bad key", "POST", "/v1/persons/alice/verify", "svk_nonsense", "image", 401, "invalid_key", "not a key of this vault"),
        ("revoked key", "POST", "/v1/persons/alice/verify", "gone", "image", 401, "revoked_key", "the API key 'gone' was revoked"),
        ("verify key enrolls", "POST", "/v1/persons/alice/references", "verifier", "refs", 403, "insufficient_scope", "has scope verify; this call needs scope enroll"),
        ("enroll key removes", "DELETE", "/v1/persons/alice", "enroller", None, 403, "insufficient_scope", "needs scope admin"),
        ("enroll key sets a threshold", "PUT", "/v1/persons/alice/threshold", "enroller", "threshold", 403, "insufficient_scope", "needs scope admin"),
        ("malformed multipart", "POST", "/v1/persons/alice/verify", "verifier", "garbage", 400, "malformed_request", "not valid multipart/form-data"),
        ("no image field", "POST", "/v1/persons/alice/verify", "verifier", "wrong-field", 422, "invalid_request", "image: field required"),
        ("body over the limit", "POST", "/v1/persons/alice/references", "enroller", "huge", 413, "body_too_large", f"larger than the limit of {MAX_BODY} bytes"),
        ("not an image", "POST", "/v1/persons/alice/verify", "verifier", "text", 422, "invalid_image", "notes.png: "),
        ("image bomb", "POST", "/v1/persons/alice/verify", "verifier", "bomb", 413, "image_too_large", "bomb.png: "),
        ("one bad image of three", "POST", "/v1/persons/newcomer/references", "enroller", "refs+text", 422, "invalid_image", "notes.png: "),
        ("enrolled twice", "POST", "/v1/persons/alice/references", "enroller", "alice-again", 409, "duplicate_reference", "already enrolled for 'alice'"),
        ("unknown person", "POST", "/v1/persons/nobody/verify", "verifier", "image", 404, "person_not_found", "person 'nobody' is not enrolled; see `sigvault people list`"),
        ("padded person id", "POST", "/v1/persons/%20alice/verify", "verifier", "image", 400, "invalid_person_id", "starts or ends with spaces"),
        ("control character", "GET", "/v1/persons/al%07ice", "verifier", None, 400, "invalid_person_id", "control character U+0007"),
        ("long person id", "GET", "/v1/persons/" + "x" * 201, "verifier", None, 400, "invalid_person_id", "the limit is 200"),
        ("threshold out of range", "PUT", "/v1/persons/alice/threshold", "admin", "threshold-5", 400, "invalid_request", "outside [-1, 1]"),
        ("unknown decision", "GET", "/v1/decisions/987654321", "verifier", None, 404, "decision_not_found", "decision 987654321 is not in the decision log"),
        ("decision id 0", "GET", "/v1/decisions/0", "verifier", None, 422, "invalid_request", "decision_id: "),
        ("unknown endpoint", "GET", "/v1/nothing", "verifier", None, 404, "not_found", "no such endpoint"),
        ("wrong method", "PATCH", "/v1/persons/alice", "admin", None, 405, "method_not_allowed", "Method Not Allowed"),
    ],
)
def test_refused_requests_are_json_errors_and_change_nothing(
    server: Server, tmp_path: Path, case: str, method: str, path: str, key: str | None, payload: str | None,
    status: int, code: str, message: str,
) -> None:
    if server.call("GET", "/v1/persons/alice", key="verifier").status != 200:
        assert enroll(server, "alice", 3, seed=1).status == 200
    files = {
        "image": [("image", "q.png", png(1, 9))],
        "refs": [("images", "r.png", png(1, 11))],
        "wrong-field": [("picture", "q.png", png(1, 9))],
        "huge": [("images", "big.png", b"\0" * (MAX_BODY + 1))],
        "text": [("image", "notes.png", b"this is not an image")],
        "bomb": [("image", "bomb.png", _bomb(tmp_path))],
        "refs+text": [("images", "a.png", png(9, 1)), ("images", "notes.png", b"nope"), ("images", "c.png", png(9, 3))],
        "alice-again": [("images", "again.png", png(1, 1))],
    }.get(payload or "")
    json_body = {"threshold": {"value": 0.6}, "threshold-5": {"value": 5.0}}.get(payload or "")
    raw = headers = None
    if payload == "garbage":
        raw, headers = b"--xyz\r\nthis is not multipart\r\n", {"Content-Type": "multipart/form-data; boundary=xyz"}
    before = server.state()
    answer = server.call(method, path, key=key, files=files, json_body=json_body, body=raw, headers=headers)
    assert (answer.status, answer.body.get("code")) == (status, code), (case, answer.body)
    assert message in answer.body["message"], (case, answer.body)
    assert "\n" not in answer.body["message"] and "Traceback" not in answer.body["message"]
    if status == 401:
        assert answer.headers.get("www-authenticate") == "Bearer"
    assert server.state() == before, case


def test_error_messages_are_the_clis(server: Server, tmp_path: Path) -> None:
    """The same one-line message as `sigvault verify` prints after `error: `, for a file of the same name."""
    (tmp_path / "notes.png").write_bytes(b"this is not an image")
    os.chdir(tmp_path)  # the CLI names the file as given: a bare name, as the upload's
    out = CliRunner().invoke(app, ["verify", "alice", "notes.png"], env=server.env())
    answer = server.call("POST", "/v1/persons/alice/verify", key="verifier", files=[("image", "notes.png", b"this is not an image")])
    assert out.exit_code == 1
    assert out.stderr == f"error: {answer.body['message']}\n"


def test_concurrent_enrolments_of_one_person_enroll_once(server: Server) -> None:
    files = [("images", f"c{i}.png", png(5, i)) for i in (1, 2)]
    answers: list[Answer] = []

    def go() -> None:
        answers.append(server.call("POST", "/v1/persons/carol/references", key="enroller", files=files))

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(a.status for a in answers) == [200, 409, 409, 409], [a.body for a in answers]
    assert {a.body["code"] for a in answers if a.status == 409} == {"duplicate_reference"}
    assert server.call("GET", "/v1/persons/carol", key="verifier").body["references"].__len__() == 2
    assert index_clean(server) and chain_ok(server)[0]


def test_a_worker_killed_under_load_loses_no_acknowledged_decision(server: Server) -> None:
    if server.backend != "postgres":
        pytest.skip("needs several workers: the PostgreSQL server runs two")
    import signal

    assert enroll(server, "kim", 3, seed=7).status == 200
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    workers = [int(p) for p in children if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert len(workers) == 2, children
    acknowledged: list[dict[str, Any]] = []
    failed = [0]
    stop = time.monotonic() + 6

    def client(k: int) -> None:
        i = 0
        while time.monotonic() < stop and i < 200:
            i += 1
            try:
                answer = server.call("POST", "/v1/persons/kim/verify", key="verifier", files=[("image", "q.png", png(7, 10 + k))])
            except OSError:
                failed[0] += 1
                continue
            if answer.status == 200:
                acknowledged.append(answer.body)
            else:
                failed[0] += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(2)
    os.kill(workers[0], signal.SIGKILL)
    for t in threads:
        t.join(120)
    assert acknowledged
    for answer in acknowledged:
        logged = server.call("GET", f"/v1/decisions/{answer['decision_id']}", key="verifier").body
        assert (logged["image_sha256"], logged["score"], logged["person_id"]) == (answer["image_sha256"], answer["score"], "kim")
    assert chain_ok(server)[0] and index_clean(server)
    after = server.call("POST", "/v1/persons/kim/verify", key="verifier", files=[("image", "q.png", png(7, 30))])
    assert after.status == 200  # the other worker (and uvicorn's replacement) still answer


# ------------------------------------------------------------------------------------------------- keys


def test_keys_commands_show_the_secret_once_and_store_its_hash(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"SIGVAULT_HOME": str(tmp_path / "home")}
    made = runner.invoke(app, ["keys", "create", "teller-app", "--scope", "enroll"], env=env)
    assert made.exit_code == 0, made.stderr
    first, secret = made.stdout.splitlines()
    assert first == "created key 'teller-app' with scope enroll; its secret (shown only now, keep it safe):"
    assert re.fullmatch(r"svk_[A-Za-z0-9_-]{43}", secret)
    db = (tmp_path / "home" / "sigvault.db").read_bytes()
    assert secret.encode() not in db and secret[4:].encode() not in db
    again = runner.invoke(app, ["keys", "create", "teller-app"], env=env)
    assert (again.exit_code, again.stderr) == (
        2, "error: a key named 'teller-app' exists already (names are never reused); choose another name\n"
    )
    bad = runner.invoke(app, ["keys", "create", "x", "--scope", "root"], env=env)
    assert (bad.exit_code, bad.stderr) == (2, "error: scope 'root' is not one of verify, enroll, admin\n")
    assert runner.invoke(app, ["keys", "create", "bad name"], env=env).exit_code == 2
    listed = runner.invoke(app, ["keys", "list"], env=env).stdout
    assert listed.startswith("teller-app\tenroll\tcreated ") and listed.rstrip().endswith("\tactive")
    revoked = runner.invoke(app, ["keys", "revoke", "teller-app"], env=env)
    assert revoked.exit_code == 0 and revoked.stdout.startswith("key 'teller-app' is revoked (since ")
    as_json = json.loads(runner.invoke(app, ["keys", "list", "--json"], env=env).stdout)
    assert as_json["keys"][0]["name"] == "teller-app" and as_json["keys"][0]["revoked_at"] is not None
    unknown = runner.invoke(app, ["keys", "revoke", "nobody"], env=env)
    assert (unknown.exit_code, unknown.stderr) == (2, "error: no key is named 'nobody'; see `sigvault keys list`\n")


# ------------------------------------------------------------------------------------------------- docs


def test_the_curl_examples_of_docs_service_md_run(server: Server, tmp_path: Path) -> None:
    if server.backend != "sqlite":
        pytest.skip("once is enough")
    text = (ROOT / "docs" / "service.md").read_text()
    examples = text.split("## Examples", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    for i, name in enumerate(("ref1.png", "ref2.png", "ref3.png"), start=1):
        (tmp_path / name).write_bytes(png(6, i))
    (tmp_path / "cheque-0042.png").write_bytes(png(6, 7))
    server.call("DELETE", "/v1/persons/alice")  # the examples enroll alice afresh
    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", examples], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "SIGVAULT_URL": server.url, "KEY": server.secrets["admin"]}, check=False,
    )
    assert out.returncode == 0, out.stderr
    answers, rest, decoder = [], out.stdout, json.JSONDecoder()
    while rest.strip():
        answer, end = decoder.raw_decode(rest.lstrip())
        answers.append(answer)
        rest = rest.lstrip()[end:]
    assert answers[0] == {"status": "ok"} and answers[1]["n_references"] == 3 and answers[2]["person"] == "alice"
    assert [a.get("threshold_method") for a in answers[6:8]] == ["override", answers[1]["threshold_method"]]


def test_serve_refuses_a_stale_schema_in_one_line(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    from sigvault.config import Settings, sqlite_url
    from sigvault.vault import upgrade_database

    url = sqlite_url(tmp_path / "home" / "sigvault.db")
    upgrade_database(Settings(home=tmp_path / "home", database_url=url))
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    engine.dispose()
    out = CliRunner().invoke(app, ["serve", "--port", str(free_port())], env={"SIGVAULT_HOME": str(tmp_path / "home")})
    assert out.exit_code == 1
    assert out.stderr == (
        f"error: database {url} is at schema revision 0001, this sigvault needs 0003; run `sigvault db upgrade` "
        "(or install the newer sigvault that wrote it)\n"
    )
