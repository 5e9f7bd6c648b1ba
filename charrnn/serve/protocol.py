"""The OpenAI completions protocol: reading a request's fields strictly, and the shapes of
responses, stream chunks and errors. Tokens are characters."""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from charrnn.config import ServeConfig

MAX_LOGPROBS = 5  # as the OpenAI API allows
MAX_STOPS = 4
DEFAULT_MAX_TOKENS = 16  # as the OpenAI API defaults
COMPLETION_FIELDS = {
    "model", "prompt", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "stream",
    "logprobs", "echo", "top_k", "user", "stream_options",
}  # fmt: skip
SCORE_FIELDS = {"model", "text", "per_char"}
# Upper bounds on a response's bytes (JSON escaped to ASCII), from which its size is bounded
# before any work. Per character drawn: its text (`char_bytes`, the vocabulary's widest symbol
# escaped); with log-probabilities a mark (the token, a float of at most 24 characters, an
# offset and separators) and each alternative (a key and a float).
MARK_BYTES = 40
ALTERNATIVE_BYTES = 30
SCORE_CHAR_BYTES = 64  # {"char": ..., "surprisal_bits": ...} per scored character
CHOICE_BYTES = 512  # a choice's fixed fields


class ApiError(Exception):
    """A request the server refuses: an HTTP status and OpenAI's error object."""

    def __init__(
        self, status: int, message: str, param: str | None = None, kind: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict[str, Any]:
        return {
            "error": {"message": self.message, "type": self.kind, "param": self.param,
                      "code": None}
        }  # fmt: skip


@dataclass(frozen=True)
class CompletionRequest:
    """A completions request with every field checked and defaulted."""

    prompts: tuple[str, ...]
    max_tokens: int
    temperature: float
    top_p: float | None
    top_k: int | None
    n: int
    stops: tuple[str, ...]
    seed: int | None
    stream: bool
    logprobs: int
    echo: bool
    include_usage: bool


def _bad(message: str, param: str) -> ApiError:
    return ApiError(400, message, param)


def _integer(body: dict[str, Any], key: str, default: int | None, low: int, high: int) -> Any:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{key} must be an integer", key)
    if not low <= value <= high:
        raise _bad(f"{key} must be between {low} and {high}, got {value}", key)
    return value


def _number(body: dict[str, Any], key: str, default: float | None) -> Any:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"{key} must be a finite number", key)
    try:
        number = float(value)  # an integer of 400 digits overflows
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise _bad(f"{key} must be a finite number", key)
    return number


