"""OpenAI-format error responses, and the handlers that turn every failure into one.

Shape: ``{"error": {"message", "type", "param", "code"}}``. Invariant: no traceback, exception
class name or file path ever reaches a client; unexpected exceptions are logged server-side
and answered with a generic 500.
"""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from continuum.engine.async_engine import (EngineDeadError, EngineOverloadedError,
                                           RequestFailedError)
from continuum.errors import ContinuumError, InvalidRequestError

logger = logging.getLogger(__name__)

RETRY_AFTER_S = "1"


class OpenAIError(Exception):
    """An error to answer with ``status`` and an OpenAI error object."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.headers = param, code, headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param)


def to_openai_error(exc: BaseException) -> OpenAIError:
    """Map any exception to the error a client sees."""
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, InvalidRequestError):      # includes PromptTooLongError
        return OpenAIError(400, str(exc))
    if isinstance(exc, EngineOverloadedError):
        return OpenAIError(503, str(exc), type="server_overloaded", code=exc.code,
                           headers={"Retry-After": RETRY_AFTER_S})
    if isinstance(exc, RequestFailedError):
        return OpenAIError(500, str(exc), type="server_error", code="request_failed")
    if isinstance(exc, EngineDeadError):
        return OpenAIError(500, str(exc), type="server_error", code="engine_dead")
    logger.error("internal error", exc_info=exc)
    return OpenAIError(500, "internal server error", type="server_error")


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errs = exc.errors()
    if not errs:
        return "invalid request body", None
    e = errs[0]
    loc = [str(x) for x in e.get("loc", ()) if x != "body"]
    param = ".".join(loc) or None
    msg = e.get("msg", "invalid value")
    if e.get("type") == "json_invalid":
        return "request body is not valid JSON", None
    if e.get("type") == "missing":
        return f"missing required parameter {param!r}", param
    more = f" (and {len(errs) - 1} more errors)" if len(errs) > 1 else ""
    return f"invalid value for {param!r}: {msg}{more}" if param else f"{msg}{more}", param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OpenAIError)
    async def _openai(_: Request, exc: OpenAIError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        # OpenAI answers schema errors with 400 invalid_request_error (FastAPI would say 422
        # with pydantic internals in the body).
        msg, param = _validation_message(exc)
        return OpenAIError(400, msg, param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        msg = "not found" if exc.status_code == 404 else str(exc.detail)
        return OpenAIError(exc.status_code, msg, code=code).response()

    @app.exception_handler(ContinuumError)
    async def _continuum(_: Request, exc: ContinuumError):
        return to_openai_error(exc).response()

    # Anything else is a bug: Starlette answers it from ServerErrorMiddleware (then re-raises
    # it so the server logs the traceback); the client sees only a generic 500.
    @app.exception_handler(Exception)
    async def _any(_: Request, exc: Exception):
        return to_openai_error(exc).response()
