"""The endpoint client against a real local HTTP server that fails on purpose."""

from __future__ import annotations

import email.utils
import json
import random
import time

import httpx2 as httpx
import pytest

from framework.generate.client import (
    Call,
    Endpoint,
    EndpointRefused,
    Malformed,
    Outcome,
    Unusable,
    backoff,
    generate,
    parse_response,
    retry_after,
)
from tests.openai_server import FakeOpenAI, Reply, completion, serving


def run(fake: FakeOpenAI, calls: list[Call], **kw) -> dict[str, Outcome]:
    out: dict[str, Outcome] = {}
    with serving(fake) as url:
        ep = Endpoint(url, "teacher", backoff_s=0.01, **kw)
        generate(ep, calls, lambda o: out.__setitem__(o.request_id, o))
    return out


def calls(n: int) -> list[Call]:
    return [Call(f"r{i}", f"problem {i}", seed=100 + i) for i in range(n)]


def test_every_request_answered_once_with_its_own_prompt_and_seed():
    fake = FakeOpenAI()
    out = run(fake, calls(20), concurrency=4, sampling={"temperature": 0.7, "max_tokens": 50, "top_k": -1})
    assert sorted(out) == sorted(f"r{i}" for i in range(20))
    assert all(o.ok and o.attempts == 1 for o in out.values())
    assert out["r3"].text.startswith("Answer to [problem 3] seed 103")
    assert out["r3"].prompt_tokens == 7 and out["r3"].finish_reason == "stop"
    sent = next(r for r in fake.received if r["messages"][0]["content"] == "problem 3")
    assert (
        sent["_path"] == "/v1/chat/completions"
        and sent["n"] == 1
        and sent["temperature"] == 0.7
        and sent["seed"] == 103
    )
    assert "top_k" not in sent  # -1 is "off": never sent to an API that may refuse it


def test_base_model_prompt_goes_to_completions():
    fake = FakeOpenAI()
    out = run(fake, calls(2), chat=False)
    assert {r["_path"] for r in fake.received} == {"/v1/completions"}
    assert sorted(r["prompt"] for r in fake.received) == ["problem 0", "problem 1"]
    assert all(o.ok for o in out.values())


def test_429_with_retry_after_is_honoured_then_succeeds():
    fake = FakeOpenAI(lambda k, req: Reply(429, b'{"error":"slow down"}', {"Retry-After": "0.3"}) if k < 2 else Reply())
    t0 = time.monotonic()
    out = run(fake, calls(1), concurrency=1)
    assert out["r0"].ok and out["r0"].attempts == 3
    assert time.monotonic() - t0 >= 0.6  # two waits of the server's 0.3 s, not the client's 0.01 s backoff


@pytest.mark.parametrize(
    "bad",
    [
        Reply(500, b"internal error"),
        Reply(503, b""),
        Reply(200, b'{"choices": [{"message": {"content": "cut'),  # truncated JSON
        Reply(200, json.dumps(completion("two", n=2)).encode()),  # a wrong n
        Reply(200, json.dumps(completion("x", finish=None)).encode()),  # no finish reason: cut short
        Reply(200, b'{"choices": []}'),
    ],
    ids=["500", "503", "truncated", "wrong-n", "no-finish", "no-choices"],
)
def test_faults_are_retried_and_never_written_as_a_trace(bad):
    fake = FakeOpenAI(lambda k, req: bad if k == 0 else Reply())
    out = run(fake, calls(1), concurrency=1)
    assert out["r0"].ok and out["r0"].attempts == 2 and out["r0"].text.startswith("Answer to [problem 0]")


def test_a_hung_response_times_out_and_is_retried():
    fake = FakeOpenAI(lambda k, req: Reply(delay_s=3.0) if k == 0 else Reply())
    t0 = time.monotonic()
    out = run(fake, calls(1), concurrency=1, timeout_s=0.5)
    assert out["r0"].ok and out["r0"].attempts == 2
    assert time.monotonic() - t0 < 2.5


def test_persistent_failure_is_recorded_with_its_reason_not_as_text():
    fake = FakeOpenAI(lambda k, req: Reply(500, b"boom"))
    out = run(fake, calls(2), concurrency=2, max_retries=2)
    assert all(not o.ok and o.text is None and o.attempts == 3 for o in out.values())
    assert out["r0"].error == "HTTP 500: boom"
    assert len(fake.received) == 6


def test_a_client_error_is_not_retried():
    fake = FakeOpenAI(lambda k, req: Reply(400, b'{"error": "max_tokens too large"}'))
    out = run(fake, calls(1), max_retries=5)
    assert not out["r0"].ok and out["r0"].attempts == 1 and "HTTP 400" in out["r0"].error


def test_a_dropped_connection_is_retried():
    with serving(FakeOpenAI()) as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
    # The server is gone: every attempt is refused; the reason says so without the request's headers.
    out: dict[str, Outcome] = {}
    ep = Endpoint(f"http://127.0.0.1:{port}/v1", "m", api_key="sk-secret-value-123456", max_retries=2, backoff_s=0.01)
    generate(ep, calls(1), lambda o: out.__setitem__(o.request_id, o))
    assert not out["r0"].ok and out["r0"].attempts == 3 and "connection failed" in out["r0"].error
    assert "sk-secret" not in out["r0"].error


