"""Encrypted backups: a file encrypted in streamed chunks with AES-256-GCM, keyed by a passphrase or a key file.

``sigvault backup --encrypt`` writes ``vault.db.enc`` instead of ``vault.db``; ``sigvault restore`` sees it
and decrypts it. The library is pyca/cryptography (AES-GCM, scrypt and HKDF; pinned in pyproject.toml).

File layout::

    MAGIC (8 bytes) | header length (4 bytes, big-endian) | header (JSON, UTF-8) | chunk 0 | chunk 1 | ...

The header says how the key is made: ``{"cipher": "AES-256-GCM", "chunk": 1048576, "salt": <base64, 16 bytes>,
"kdf": {"name": "scrypt", "n": 131072, "r": 8, "p": 1}}`` for a passphrase (scrypt, 128 MiB and about half a
second per derivation, so guessing passphrases is slow), or ``"kdf": {"name": "key"}`` for a key file (32
random bytes, as 64 hex digits or raw). The file's own key is HKDF-SHA256 of that secret with the header's
random salt, so no two files share a key and the nonces can simply count. Each chunk is ``chunk`` bytes of
plaintext (the last may be shorter, even empty) encrypted with the nonce ``counter (11 bytes) | last (1 byte)``
and the whole header as associated data, followed by its 16-byte tag: the STREAM construction, so a truncated,
reordered, spliced or edited file fails to decrypt, as does a wrong passphrase or key. Memory stays at one
chunk whatever the backup's size.

Typical use::

    secret = resolve_secret(os.environ, key_file=None, passphrase_file=None)   # None: ask on the terminal
    encrypt_file(Path("vault.db"), Path("vault.db.enc"), secret)
    decrypt_file(Path("vault.db.enc"), Path("vault.db"), secret)
"""

from __future__ import annotations

import base64
import json
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sigvault.errors import DecryptionError, UsageError

ENV_PASSPHRASE = "SIGVAULT_BACKUP_PASSPHRASE"
MAGIC = b"SVENC\x00\x01\n"
CIPHER = "AES-256-GCM"
CHUNK = 1 << 20  # plaintext bytes per chunk
SCRYPT = {"n": 1 << 17, "r": 8, "p": 1}  # 128 MiB of memory per guess
MIN_PASSPHRASE = 10  # characters
_TAG = 16
_INFO = b"sigvault backup file key v1"
_MAX_HEADER = 4096


@dataclass(frozen=True)
class Secret:
    """What unlocks an encrypted backup: a passphrase, or the 32 bytes of a key file. ``source`` says where it
    came from, for messages (never the secret itself)."""

    kind: str  # "passphrase" | "key"
    value: bytes
    source: str

    def __repr__(self) -> str:  # never print the secret
        return f"Secret({self.kind} from {self.source})"


def passphrase(text: str, source: str) -> Secret:
    """A passphrase as a :class:`Secret`.

    Raises:
        UsageError: empty or shorter than :data:`MIN_PASSPHRASE` characters.
    """
    text = text.rstrip("\r\n")
    if len(text) < MIN_PASSPHRASE:
        raise UsageError(
            f"the backup passphrase from {source} has {len(text)} characters; use at least {MIN_PASSPHRASE}, "
            "or a key file (--key-file)"
        )
    return Secret("passphrase", text.encode("utf-8"), source)


