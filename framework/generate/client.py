"""A client for OpenAI-compatible servers that a long generation on a cluster can trust.

Async with a fixed number of requests in flight; retries with exponential backoff and full jitter on 429, 5xx,
408, timeouts, dropped connections and malformed or truncated responses, honouring `Retry-After`; a response that
cannot be a trace (no text, a wrong number of choices, an unknown finish reason) is never returned as one. Each
outcome is handed to `on_result` as it arrives, so the caller journals it before the next one. The API key is
only ever in the Authorization header: error reasons are built from status codes and redacted bodies, never from
the request.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx  # httpx's successor: its connection pool keeps up at high concurrency (benchmarks)

from framework.redaction import redact_text

MAX_BACKOFF_S = 60.0
MAX_RETRY_AFTER_S = 600.0
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
FATAL_STATUS = frozenset({401, 403})  # a wrong key or no access: every request would fail alike


class EndpointRefused(RuntimeError):
    """The server refused the credentials or the model: nothing more is asked of it."""


@dataclass(frozen=True)
class Call:
    """One request to the endpoint: one prompt, one sample."""

    request_id: str
    prompt: str
    seed: int


@dataclass
class Outcome:
    request_id: str
    ok: bool
    text: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    attempts: int = 0
    seconds: float = 0.0
    max_tokens: int | None = None  # the limit the answer had, where it was less than the spec's


@dataclass
class Endpoint:
    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)  # in the Authorization header and nowhere else
    chat: bool = True
    concurrency: int = 16
    timeout_s: float = 600.0
    max_retries: int = 8
    backoff_s: float = 1.0
    sampling: dict[str, Any] = field(default_factory=dict)  # temperature, top_p, top_k, max_tokens

    def url(self) -> str:
        return self.base_url.rstrip("/") + ("/chat/completions" if self.chat else "/completions")

    def payload(self, call: Call) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "n": 1, "seed": call.seed}
        for name in ("temperature", "top_p", "max_tokens"):
            if name in self.sampling:
                body[name] = self.sampling[name]
        if self.sampling.get("top_k", -1) not in (-1, None):  # not an OpenAI parameter: sent only when used
            body["top_k"] = self.sampling["top_k"]
        if self.chat:
            body["messages"] = [{"role": "user", "content": call.prompt}]
        else:
            body["prompt"] = call.prompt
        return body


class Malformed(ValueError):
    """A 200 response that is not one complete sample."""


class Unusable(ValueError):
    """A complete, well-formed answer that is no trace (a content filter, an unknown finish reason): asking again
    would pay for the same answer, so the request fails at once."""


def parse_response(body: bytes, chat: bool) -> tuple[str, str, int | None, int | None]:
    """(text, finish_reason, prompt tokens, completion tokens) of one complete sample; Malformed for what may be
    a transport fault (retried), Unusable for a complete answer that is not a trace (not retried). A reasoning
    server's separate chain of thought (`reasoning_content`, `reasoning`) comes first in the text: it is the trace."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Malformed(f"response is not JSON ({type(e).__name__}, {len(body)} bytes): truncated?") from None
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        raise Malformed("response has no 'choices' list")
    choices = data["choices"]
    if len(choices) != 1:
        raise Malformed(f"asked for 1 choice, got {len(choices)}")
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") if chat else None
    if chat and not isinstance(message, dict):
        raise Malformed("the choice holds no message")
    text = message.get("content") if message is not None else choice.get("text")
    thinking = next(
        (message[k] for k in ("reasoning_content", "reasoning") if isinstance((message or {}).get(k), str)), None
    )
    if thinking:
        text = thinking if not isinstance(text, str) or not text else f"{thinking}\n\n{text}"
    if not isinstance(text, str):
        raise Malformed("the choice holds no text")
    reason = choice.get("finish_reason")
    if reason is None:
        raise Malformed("no finish_reason: the answer was cut short")
    if reason not in ("stop", "length"):
        raise Unusable(f"finish_reason {reason!r}: the sample did not end by a stop or the token limit")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    text = text.encode("utf-8", errors="replace").decode("utf-8")  # a lone surrogate cannot be stored
    return text, reason, _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def retry_after(headers: httpx.Headers) -> float | None:
    """Seconds a `Retry-After` header asks for (a number or an HTTP date), capped; None when absent or unreadable."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if _is_date(value) else None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _is_date(value: str) -> bool:
    try:
        return email.utils.parsedate_to_datetime(value) is not None
    except (TypeError, ValueError):
        return False


def backoff(attempt: int, base_s: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, base * 2^attempt], capped, so retrying clients spread out instead of
    returning in lock step."""
    return rng.uniform(0, min(MAX_BACKOFF_S, base_s * 2**attempt))


