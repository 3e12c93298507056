"""The HTTP service (``sigvault serve``): versioned JSON endpoints over the same :class:`~sigvault.vault.Vault`,
settings and model as the command line, with API keys (:mod:`sigvault.keys`).

FastAPI on uvicorn. Endpoints are plain (synchronous) functions, which FastAPI runs in a thread pool: the vault
blocks on SQL and on the model, and onnxruntime, SQLAlchemy's pool and the image code release the GIL. One
vault per worker process; calls that touch the FAISS index held in memory (enroll, identify, remove, readiness)
take one lock per process, verifications (SQL and the model only) run side by side. Several processes (``--workers``,
or several machines) share the database; the index files are kept in line across processes as they are for
several CLI processes (:mod:`sigvault.index_sync`).

Every answer that is not a success is ``{"code": ..., "message": ...}``: ``code`` stable (listed in
docs/service.md), ``message`` the one line the CLI prints after ``error:``. 4xx are the caller's mistakes, 5xx the
server's; a traceback goes to the server's log, never into a response. A request refused for any reason changes
nothing: images are read, checked and embedded before any transaction (see :mod:`sigvault.vault`).

Configuration is the CLI's (``SIGVAULT_HOME``, ``SIGVAULT_DATABASE_URL``, ``SIGVAULT_MODEL``, image limits), plus
``SIGVAULT_MAX_BODY_BYTES``: the largest request body accepted (default 32 MiB).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any

import anyio
from fastapi import Body, Depends, FastAPI, File, Path, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from sigvault import __version__
from sigvault.config import Settings, _positive_int
from sigvault.errors import (
    DecisionNotFoundError,
    DuplicateReferenceError,
    ImageError,
    ImageTooLargeError,
    IndexFileError,
    InvalidPersonIdError,
    ModelError,
    ModelMismatchError,
    NoInkError,
    NotEnoughReferencesError,
    PersonNotFoundError,
    ReferenceNotFoundError,
    SigvaultError,
    StaleSchemaError,
    SuspectReferenceError,
    UsageError,
)
from sigvault.keys import ApiKeys, AuthError, KeyInfo, Scope, require
from sigvault.review import AlreadyReviewedError, NotADecisionError
from sigvault.scoring import DECISIONS

if TYPE_CHECKING:
    from sigvault.embedder import Embedder
    from sigvault.vault import Vault

ENV_MAX_BODY_BYTES = "SIGVAULT_MAX_BODY_BYTES"
DEFAULT_MAX_BODY_BYTES = 32 * 2**20
MAX_DECISION_ID = 2**63 - 1
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
_KEY = "sigvault.api_key"  # where the authenticated key travels in the ASGI scope
log = logging.getLogger("sigvault.service")

#: (error class, HTTP status, stable code), the first matching class wins (subclasses before their bases).
ERRORS: tuple[tuple[type[SigvaultError], int, str], ...] = (
    (InvalidPersonIdError, 400, "invalid_person_id"),
    (UsageError, 400, "invalid_request"),
    (ImageTooLargeError, 413, "image_too_large"),
    (NoInkError, 422, "no_ink"),
    (ImageError, 422, "invalid_image"),
    (PersonNotFoundError, 404, "person_not_found"),
    (NotADecisionError, 409, "not_a_decision"),
    (AlreadyReviewedError, 409, "already_reviewed"),
    (DecisionNotFoundError, 404, "decision_not_found"),
    (NotEnoughReferencesError, 409, "not_enough_references"),
    (DuplicateReferenceError, 409, "duplicate_reference"),
    (SuspectReferenceError, 409, "suspect_reference"),
    (ReferenceNotFoundError, 404, "reference_not_found"),
    (ModelMismatchError, 503, "model_mismatch"),
    (StaleSchemaError, 503, "stale_schema"),
    (ModelError, 503, "model_error"),
    (IndexFileError, 500, "index_error"),
    (SigvaultError, 500, "server_error"),
)
_HTTP_CODES = {
    400: "malformed_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def _one_line(message: str) -> str:
    return " ".join(message.split())


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": _one_line(message)}, status_code=status, headers=headers)


def sigvault_error_response(exc: SigvaultError) -> JSONResponse:
    """The JSON answer to a library error: its status and stable code (:data:`ERRORS`), the CLI's message."""
    if isinstance(exc, AuthError):
        status = 403 if exc.code == "insufficient_scope" else 401
        return error_response(status, exc.code, str(exc), {"WWW-Authenticate": "Bearer"} if status == 401 else None)
    status, code = next((s, c) for cls, s, c in ERRORS if isinstance(exc, cls))
    return error_response(status, code, str(exc))


