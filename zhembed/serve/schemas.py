"""The server's request types, its JSON responses and its one error shape (OpenAI's), apart from any logic,
as text-embeddings-inference keeps them in router/src/http/types.rs."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Literal

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, ValidationError

if TYPE_CHECKING:
    from ..search.index import Hit

SURROGATE = re.compile("[\ud800-\udfff]")


class ApiError(Exception):
    """A refusal with its HTTP status; the app turns it into `error_body`."""

    def __init__(self, status: int, message: str, param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    long: Literal["truncate", "chunk"] = "truncate"  # zhembed's extension: texts over the model's length


class SimilarityRequest(BaseModel):
    source: str
    targets: list[str]
    calibrated: bool = False  # the probability that the texts match (the model's calibration.json), not cosine


class SearchRequest(BaseModel):
    query: str | list[str]
    k: int = 10


async def parse(request: Request, body: type[BaseModel]) -> BaseModel:
    """The request body as `body`, validated by pydantic straight from its bytes. FastAPI's own body
    parameter (json.loads, then dependency solving, then validation) took about a third of a one-sentence
    request's server time; its errors keep FastAPI's shape (a 'body' location, 'json_invalid' for bad JSON)."""
    raw = await request.body()
    try:
        return body.model_validate_json(raw)
    except ValidationError as e:
        errors = e.errors()
    if errors and errors[0]["type"] == "json_invalid":  # the strict parser refuses lone surrogates, which the
        try:                                            # checks after it name: stdlib json takes them
            return body.model_validate(json.loads(raw))
        except ValidationError as e:
            errors = e.errors()
        except ValueError:
            pass
    raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in errors])


def request_schema(body: type[BaseModel]) -> dict:
    """The OpenAPI requestBody of a handler that parses `body` itself (see `parse`), for /docs."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": body.model_json_schema()}}}}


def error_body(status: int, message: str, param: str | None = None) -> dict:
    """OpenAI's error shape; lone surrogates from the request are escaped so the body always encodes."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    message, param = (SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", x) if x else x for x in (message, param))
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def json_response(body: dict, status: int = 200, headers: dict | None = None) -> Response:
    """Serialized by orjson, numpy arrays included (float32 vectors as their shortest exact decimals): about
    20 times faster than tolist() + json.dumps on a batch of vectors, which would hold up the event loop."""
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status, headers,
                    media_type="application/json")


def error_response(status: int, message: str, headers: dict | None = None, param: str | None = None) -> Response:
    return json_response(error_body(status, message, param), status, headers)


def hit_body(hit: Hit) -> dict:
    """A search hit as JSON; passages of long documents carry their character offsets."""
    body = {"id": hit.id, "text": hit.text, "score": round(hit.score, 6)}
    if hit.start is not None:
        body.update(start=hit.start, end=hit.end)
    return body