def read_key_file(path: Path) -> Secret:
    """A key file: 64 hex digits (e.g. ``openssl rand -hex 32 > backup.key``) or 32 raw bytes.

    Raises:
        UsageError: missing, unreadable, or not a 32-byte key.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: the key file cannot be read ({exc.strerror or exc}); check --key-file") from None
    text = data.strip()
    if len(text) == 64:
        try:
            return Secret("key", bytes.fromhex(text.decode("ascii")), str(path))
        except ValueError:
            pass
    if len(data) == 32:
        return Secret("key", data, str(path))
    raise UsageError(
        f"{path}: not a backup key (64 hex digits or 32 raw bytes); make one with `openssl rand -hex 32 > {path}`"
    )


def resolve_secret(
    env: Mapping[str, str], *, key_file: Path | None = None, passphrase_file: Path | None = None
) -> Secret | None:
    """The secret the options and environment give: ``key_file``, else ``passphrase_file``, else the
    ``SIGVAULT_BACKUP_PASSPHRASE`` variable; None when none is given (the CLI then asks on the terminal).

    Raises:
        UsageError: both a key file and a passphrase file, or an unusable one.
    """
    if key_file is not None and passphrase_file is not None:
        raise UsageError("give --key-file or --passphrase-file, not both")
    if key_file is not None:
        return read_key_file(key_file)
    if passphrase_file is not None:
        try:
            text = Path(passphrase_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise UsageError(f"{passphrase_file}: the passphrase file cannot be read ({detail})") from None
        return passphrase(text.splitlines()[0] if text.strip() else "", str(passphrase_file))
    if env.get(ENV_PASSPHRASE):
        return passphrase(env[ENV_PASSPHRASE], ENV_PASSPHRASE)
    return None


# ------------------------------------------------------------------------------------------ the format


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _file_key(secret: Secret, salt: bytes, kdf: dict[str, Any]) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    if kdf.get("name") == "scrypt":
        if secret.kind != "passphrase":
            raise DecryptionError("it was encrypted with a passphrase, not a key file; give its passphrase")
        master = Scrypt(salt=salt, length=32, n=int(kdf["n"]), r=int(kdf["r"]), p=int(kdf["p"])).derive(secret.value)
    elif kdf.get("name") == "key":
        if secret.kind != "key":
            raise DecryptionError("it was encrypted with a key file, not a passphrase; give --key-file")
        master = secret.value
    else:
        raise DecryptionError(f"unknown key derivation {kdf.get('name')!r}; use the sigvault version that made it")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_INFO).derive(master)


def _nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def encrypted_chunks(source: Path, secret: Secret) -> Iterator[bytes]:
    """The encrypted form of the file ``source``, piece by piece (header first), one chunk in memory at a time."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    salt = os.urandom(16)
    kdf: dict[str, Any] = {"name": "scrypt", **SCRYPT} if secret.kind == "passphrase" else {"name": "key"}
    header_json = json.dumps({"cipher": CIPHER, "chunk": CHUNK, "salt": _b64(salt), "kdf": kdf}).encode()
    header = MAGIC + struct.pack(">I", len(header_json)) + header_json
    aead = AESGCM(_file_key(secret, salt, kdf))
    yield header
    with open(source, "rb") as fh:
        counter = 0
        chunk = fh.read(CHUNK)
        while True:
            following = fh.read(CHUNK) if len(chunk) == CHUNK else b""
            last = not following
            yield aead.encrypt(_nonce(counter, last), chunk, header)
            if last:
                return
            counter += 1
            chunk = following


def is_encrypted(path: Path) -> bool:
    """Whether ``path`` starts like a file written by :func:`encrypted_chunks`."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def decrypt_file(source: Path, dest: Path, secret: Secret) -> None:
    """Decrypt ``source`` into ``dest`` (created 0600), chunk by chunk; ``dest`` is deleted on any failure.

    Raises:
        DecryptionError: wrong passphrase or key, or a damaged or truncated file (the message names ``source``).
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from sigvault.durable import open_private

    what = f"{source}: cannot be decrypted"
    try:
        with open(source, "rb") as fh, open_private(dest, "wb") as out:
            if fh.read(len(MAGIC)) != MAGIC:
                raise DecryptionError(f"{what}: not a sigvault encrypted file")
            (size,) = struct.unpack(">I", fh.read(4).rjust(4, b"\xff"))
            if size > _MAX_HEADER:
                raise DecryptionError(f"{what}: damaged header; use another backup")
            header_json = fh.read(size)
            try:
                header = json.loads(header_json)
                salt = base64.b64decode(header["salt"], validate=True)
                chunk = int(header["chunk"])
                kdf = dict(header["kdf"])
            except (ValueError, KeyError, TypeError):
                raise DecryptionError(f"{what}: damaged header; use another backup") from None
            if header.get("cipher") != CIPHER or not 0 < chunk <= 1 << 26:
                raise DecryptionError(f"{what}: cipher {header.get('cipher')!r} is not supported by this sigvault")
            aad = MAGIC + struct.pack(">I", size) + header_json
            try:
                aead = AESGCM(_file_key(secret, salt, kdf))
            except DecryptionError as exc:
                raise DecryptionError(f"{what}: {exc}") from None
            counter = 0
            piece = fh.read(chunk + _TAG)
            while True:
                following = fh.read(chunk + _TAG) if len(piece) == chunk + _TAG else b""
                last = not following
                try:
                    out.write(aead.decrypt(_nonce(counter, last), piece, aad))
                except InvalidTag:
                    if counter == 0:
                        raise DecryptionError(
                            f"{what}: wrong {'passphrase' if secret.kind == 'passphrase' else 'key file'} "
                            f"({secret.source}), or the file is damaged"
                        ) from None
                    raise DecryptionError(f"{what}: damaged or truncated at chunk {counter}; use another backup") from None
                if last:
                    break
                counter += 1
                piece = following
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        Path(dest).unlink(missing_ok=True)
        raise