def _reason(status: int, body: bytes, key: str | None) -> str:
    """A server may echo the key it refused: the reason never holds it, whatever its shape."""
    text = body.decode("utf-8", errors="replace")
    if key:
        text = text.replace(key, "[REDACTED]")  # before the cut, so no part of the key survives it
    return redact_text(f"HTTP {status}: {text[:300]}".replace("\n", " "))


async def _one(client: httpx.AsyncClient, ep: Endpoint, call: Call, rng: random.Random) -> Outcome:
    """One request to its end: a sample, or failed for good with the last reason."""
    t0 = time.monotonic()
    reason = ""
    for attempt in range(ep.max_retries + 1):
        wait: float | None = None
        try:
            async with asyncio.timeout(ep.timeout_s):  # the whole answer, not each read: a trickle also times out
                resp = await client.post(ep.url(), json=ep.payload(call))
                body = await resp.aread()
            if resp.status_code == 200:
                text, finish, p_tok, c_tok = parse_response(body, ep.chat)
                return Outcome(
                    call.request_id, True, text, finish, p_tok, c_tok, None, attempt + 1, time.monotonic() - t0
                )
            reason = _reason(resp.status_code, body, ep.api_key)
            if resp.status_code in FATAL_STATUS:
                raise EndpointRefused(
                    f"{ep.base_url} refused the request ({reason}); check the key in the variable named by "
                    "api_key_env and the model's access"
                )
            if resp.status_code not in RETRY_STATUS:
                break  # a 400 or 404 asked again is refused again
            wait = retry_after(resp.headers)
        except Unusable as e:
            reason = f"unusable answer: {e}"
            break
        except Malformed as e:
            reason = f"malformed response: {e}"
        except (httpx.TimeoutException, TimeoutError):
            reason = f"no complete response within {ep.timeout_s:g} s"
        except httpx.HTTPError as e:  # refused, reset or dropped connection, an undecodable body, ...
            reason = f"connection failed: {type(e).__name__}"  # the type only: a message may quote the URL
        if attempt < ep.max_retries:
            await asyncio.sleep(wait if wait is not None else backoff(attempt, ep.backoff_s, rng))
    return Outcome(call.request_id, False, error=reason, attempts=attempt + 1, seconds=time.monotonic() - t0)


async def _run(ep: Endpoint, calls: list[Call], on_result: Callable[[Outcome], None], seed: int) -> None:
    headers = {"Authorization": f"Bearer {ep.api_key}"} if ep.api_key else {}
    limits = httpx.Limits(max_connections=ep.concurrency, max_keepalive_connections=ep.concurrency)
    timeout = httpx.Timeout(ep.timeout_s, connect=min(30.0, ep.timeout_s))
    queue: asyncio.Queue[Call] = asyncio.Queue()
    for call in calls:
        queue.put_nowait(call)

    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=timeout, trust_env=True) as client:

        async def worker(k: int) -> None:
            rng = random.Random(seed * 1_000_003 + k)
            while not queue.empty():
                call = queue.get_nowait()
                try:
                    outcome = await _one(client, ep, call, rng)
                except EndpointRefused:
                    raise
                except Exception as e:  # a fault of one request never costs the others (nor their answers)
                    outcome = Outcome(call.request_id, False, error=f"client error: {type(e).__name__}")
                # In a thread: the journal's fsync must not stall every other answer in flight.
                await asyncio.to_thread(on_result, outcome)

        workers = [asyncio.create_task(worker(k)) for k in range(min(ep.concurrency, len(calls)))]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()


def generate(ep: Endpoint, calls: Iterable[Call], on_result: Callable[[Outcome], None], seed: int = 0) -> None:
    """Send every call, `ep.concurrency` at a time, handing each outcome to `on_result` as it arrives (from worker
    threads: `on_result` must be thread-safe). Raises EndpointRefused at once on a 401/403 (the outcomes already
    handed over stay with the caller)."""
    todo = list(calls)
    if todo:
        asyncio.run(_run(ep, todo, on_result, seed))
