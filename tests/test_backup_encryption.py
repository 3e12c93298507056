"""``sigvault backup --encrypt`` and the restore of an encrypted backup: no image byte in the clear in the backup
directory, the same vault back with the right passphrase or key file, one line and nothing changed with a wrong
one, a damaged or truncated file refused; the streamed format itself (:mod:`sigvault.encryption`).

The CLI runs in-process (typer's CliRunner) with the fake embedder, as in test_backup.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import FakeEmbedder, ImageFactory
from typer.testing import CliRunner, Result

from sigvault import encryption
from sigvault.config import sqlite_url
from sigvault.errors import DecryptionError, UsageError

Invoke = Callable[..., Result]
PASS = "correct horse battery staple"


@pytest.fixture(autouse=True)
def fake_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sigvault.embedder.load_embedder", lambda path=None, **kw: FakeEmbedder())


def make_cli(home: Path) -> Invoke:
    from sigvault.cli import app

    runner = CliRunner()

    def invoke(*args: object, env: dict[str, str] | None = None) -> Result:
        base = {"SIGVAULT_HOME": str(home), "SIGVAULT_DATABASE_URL": sqlite_url(home / "sigvault.db"),
                encryption.ENV_PASSPHRASE: ""}
        return runner.invoke(app, [str(a) for a in args], env=base | (env or {}), catch_exceptions=False)

    return invoke


def rows(db: Path) -> dict[str, list]:
    with sqlite3.connect(db) as conn:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
        return {t: conn.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall() for t in sorted(tables)}


def assert_restored(restored_db: Path, original_db: Path) -> None:
    """Every row of the original in the restored database, which also logged its restore after them."""
    restored, original = rows(restored_db), rows(original_db)
    assert restored["decisions"].pop()[2] == "restore"  # the restore itself, logged after the restored entries
    assert restored.pop("log_head") != original.pop("log_head")
    assert restored == original  # every other row identical


@pytest.fixture
def source(tmp_path: Path, images: ImageFactory) -> tuple[Invoke, list[bytes]]:
    """A vault with two persons and a decision; returns its CLI and 64-byte pieces of alice's images."""
    cli = make_cli(tmp_path / "home")
    refs = images.refs(1, 3)
    assert cli("enroll", "alice", *refs).exit_code == 0
    assert cli("enroll", "bob", *images.refs(2, 3)).exit_code == 0
    assert cli("verify", "alice", images.write("q.png", 1, 7)).exit_code == 0
    pieces = [r.read_bytes()[i : i + 64] for r in refs for i in range(64, r.stat().st_size - 64, 256)]
    return cli, pieces


