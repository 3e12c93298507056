"""One exception hierarchy for the whole library.

Every error carries a one-line message that names the culprit (file, person, value) and says what to do
next. The CLI is the only place that turns them into text and an exit code: ``exit_code`` 1 for runtime
errors, 2 for usage errors.
"""

from __future__ import annotations


class SigvaultError(Exception):
    """Base class: a failure the user can act on. ``str(err)`` is the one-line message."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(SigvaultError):
    """The command was called wrongly (bad value, malformed id, bad manifest header)."""

    exit_code = 2


class ImageError(SigvaultError):
    """An image cannot be used: missing, unreadable, not an image, truncated."""


class ImageTooLargeError(ImageError):
    """The image exceeds the configured pixel or byte limit (decompression-bomb guard)."""


class NoInkError(ImageError):
    """The image decodes but holds no signature ink."""


class NoSignatureFoundError(ImageError):
    """A document image (a cheque, a form) on which one signature could not be told: none, or two candidates."""


class InvalidPersonIdError(UsageError):
    """A person id is empty, too long, or contains forbidden characters."""


class PersonNotFoundError(SigvaultError):
    """The person is not enrolled."""


class DecisionNotFoundError(SigvaultError):
    """The decision log has no entry with that id."""


class NotEnoughReferencesError(SigvaultError):
    """The person has too few references to decide."""


class DuplicateReferenceError(SigvaultError):
    """The same image bytes are already enrolled for this person."""


class ModelMismatchError(SigvaultError):
    """Stored vectors were made by another model; the user must run `sigvault reembed`."""


class StaleSchemaError(SigvaultError):
    """The database schema is not at the head revision; the user must run `sigvault db upgrade`."""


class IndexFileError(SigvaultError):
    """The FAISS index file is unreadable or inconsistent and could not be repaired."""


class ModelError(SigvaultError):
    """The embedding model file is missing, unreadable or inconsistent with its card."""


class DecryptionError(SigvaultError):
    """An encrypted backup cannot be decrypted: wrong passphrase or key file, or the file is damaged."""


class ManifestError(UsageError):
    """An audit manifest is malformed (bad header, duplicate item id, missing column)."""


class SuspectReferenceError(SigvaultError):
    """A new reference looks unlike the person's other references (another person's signature, an imitation, a
    blank, a stamp): refused at enrolment unless forced."""


class ReferenceNotFoundError(SigvaultError):
    """The person has no reference with that id."""