# ------------------------------------------------------------------------------------------- middleware


class _BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` when the streamed body passes the limit; an HTTPException, so that FastAPI's body
    parsing lets it through to the exception handlers."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than the limit of {limit} bytes ({ENV_MAX_BODY_BYTES})")


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes: at once when Content-Length says so, else while they stream."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            if b"100-continue" not in headers.get(b"expect", b"").lower():
                await self._drain(receive, min(int(length), 2 * self.limit))
            await error_response(413, "body_too_large", _BodyTooLarge(self.limit).detail)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited, send)

    @staticmethod
    async def _drain(receive: Callable[[], Awaitable[Any]], most: int) -> None:
        """Read and drop up to ``most`` bytes of the body, so that a client still sending it reads the 413 instead
        of a connection reset (the kernel resets a socket closed with unread data). A client that asked
        ``Expect: 100-continue`` (curl, for large bodies) sends nothing and needs no draining."""
        seen = 0
        while seen < most:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


class Authenticate:
    """Authenticate every request but :data:`PUBLIC_PATHS` before its body is read: a request without a live
    key is answered 401 at once. The key goes into the scope; each endpoint then checks its scope."""

    def __init__(self, app: Any, keys: ApiKeys) -> None:
        self.app, self.keys = app, keys

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1").strip()
        scheme, _, secret = header.partition(" ")
        try:
            if header and scheme.lower() != "bearer":
                raise AuthError("missing_key", "the Authorization header must be `Bearer <secret>`")
            key = await anyio.to_thread.run_sync(self.keys.authenticate, secret.strip() or None)
        except SigvaultError as exc:
            await sigvault_error_response(exc)(scope, receive, send)
            return
        scope[_KEY] = key
        await self.app(scope, receive, send)


class Metrics:
    """Prometheus text-format counters of this worker process: requests by route and status, their latency
    (histogram), and decisions by outcome. Each worker counts its own (``process`` label)."""

    BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, list[float]] = {}  # route -> [count per bucket..., +Inf count, sum]
        self.decisions: dict[str, int] = dict.fromkeys(DECISIONS, 0)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (method, route, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            row = self.latency.setdefault(route, [0.0] * (len(self.BUCKETS) + 2))
            for i, bound in enumerate(self.BUCKETS):
                if seconds <= bound:
                    row[i] += 1
            row[-2] += 1
            row[-1] += seconds

    def decided(self, decision: str) -> None:
        with self._lock:
            self.decisions[decision] = self.decisions.get(decision, 0) + 1

    def render(self) -> str:
        pid = os.getpid()
        lines = [
            "# HELP sigvault_http_requests_total HTTP requests answered, by method, route and status.",
            "# TYPE sigvault_http_requests_total counter",
        ]
        with self._lock:
            for (method, route, status), n in sorted(self.requests.items()):
                lines.append(
                    f'sigvault_http_requests_total{{process="{pid}",method="{method}",route="{route}",status="{status}"}} {n}'
                )
            lines += [
                "# HELP sigvault_http_request_seconds Time to answer an HTTP request, by route.",
                "# TYPE sigvault_http_request_seconds histogram",
            ]
            for route, row in sorted(self.latency.items()):
                labels = f'process="{pid}",route="{route}"'
                for bound, count in zip(self.BUCKETS, row, strict=False):
                    lines.append(f'sigvault_http_request_seconds_bucket{{{labels},le="{bound}"}} {int(count)}')
                lines.append(f'sigvault_http_request_seconds_bucket{{{labels},le="+Inf"}} {int(row[-2])}')
                lines.append(f"sigvault_http_request_seconds_count{{{labels}}} {int(row[-2])}")
                lines.append(f"sigvault_http_request_seconds_sum{{{labels}}} {row[-1]:.6f}")
            lines += [
                "# HELP sigvault_decisions_total Verifications decided by this process, by decision.",
                "# TYPE sigvault_decisions_total counter",
            ]
            for decision, n in self.decisions.items():
                lines.append(f'sigvault_decisions_total{{process="{pid}",decision="{decision}"}} {n}')
        return "\n".join(lines) + "\n"


class Observe:
    """Count every request and its latency in :class:`Metrics` (route = the matched path template)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def recorded(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recorded)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - start)


# ------------------------------------------------------------------------------------------------ the app


def max_body_bytes() -> int:
    """``SIGVAULT_MAX_BODY_BYTES``, or the default."""
    return _positive_int(os.environ, ENV_MAX_BODY_BYTES) or DEFAULT_MAX_BODY_BYTES


_bearer = HTTPBearer(auto_error=False, description="An API key's secret (`sigvault keys create NAME --scope ...`).")


def needs(scope: Scope) -> Callable[..., Awaitable[KeyInfo]]:
    """A dependency: the request's key (authenticated by :class:`Authenticate`), which must grant ``scope``."""

    async def check(request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> KeyInfo:
        key: KeyInfo = request.scope[_KEY]
        require(key, scope)
        return key

    return check


def _read(upload: UploadFile) -> tuple[bytes, str]:
    """An uploaded file's bytes and the name messages give it (its file name, else its field name)."""
    return upload.file.read(), upload.filename or "upload"


def create_app(settings: Settings, *, embedder: Embedder | None = None, max_body: int | None = None) -> FastAPI:
    """The application over the vault ``settings`` describe, opened now (a stale schema or a missing model is
    refused here, before any request) and closed at shutdown."""
    from sigvault.vault import Vault

    vault = Vault.open(settings, embedder=embedder)
    try:
        _ = vault.model_id  # load the model now: the first request must not wait for it
    except BaseException:
        vault.close()
        raise
    return _app(vault, max_body if max_body is not None else max_body_bytes())


def check(settings: Settings) -> None:
    """Open the vault and load the model as a worker will, then close them.

    Raises:
        SigvaultError: as :func:`create_app`.
    """
    from sigvault.vault import Vault

    with Vault.open(settings) as vault:
        _ = vault.model_id


def app_from_environment() -> FastAPI:
    """The factory each uvicorn worker calls: settings from the environment, as ``sigvault serve`` set them."""
    return create_app(Settings.resolve())


def _app(vault: Vault, max_body: int) -> FastAPI:  # noqa: C901 - one closure per endpoint, listed in order
    from sigvault.vault import VerifyItem

    keys = ApiKeys(vault.engine)
    index_lock = threading.Lock()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        vault.close()

    app = FastAPI(
        title="sigvault",
        version=__version__,
        summary="Offline handwritten-signature verification: enroll references, verify questioned signatures.",
        description=(
            "Every call but `/healthz` and `/readyz` needs `Authorization: Bearer <secret>` of a key made with "
            "`sigvault keys create NAME --scope verify|enroll|admin`. Errors are `{\"code\", \"message\"}`."
        ),
        lifespan=lifespan,
    )

    @app.exception_handler(SigvaultError)
    async def _sigvault_error(_: Request, exc: SigvaultError) -> JSONResponse:
        return sigvault_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path"))
        what = str(first.get("msg", "invalid request"))
        what = what[:1].lower() + what[1:]
        return error_response(422, "invalid_request", f"{where}: {what}" if where else what)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code == 400:
            detail = message.rstrip(".")
            message = f"the request body is not valid multipart/form-data ({detail}); send each image as a file field"
        elif exc.status_code == 404:
            message = "no such endpoint; see /docs"
        return error_response(exc.status_code, code, message)

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.error("internal error", exc_info=exc)
        detail = _one_line(str(exc))[:300]
        return error_response(
            500, "internal_error", f"internal error ({type(exc).__name__}: {detail}); see the server's log and report it"
        )

    app.add_middleware(Authenticate, keys=keys)
    app.add_middleware(BodyLimit, limit=max_body)
    app.add_middleware(Observe, metrics=metrics)

    # ---------------------------------------------------------------------------------------- health

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """The process answers (no database, no model)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "not ready"}})
    def readyz() -> Any:
        """The database answers, the model is loaded, the index is in line with the database."""
        try:
            with index_lock:
                references = vault.sync_index()
            head = vault.log_head()
        except SigvaultError as exc:
            return error_response(503, "not_ready", str(exc))
        return {"status": "ready", "model": vault.model_id, "references": references, "log_head": head}

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def metrics_text(_: Annotated[KeyInfo, Depends(needs("verify"))]) -> str:
        """Prometheus text format: requests by route and status, latency, decisions by outcome (this worker)."""
        return metrics.render()

    # --------------------------------------------------------------------------------- verify and co.

    @app.post("/v1/persons/{person}/verify", tags=["verify"])
    def verify(
        person: str, image: Annotated[UploadFile, File(description="The questioned signature.")],
        key: Annotated[KeyInfo, Depends(needs("verify"))],
    ) -> dict[str, Any]:
        """Verify a questioned signature against the person's references (as `sigvault verify --json`); logged
        with the key's name, `decision_id` is its place in the decision log."""
        data, name = _read(image)
        item = VerifyItem(person, data, name, {"api_key": key.name}, operator=key.operator)
        result = vault.verify_many([item], kind="verify")[0]
        if isinstance(result, SigvaultError):
            raise result
        metrics.decided(result.decision)
        return result.to_dict()

    @app.post("/v1/compare", tags=["verify"])
    def compare(
        image_a: Annotated[UploadFile, File()], image_b: Annotated[UploadFile, File()],
        _: Annotated[KeyInfo, Depends(needs("verify"))],
    ) -> dict[str, Any]:
        """Probability that two signatures share a writer (as `sigvault compare --json`); not logged."""
        (a, name_a), (b, name_b) = _read(image_a), _read(image_b)
        return vault.compare(a, b, names=(name_a, name_b)).to_dict()

    @app.post("/v1/identify", tags=["verify"])
    def identify(
        image: Annotated[UploadFile, File()], _: Annotated[KeyInfo, Depends(needs("verify"))],
        top: Annotated[int, Query(ge=1, le=100)] = 5,
    ) -> dict[str, Any]:
        """The enrolled persons whose references match best (as `sigvault identify --json`); not logged."""
        data, name = _read(image)
        with index_lock:
            candidates = vault.identify(data, top, name=name)
        return {"candidates": [c.to_dict() for c in candidates]}

    # ----------------------------------------------------------------------------------------- people

    @app.post("/v1/persons/{person}/references", tags=["people"])
    def enroll(
        person: str, images: Annotated[list[UploadFile], File(description="Reference images (repeat the field).")],
        key: Annotated[KeyInfo, Depends(needs("enroll"))],
    ) -> dict[str, Any]:
        """Add reference signatures (creating the person), all or nothing (as `sigvault enroll --json`); a
        reference the enrolment gate finds unlike the person's others is refused (409 suspect_reference: only
        the CLI's `--force` overrides it); logged with the key's name as operator."""
        read = [_read(upload) for upload in images]
        with index_lock:
            result = vault.enroll(
                person, [data for data, _ in read], names=[name for _, name in read], operator=key.operator
            )
        return result.to_dict()

    @app.get("/v1/persons", tags=["people"])
    def people(_: Annotated[KeyInfo, Depends(needs("verify"))]) -> dict[str, Any]:
        """Enrolled persons with their reference count and threshold (as `sigvault people list --json`)."""
        return {
            "people": [
                {
                    "person": p.person_id,
                    "references": p.n_references,
                    "threshold": p.threshold,
                    "override": p.is_override,
                    "created_at": p.created_at.isoformat(),
                }
                for p in vault.people()
            ]
        }

    @app.get("/v1/persons/{person}", tags=["people"])
    def person_detail(person: str, _: Annotated[KeyInfo, Depends(needs("verify"))]) -> dict[str, Any]:
        """A person's references and threshold (as `sigvault people show --json`)."""
        return vault.person(person).to_dict()

    @app.delete("/v1/persons/{person}", tags=["people"])
    def remove(person: str, key: Annotated[KeyInfo, Depends(needs("admin"))]) -> dict[str, Any]:
        """Erase a person: references, images, vectors, threshold, index entries (the decision log stays and
        records the removal with the key's name)."""
        with index_lock:
            result = vault.remove(person, operator=key.operator)
        return result.to_dict()  # with "erased" and what the erasure still waits for (sigvault.erasure)

    @app.put("/v1/persons/{person}/threshold", tags=["people"])
    def set_threshold(
        person: str, value: Annotated[float, Body(embed=True, description="The new threshold (an override).")],
        key: Annotated[KeyInfo, Depends(needs("admin"))],
    ) -> dict[str, Any]:
        """Override the person's threshold (as `sigvault people threshold PERSON VALUE`; a value outside the
        calibrated range is refused: only the CLI's `--force` sets one); logged with the key's name."""
        return _threshold(vault.set_threshold(person, value, operator=key.operator))

    @app.delete("/v1/persons/{person}/threshold", tags=["people"])
    def reset_threshold(person: str, key: Annotated[KeyInfo, Depends(needs("admin"))]) -> dict[str, Any]:
        """Drop the override: the threshold computed from the references again (`people threshold --auto`)."""
        return _threshold(vault.set_threshold(person, None, operator=key.operator))

    # ------------------------------------------------------------------------------------------- log

    @app.get("/v1/decisions/{decision_id}", tags=["log"])
    def decision(
        decision_id: Annotated[int, Path(ge=1, le=MAX_DECISION_ID)], _: Annotated[KeyInfo, Depends(needs("verify"))]
    ) -> dict[str, Any]:
        """One decision log entry with its hashes (as a line of `sigvault log export`): a verification, or an
        event (a state change or a review: `kind` says which, its score and probability are null)."""
        return vault.decision(decision_id).to_dict()

    @app.post("/v1/decisions/{decision_id}/review", tags=["log"])
    def review(
        decision_id: Annotated[int, Path(ge=1, le=MAX_DECISION_ID)],
        key: Annotated[KeyInfo, Depends(needs("verify"))],
        outcome: Annotated[str, Body(description="What the reviewer found: genuine or forged.")],
        reason: Annotated[str | None, Body(description="Why (recorded with the outcome).")] = None,
        amend: Annotated[bool, Body(description="Supersede an earlier review of the decision.")] = False,
    ) -> dict[str, Any]:
        """Record a reviewer's outcome beside a logged decision (as `sigvault review ID --outcome ... --json`); the
        key is recorded as the reviewer (`api-key:NAME`). A second review needs `"amend": true`."""
        from sigvault.review import record_review

        return record_review(vault, decision_id, outcome, reason=reason, operator=key.operator, amend=amend).to_dict()

    return app


def _threshold(change: Any) -> dict[str, Any]:
    return {
        "person": change.person,
        "threshold": change.threshold,
        "threshold_method": change.threshold_method,
        "is_override": change.is_override,
    }


# --------------------------------------------------------------------------------------------------- run


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int = 8080, workers: int = 1) -> None:
    """Run the service until interrupted. One worker: this process serves. Several: uvicorn starts them (each
    opens the vault from the settings, passed on in the environment) and restarts one that dies.

    Raises:
        SigvaultError: the vault cannot be opened (stale schema, database down) or the model not loaded.
    """
    import uvicorn

    from sigvault import config

    options: dict[str, Any] = {"host": host, "port": port, "server_header": False, "log_level": "info"}
    if workers == 1:
        uvicorn.run(create_app(settings), **options)
        return
    check(settings)  # refuse here, with one line, what every worker would refuse
    os.environ[config.ENV_HOME] = str(settings.home)
    os.environ[config.ENV_DATABASE_URL] = settings.database_url
    if settings.model is not None:
        os.environ[config.ENV_MODEL] = str(settings.model)
    uvicorn.run("sigvault.service:app_from_environment", factory=True, workers=workers, **options)