def test_encrypted_backup_holds_no_clear_byte_and_restores_the_same_vault(
    source: tuple[Invoke, list[bytes]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli, pieces = source
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    out = tmp_path / "backup"
    done = cli("backup", out, "--encrypt", env={encryption.ENV_PASSPHRASE: PASS})
    assert done.exit_code == 0, done.output
    assert "encrypted" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "vault.db.enc"]
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {"manifest.json": 0o600, "vault.db.enc": 0o600}
    blob = (out / "vault.db.enc").read_bytes()
    assert b"SQLite format 3" not in blob and not any(p in blob for p in pieces) and b"alice" not in blob
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["encryption"]["cipher"] == "AES-256-GCM"
    assert manifest["tables"]["refs"] == 6 and "vault.db" not in manifest["files"]
    assert list(scratch.iterdir()) == []  # the clear snapshot was made in a private temporary directory, then deleted

    target = make_cli(tmp_path / "restored")
    done = target("restore", out, env={encryption.ENV_PASSPHRASE: PASS})
    assert done.exit_code == 0, done.output
    assert_restored(tmp_path / "restored" / "sigvault.db", tmp_path / "home" / "sigvault.db")
    assert target("log", "verify").exit_code == 0 and target("index", "check").exit_code == 0
    assert list(scratch.iterdir()) == []  # the decrypted copy is deleted too


def test_wrong_passphrase_changes_nothing(source: tuple[Invoke, list[bytes]], tmp_path: Path, images: ImageFactory) -> None:
    cli, _ = source
    out = tmp_path / "backup"
    assert cli("backup", out, "--encrypt", env={encryption.ENV_PASSPHRASE: PASS}).exit_code == 0
    target = make_cli(tmp_path / "other")
    assert target("enroll", "carol", *images.refs(3, 3)).exit_code == 0
    before = rows(tmp_path / "other" / "sigvault.db")
    enc = out / "vault.db.enc"

    wrong = target("restore", out, "--force", env={encryption.ENV_PASSPHRASE: "not the passphrase"})
    assert (wrong.exit_code, wrong.stdout) == (1, "")
    assert wrong.stderr == f"error: {enc}: cannot be decrypted: wrong passphrase (SIGVAULT_BACKUP_PASSPHRASE), or the file is damaged\n"
    as_json = target("restore", out, "--force", "--json", env={encryption.ENV_PASSPHRASE: "not the passphrase"})
    assert json.loads(as_json.stdout)["kind"] == "decryption_error" and as_json.exit_code == 1

    none = target("restore", out, "--force")  # no passphrase anywhere, and no terminal to ask on
    assert none.exit_code == 2
    assert none.stderr == (
        f"error: {out}: no passphrase; set SIGVAULT_BACKUP_PASSPHRASE, or give --passphrase-file or --key-file "
        "(no terminal to ask on)\n"
    )
    assert rows(tmp_path / "other" / "sigvault.db") == before

    # the right one, from a file, replaces carol's vault with the backup's
    pfile = tmp_path / "pass.txt"
    pfile.write_text(PASS + "\n")
    assert target("restore", out, "--force", "--passphrase-file", pfile).exit_code == 0
    assert_restored(tmp_path / "other" / "sigvault.db", tmp_path / "home" / "sigvault.db")


def test_key_file(source: tuple[Invoke, list[bytes]], tmp_path: Path) -> None:
    cli, pieces = source
    key = tmp_path / "backup.key"
    key.write_text(os.urandom(32).hex() + "\n")
    out = tmp_path / "backup"
    assert cli("backup", out, "--key-file", key).exit_code == 0
    blob = (out / "vault.db.enc").read_bytes()
    assert not any(p in blob for p in pieces)
    assert json.loads((out / "manifest.json").read_text())["encryption"]["key"] == "key file"

    target = make_cli(tmp_path / "restored")
    by_pass = target("restore", out, env={encryption.ENV_PASSPHRASE: PASS})
    assert (by_pass.exit_code, by_pass.stderr) == (
        1, f"error: {out / 'vault.db.enc'}: cannot be decrypted: it was encrypted with a key file, not a passphrase; give --key-file\n"
    )
    other_key = tmp_path / "other.key"
    other_key.write_text(os.urandom(32).hex())
    assert "wrong key file" in target("restore", out, "--key-file", other_key).stderr
    assert target("restore", out, "--key-file", key).exit_code == 0
    assert_restored(tmp_path / "restored" / "sigvault.db", tmp_path / "home" / "sigvault.db")

    bad = tmp_path / "bad.key"
    bad.write_text("swordfish")
    refused = cli("backup", tmp_path / "b2", "--key-file", bad)
    assert (refused.exit_code, refused.stderr) == (
        2, f"error: {bad}: not a backup key (64 hex digits or 32 raw bytes); make one with `openssl rand -hex 32 > {bad}`\n"
    )
    inside = tmp_path / "b3"
    inside.mkdir()
    (inside / "k").write_text(key.read_text())
    refused = cli("backup", inside, "--key-file", inside / "k")
    assert refused.exit_code == 2 and "must not be kept in the backup directory" in refused.stderr
    assert sorted(p.name for p in inside.iterdir()) == ["k"]


def test_short_passphrase_and_damaged_files(source: tuple[Invoke, list[bytes]], tmp_path: Path) -> None:
    cli, _ = source
    short = cli("backup", tmp_path / "b0", "--encrypt", env={encryption.ENV_PASSPHRASE: "short"})
    assert (short.exit_code, short.stderr) == (
        2, "error: the backup passphrase from SIGVAULT_BACKUP_PASSPHRASE has 5 characters; use at least 10, or a key file (--key-file)\n"
    )
    assert not (tmp_path / "b0").exists()
    out = tmp_path / "backup"
    assert cli("backup", out, "--encrypt", env={encryption.ENV_PASSPHRASE: PASS}).exit_code == 0
    enc = out / "vault.db.enc"
    data = bytearray(enc.read_bytes())
    data[-5] ^= 1
    enc.write_bytes(bytes(data))
    target = make_cli(tmp_path / "restored")
    damaged = target("restore", out, env={encryption.ENV_PASSPHRASE: PASS})
    assert damaged.exit_code == 1 and damaged.stderr.startswith(f"error: {enc}: damaged (size or SHA-256 differs")
    # edited consistently with the manifest's checksum: the cipher's own check still refuses it
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"]["vault.db.enc"]["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    damaged = target("restore", out, env={encryption.ENV_PASSPHRASE: PASS})
    assert damaged.exit_code == 1 and damaged.stderr.startswith(f"error: {enc}: cannot be decrypted")
    assert not (tmp_path / "restored" / "index").exists()
    with sqlite3.connect(tmp_path / "restored" / "sigvault.db") as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'persons'").fetchone()[0] in (0, 1)
        if conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'persons'").fetchone()[0]:
            assert conn.execute("SELECT count(*) FROM persons").fetchone()[0] == 0


@pytest.mark.parametrize("size", [0, 1, encryption.CHUNK, 2 * encryption.CHUNK + 12345])
def test_stream_round_trip_and_truncation(tmp_path: Path, size: int) -> None:
    clear = tmp_path / "clear"
    clear.write_bytes(os.urandom(size))
    secret = encryption.read_key_file(_key(tmp_path))
    enc = tmp_path / "enc"
    enc.write_bytes(b"".join(encryption.encrypted_chunks(clear, secret)))
    assert encryption.is_encrypted(enc)
    back = tmp_path / "back"
    encryption.decrypt_file(enc, back, secret)
    assert back.read_bytes() == clear.read_bytes() and stat.S_IMODE(back.stat().st_mode) == 0o600
    blob = enc.read_bytes()
    header = len(encryption.MAGIC) + 4 + int.from_bytes(blob[len(encryption.MAGIC) : len(encryption.MAGIC) + 4], "big")
    cuts = {c for c in (len(blob) - 1, header + encryption.CHUNK + 16) if header < c < len(blob)}  # in a chunk, at its end
    for cut in sorted(cuts):
        enc.write_bytes(blob[:cut])
        with pytest.raises(DecryptionError, match="cannot be decrypted"):
            encryption.decrypt_file(enc, back, secret)
        assert not back.exists()


def _key(tmp_path: Path) -> Path:
    path = tmp_path / "k"
    path.write_bytes(os.urandom(32))
    return path


def test_secret_resolution(tmp_path: Path) -> None:
    assert encryption.resolve_secret({}) is None
    assert encryption.resolve_secret({encryption.ENV_PASSPHRASE: PASS}).value == PASS.encode()  # type: ignore[union-attr]
    with pytest.raises(UsageError, match="not both"):
        encryption.resolve_secret({}, key_file=tmp_path / "a", passphrase_file=tmp_path / "b")
    with pytest.raises(UsageError, match=r"missing\.key: the key file cannot be read"):
        encryption.resolve_secret({}, key_file=tmp_path / "missing.key")
    assert PASS not in repr(encryption.passphrase(PASS, "test"))