def _boolean(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _bad(f"{key} must be true or false", key)
    return value


def _strings(value: Any, key: str, what: str) -> tuple[str, ...]:
    """A string or a non-empty list of strings, as a tuple."""
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise _bad(f"{key} must be {what}", key)
    return tuple(values)


def check_fields(body: Any, known: set[str]) -> dict[str, Any]:
    """The body as a dict; an unknown field is a 400 (a misspelt option must not pass)."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object", "body")
    unknown = sorted(set(body) - known)
    if unknown:
        raise _bad(f"unknown field {unknown[0]!r}", unknown[0])
    return body


def check_model(body: dict[str, Any], name: str) -> None:
    model = body.get("model")
    if model is not None and model != name:
        raise ApiError(404, f"the model {model!r} does not exist; this server has {name!r}",
                       "model", "not_found_error")  # fmt: skip


def read_completion(body: Any, name: str, limits: ServeConfig) -> CompletionRequest:
    """Check every field of a completions request; raises `ApiError` for the first bad one."""
    body = check_fields(body, COMPLETION_FIELDS)
    if "model" not in body:
        raise _bad("model is required", "model")
    check_model(body, name)
    if "prompt" not in body:
        raise _bad("prompt is required", "prompt")
    text = "a string or a non-empty list of strings (tokens are characters)"
    prompts = _strings(body["prompt"], "prompt", text)
    for prompt in prompts:
        if not prompt:
            raise _bad("prompt cannot be empty", "prompt")
        if len(prompt) > limits.max_prompt:
            raise _bad(f"prompt is longer than {limits.max_prompt} characters", "prompt")
    stop = body.get("stop")
    stops = () if stop is None else _strings(stop, "stop", "a string or a list of strings")
    if len(stops) > MAX_STOPS or any(not s for s in stops):
        raise _bad(f"stop takes 1 to {MAX_STOPS} non-empty strings", "stop")
    n = _integer(body, "n", 1, 1, limits.max_n)
    if n * len(prompts) > limits.max_n:
        raise _bad(f"n x prompts must be at most {limits.max_n}", "n")
    temperature = _number(body, "temperature", 1.0)
    if not 0 <= temperature <= 100:
        raise _bad("temperature must be between 0 and 100", "temperature")
    top_p = _number(body, "top_p", None)
    if top_p is not None and not 0 < top_p <= 1:
        raise _bad("top_p must be in (0, 1]", "top_p")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}):
        raise _bad("stream_options takes only include_usage", "stream_options")
    return CompletionRequest(
        prompts=prompts,
        max_tokens=_integer(body, "max_tokens", DEFAULT_MAX_TOKENS, 0, limits.max_tokens),
        temperature=temperature,
        top_p=top_p,
        top_k=_integer(body, "top_k", None, 1, 1 << 30),
        n=n,
        stops=stops,
        seed=_integer(body, "seed", None, -(2**63), 2**64 - 1),
        stream=_boolean(body, "stream"),
        logprobs=_integer(body, "logprobs", 0, 0, MAX_LOGPROBS),
        echo=_boolean(body, "echo"),
        include_usage=bool(options and _boolean(options, "include_usage")),
    )


def read_score(body: Any, name: str, limits: ServeConfig) -> tuple[str, bool]:
    """The text to score and whether per-character surprisal is wanted."""
    body = check_fields(body, SCORE_FIELDS)
    check_model(body, name)
    text = body.get("text")
    if not isinstance(text, str) or len(text) < 2:
        raise _bad("text must be a string of at least 2 characters", "text")
    if len(text) > limits.max_prompt:
        raise _bad(f"text is longer than {limits.max_prompt} characters", "text")
    return text, _boolean(body, "per_char")


def response_bound(asked: CompletionRequest, echoed: list[str], char_bytes: int) -> int:
    """The most bytes a completion's response can take: `echoed` is each prompt's echo (empty
    without), `char_bytes` the most one drawn character takes. `max_response` is compared with
    it before any work; a stream's events carry the same, their framing not counted."""
    mark = MARK_BYTES + char_bytes + (ALTERNATIVE_BYTES + char_bytes) * asked.logprobs
    per_char = char_bytes + (mark if asked.logprobs else 0)
    total = 0
    for echo in echoed:
        echo_bytes = len(json.dumps(echo)) + (mark * len(echo) if asked.logprobs else 0)
        total += asked.n * (echo_bytes + asked.max_tokens * per_char + CHOICE_BYTES)
    return total


def symbol_bytes(text: str) -> int:
    """The bytes one symbol takes in a response's JSON (escaped to ASCII)."""
    return len(json.dumps(text)) - 2


def check_response_size(bound: int, limits: ServeConfig, hint: str) -> None:
    """A 400 when a response could be larger than `max_response` bytes."""
    if bound > limits.max_response:
        raise _bad(
            f"the response could reach {bound} bytes, over this server's {limits.max_response}"
            f" ({hint})", "max_tokens",
        )  # fmt: skip


def completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex[:24]}"


def completion_object(
    ident: str, name: str, choices: list[dict[str, Any]], usage: dict[str, int] | None
) -> dict[str, Any]:
    """A completion response, or one stream chunk of it (choices with the new text)."""
    body: dict[str, Any] = {
        "id": ident, "object": "text_completion", "created": int(time.time()), "model": name,
        "choices": choices,
    }  # fmt: skip
    if usage is not None:
        body["usage"] = usage
    return body


def choice_object(
    index: int, text: str, finish: str | None, logprobs: dict[str, list[Any]] | None
) -> dict[str, Any]:
    return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}


def usage_object(prompt_chars: int, completion_chars: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_chars, "completion_tokens": completion_chars,
        "total_tokens": prompt_chars + completion_chars,
    }  # fmt: skip


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()