def test_refused_key_stops_everything_without_showing_the_key():
    key = "sk-live-abcdefghijklmnopqrstuvwx"
    fake = FakeOpenAI(lambda k, req: Reply(401, json.dumps({"error": f"bad key {key}"}).encode()))
    with serving(fake) as url, pytest.raises(EndpointRefused) as info:
        generate(Endpoint(url, "m", api_key=key, concurrency=1), calls(5), lambda o: None)
    assert key not in str(info.value) and "401" in str(info.value)
    assert len(fake.received) == 1
    assert fake.headers[0]["authorization"] == f"Bearer {key}"  # the key goes in the header, and only there


def test_parse_response_rejects_what_is_not_one_sample():
    assert parse_response(json.dumps(completion("hi")).encode(), chat=True)[:2] == ("hi", "stop")
    assert parse_response(json.dumps(completion("hi", chat=False, finish="length")).encode(), chat=False)[1] == "length"
    for body in (
        b"",
        b"[]",
        b'{"choices": [{"message": {}}]}',
        b'{"choices": [{"message": "hi", "finish_reason": "stop"}]}',
    ):
        with pytest.raises(Malformed):
            parse_response(body, chat=True)
    with pytest.raises(Unusable):  # complete but no trace: asking again would pay for the same answer
        parse_response(json.dumps(completion("x", finish="content_filter")).encode(), chat=True)


def test_a_reasoning_servers_chain_of_thought_is_the_trace():
    body = completion("The answer is 4.")
    body["choices"][0]["message"]["reasoning_content"] = "Let me think. 2+2=4. Wait, check: yes."
    assert parse_response(json.dumps(body).encode(), chat=True)[0] == (
        "Let me think. 2+2=4. Wait, check: yes.\n\nThe answer is 4."
    )
    body["choices"][0]["message"]["content"] = None  # cut while thinking
    body["choices"][0]["finish_reason"] = "length"
    assert parse_response(json.dumps(body).encode(), chat=True)[:2] == (
        "Let me think. 2+2=4. Wait, check: yes.",
        "length",
    )


def test_odd_answers_fail_their_request_only_and_are_never_retried_for_nothing():
    content_filter = json.dumps(completion("x", finish="content_filter")).encode()
    surrogate = b'{"choices": [{"message": {"content": "ok \\ud83d"}, "finish_reason": "stop"}]}'
    bad_gzip = Reply(200, b"not gzip at all", {"Content-Encoding": "gzip"})

    def script(k, req):
        prompt = req["messages"][0]["content"]
        return {"problem 0": Reply(200, content_filter), "problem 1": bad_gzip, "problem 2": Reply(200, surrogate)}.get(
            prompt, Reply()
        )

    fake = FakeOpenAI(script)
    out = run(fake, calls(6), concurrency=2, max_retries=2)
    assert sorted(out) == [f"r{i}" for i in range(6)]  # every request accounted for; none took the run down
    assert not out["r0"].ok and out["r0"].attempts == 1 and "content_filter" in out["r0"].error
    assert not out["r1"].ok and out["r1"].attempts == 3 and "DecodingError" in out["r1"].error
    assert out["r2"].ok and out["r2"].text == "ok ?"  # storable text
    assert all(out[f"r{i}"].ok for i in range(3, 6))
    json.dumps(out["r2"].text).encode("utf-8")


def test_no_part_of_the_key_survives_in_a_reason_or_a_repr():
    key = "sk-" + "A1b2C3d4" * 6
    body = ("x" * 290 + f" invalid key {key}").encode()  # the key straddles the 300-character cut
    fake = FakeOpenAI(lambda k, req: Reply(400, body))
    out = run(fake, calls(1), api_key=key)
    assert "sk-A1b" not in out["r0"].error and "A1b2C3d4" not in out["r0"].error
    assert key not in repr(Endpoint("http://x/v1", "m", api_key=key))


def test_retry_after_reads_seconds_and_dates():
    assert retry_after(httpx.Headers({"Retry-After": "2.5"})) == 2.5
    later = email.utils.format_datetime(email.utils.localtime(), usegmt=False)
    assert 0 <= retry_after(httpx.Headers({"Retry-After": later})) <= 1
    assert retry_after(httpx.Headers({"Retry-After": "soon"})) is None
    assert retry_after(httpx.Headers({"Retry-After": "99999"})) == 600.0
    assert retry_after(httpx.Headers({})) is None


def test_backoff_grows_with_full_jitter_and_a_cap():
    rng = random.Random(0)
    draws = [backoff(a, 1.0, rng) for a in range(12)]
    assert all(0 <= d <= min(60, 2**a) for a, d in enumerate(draws))
    assert max(draws[8:]) > 8  # it does grow
