"""The Gemini provider against a fake Gemini API on loopback: requests sent, answers and faults."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import tracemalloc
from typing import Any

import pytest
import pyvips

from capability_service.providers.base import EditRequest, ProviderError, ProviderRefused
from capability_service.providers.gemini import GeminiProvider
from tests.fakes.base import Drop, Stall
from tests.fakes.gemini_server import GeminiFake
from tests.providers.conftest import GEMINI_KEY, SleepLog
from tests.providers.edits import FAST, edit_once, edit_request, provider_options
from tests.support.data import read_image


def provider(fake: GeminiFake, sleep: SleepLog | None = None, **overrides: Any) -> GeminiProvider:
    return GeminiProvider(**provider_options(fake.api_base, GEMINI_KEY, sleep, **{"max_concurrency": 4, **overrides}))


def noise_png(width: int, height: int) -> bytes:
    """A PNG that does not compress: a real image far larger in bytes than in pixels."""
    bands = [pyvips.Image.gaussnoise(width, height, sigma=60, mean=128) for _ in range(3)]
    image = bands[0].bandjoin(bands[1:]).cast("uchar").copy(interpretation="srgb")
    return bytes(image.pngsave_buffer(compression=1))


def request(**overrides: Any) -> EditRequest:
    return edit_request("rocket.jpg", "Replace the background with a light grey studio backdrop", **overrides)


async def edit(fake: GeminiFake, req: EditRequest | None = None, **overrides: Any) -> Any:
    return await edit_once(provider(fake, **overrides), req or request())


async def test_sends_the_documented_request_and_returns_the_models_image(gemini: GeminiFake) -> None:
    source = read_image("rocket.jpg")
    result = await edit(gemini, request(image=source, negative_prompt="text, watermark", seed=1234))

    (call,) = gemini.model_calls()
    assert call.path == "/v1beta/models/gemini-2.5-flash-image:generateContent"
    assert "key" not in call.path and GEMINI_KEY not in call.path
    assert call.headers["x-goog-api-key"] == GEMINI_KEY
    assert "authorization" not in call.headers
    assert call.headers["content-type"] == "application/json"
    body = call.json
    parts = body["contents"][0]["parts"]
    assert parts[0]["inlineData"]["mimeType"] == "image/jpeg"  # sniffed, not the caller's guess
    assert base64.b64decode(parts[0]["inlineData"]["data"]) == source  # small enough: sent unchanged
    assert parts[1]["text"].startswith("Replace the background with a light grey studio backdrop")
    assert parts[1]["text"].endswith("Avoid: text, watermark")
    assert body["generationConfig"] == {
        "temperature": 0.5,
        "responseModalities": ["IMAGE"],
        "imageConfig": {"aspectRatio": "3:4"},
        "seed": 1234,
    }
    assert "inline_data" not in call.body.decode() and "mime_type" not in call.body.decode()

    image = pyvips.Image.new_from_buffer(result.image, "")
    assert (image.width, image.height) == (864, 1184)
    assert result.mime_type == "image/png"
    assert result.details["model"] == "gemini-2.5-flash-image"
    assert result.details["finish_reason"] == "STOP"
    assert result.details["attempts"] == 1 and result.details["retry_waits_s"] == []
    assert result.details["input_resized"] is False


async def test_bearer_scheme_for_proxies(gemini: GeminiFake) -> None:
    await edit(gemini, auth_scheme="bearer")
    (call,) = gemini.model_calls()
    assert call.headers["authorization"] == f"Bearer {GEMINI_KEY}"
    assert "x-goog-api-key" not in call.headers


@pytest.mark.parametrize(
    ("target", "sent"), [("1500:2000", "3:4"), ("10:13", "3:4"), ("1:1", "1:1"), ("1920x1080", "16:9")]
)
async def test_aspect_ratio_is_the_nearest_the_model_supports(gemini: GeminiFake, target: str, sent: str) -> None:
    result = await edit(gemini, request(aspect_ratio=target))
    assert gemini.model_calls()[0].json["generationConfig"]["imageConfig"] == {"aspectRatio": sent}
    assert result.details["aspect_ratio"] == sent


async def test_bare_model_name_gets_the_models_prefix(gemini: GeminiFake) -> None:
    await edit(gemini, model="gemini-2.5-flash-image")
    assert gemini.model_calls()[0].path == "/v1beta/models/gemini-2.5-flash-image:generateContent"


async def test_429_waits_the_retry_delay_the_server_asks_for(gemini: GeminiFake, sleep_log: SleepLog) -> None:
    gemini.push(gemini.error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", retry_delay="0.4s"))
    result = await edit(gemini, sleep=sleep_log)

    first, second = gemini.model_calls()
    assert len(sleep_log.waits) == 1
    assert 0.4 <= sleep_log.waits[0] <= 0.4 + 0.1
    assert second.received - first.received >= 0.4
    assert result.details["attempts"] == 2
    assert result.details["retry_waits_s"] == [round(sleep_log.waits[0], 3)]


async def test_retry_after_header_is_honoured(gemini: GeminiFake, sleep_log: SleepLog) -> None:
    gemini.push(gemini.error(503, "UNAVAILABLE", "The model is overloaded", headers={"Retry-After": "1"}))
    result = await edit(gemini, sleep=sleep_log)
    assert 1.0 <= sleep_log.waits[0] <= 1.2
    assert result.details["attempts"] == 2


async def test_500_then_success_backs_off_with_jitter(gemini: GeminiFake, sleep_log: SleepLog) -> None:
    gemini.push(gemini.error(500, "INTERNAL", "An internal error has occurred"), gemini.error(504, "DEADLINE_EXCEEDED"))
    result = await edit(gemini, sleep=sleep_log)
    assert len(gemini.model_calls()) == 3
    # Exponential: the n-th pause lies in [base * 2**n / 2, base * 2**n].
    assert 0.025 <= sleep_log.waits[0] <= 0.05
    assert 0.05 <= sleep_log.waits[1] <= 0.1
    assert result.details["attempts"] == 3
    assert pyvips.Image.new_from_buffer(result.image, "").width == 864


async def test_gives_up_after_max_retries(gemini: GeminiFake, sleep_log: SleepLog) -> None:
    gemini.push(*[gemini.error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")] * 10)
    with pytest.raises(ProviderError) as caught:
        await edit(gemini, sleep=sleep_log)
    assert len(gemini.model_calls()) == 4  # one call and three retries
    assert caught.value.attempts == 4 and caught.value.status == 503
    assert "503 UNAVAILABLE" in str(caught.value) and "after 4 attempts" in str(caught.value)
    assert len(sleep_log.waits) == 3 and sleep_log.waits[2] <= 0.2  # capped by max_delay


async def test_a_retry_delay_beyond_the_cap_fails_at_once(gemini: GeminiFake, sleep_log: SleepLog) -> None:
    gemini.push(gemini.error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for the day", retry_delay="58s"))
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        await edit(gemini, sleep=sleep_log)
    assert time.monotonic() - started < 5.0  # not the 58 s asked for
    assert len(gemini.model_calls()) == 1 and sleep_log.waits == []
    assert "asks to wait 58 s" in str(caught.value)


@pytest.mark.parametrize(
    ("answer", "needle"),
    [
        (GeminiFake.error(400, "INVALID_ARGUMENT", "Request contains an invalid argument."), "400 INVALID_ARGUMENT"),
        (GeminiFake.error(403, "PERMISSION_DENIED", "The caller does not have permission"), "AI_API_KEY"),
        (GeminiFake.error(404, "NOT_FOUND", "Requested entity was not found."), "AI_MODEL"),
    ],
)
async def test_client_errors_are_not_retried(gemini: GeminiFake, sleep_log: SleepLog, answer: Any, needle: str) -> None:
    gemini.push(answer)
    with pytest.raises(ProviderError) as caught:
        await edit(gemini, sleep=sleep_log)
    assert len(gemini.model_calls()) == 1 and sleep_log.waits == []
    assert needle in str(caught.value)
    assert not isinstance(caught.value, ProviderRefused)


async def test_a_wrong_key_is_named_but_never_shown(gemini: GeminiFake) -> None:
    with pytest.raises(ProviderError) as caught:
        await edit(gemini, api_key="AIza-wrong-key-9876543210")
    assert "refused the key (AI_API_KEY)" in str(caught.value)
    assert "API key not valid" in str(caught.value)
    assert "AIza-wrong-key-9876543210" not in str(caught.value)
    assert len(gemini.requests) == 1


async def test_an_unknown_model_is_404_and_not_retried(gemini: GeminiFake) -> None:
    with pytest.raises(ProviderError) as caught:
        await edit(gemini, model="models/gemini-0-nope")
    assert "does not know models/gemini-0-nope (AI_MODEL)" in str(caught.value)
    assert caught.value.status == 404 and len(gemini.requests) == 1


@pytest.mark.parametrize("reason", ["IMAGE_SAFETY", "NO_IMAGE", "PROHIBITED_CONTENT", "SAFETY", "RECITATION"])
async def test_finish_reasons_that_refuse_are_clear_refusals(gemini: GeminiFake, reason: str) -> None:
    gemini.push(gemini.finished(reason))
    with pytest.raises(ProviderRefused) as caught:
        await edit(gemini)
    assert str(caught.value).startswith("the model refused: ")
    assert f"({reason})" in str(caught.value)
    assert "candidates" not in str(caught.value)
    assert len(gemini.model_calls()) == 1


async def test_a_refusal_quotes_what_the_model_said(gemini: GeminiFake) -> None:
    gemini.push(gemini.finished("IMAGE_SAFETY", "I can't edit this image."))
    with pytest.raises(ProviderRefused, match=r"IMAGE_SAFETY\); it said: \"I can't edit this image.\""):
        await edit(gemini)


async def test_a_blocked_prompt_is_a_refusal(gemini: GeminiFake) -> None:
    gemini.push(gemini.prompt_blocked("PROHIBITED_CONTENT"))
    with pytest.raises(ProviderRefused) as caught:
        await edit(gemini)
    assert str(caught.value) == ("the model refused: the prompt was judged prohibited content (PROHIBITED_CONTENT)")


async def test_a_text_only_answer_is_quoted_briefly(gemini: GeminiFake) -> None:
    chatter = "I would love to help with that product photo! " * 20
    gemini.push(gemini.text_only(chatter))
    with pytest.raises(ProviderRefused) as caught:
        await edit(gemini)
    message = str(caught.value)
    assert message.startswith('the model answered with text instead of an image: "I would love to help')
    assert len(message) < 260 and "…" in message


async def test_malformed_json_is_retried(gemini: GeminiFake, sleep_log: SleepLog) -> None:
    gemini.push(gemini.raw(200, b'{"candidates": [{"content": {"parts": [{"inlineDa'))
    result = await edit(gemini, sleep=sleep_log)
    assert result.details["attempts"] == 2 and len(sleep_log.waits) == 1


async def test_malformed_json_every_time_is_a_clear_error(gemini: GeminiFake, sleep_log: SleepLog) -> None:
    gemini.push(*[gemini.raw(200, b"<html>Bad Gateway</html>", "text/html")] * 4)
    with pytest.raises(ProviderError, match=r"answer is not valid JSON: '<html>Bad Gateway</html>'.*4 attempts"):
        await edit(gemini, sleep=sleep_log)


async def test_an_error_without_json_still_reads_well(gemini: GeminiFake, sleep_log: SleepLog) -> None:
    gemini.push(gemini.raw(502, b"upstream connect error", "text/plain"))
    result = await edit(gemini, sleep=sleep_log)
    assert result.details["attempts"] == 2


async def test_a_stall_past_the_timeout_fails_in_time(gemini: GeminiFake, sleep_log: SleepLog) -> None:
    gemini.push(Stall(5.0))
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        await edit(gemini, sleep=sleep_log, timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 3.0  # the stall lasts 5 s
    assert str(caught.value) == "the Gemini model did not answer within 0.5 s"
    assert len(gemini.model_calls()) == 1 and sleep_log.waits == []


async def test_a_dropped_connection_is_retried(gemini: GeminiFake, sleep_log: SleepLog) -> None:
    gemini.push(Drop())
    result = await edit(gemini, sleep=sleep_log)
    assert result.details["attempts"] == 2


async def test_nobody_listening_is_a_clear_error(sleep_log: SleepLog) -> None:
    fake = GeminiFake(api_key=GEMINI_KEY)
    with fake.running():
        base = fake.api_base
    model = GeminiProvider(api_base=base, api_key=GEMINI_KEY, policy=FAST, sleep=sleep_log, timeout=2.0)
    try:
        with pytest.raises(ProviderError, match=r"could not reach the Gemini model: ConnectError \(after 4 attempts\)"):
            await model.edit(request())
    finally:
        await model.close()


async def test_thought_images_are_skipped(gemini: GeminiFake) -> None:
    gemini.rule = gemini.with_thought_image
    result = await edit(gemini)
    image = pyvips.Image.new_from_buffer(result.image, "")
    assert (image.width, image.height) == (864, 1184)  # not the 64x64 draft


async def test_corrupt_image_data_is_a_clear_error(gemini: GeminiFake) -> None:
    payload = {
        "candidates": [
            {
                "content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "bm90IGFuIGltYWdl"}}]},
                "finishReason": "STOP",
            }
        ]
    }
    gemini.push(gemini.raw(200, json.dumps(payload).encode()))
    with pytest.raises(ProviderError, match="not a readable image"):
        await edit(gemini)


async def test_an_input_over_the_inline_limit_is_shrunk(gemini: GeminiFake) -> None:
    big = noise_png(2400, 2400)
    assert len(big) > 7 * 1024 * 1024
    result = await edit(gemini, request(image=big))
    (call,) = gemini.model_calls()
    sent = base64.b64decode(call.json["contents"][0]["parts"][0]["inlineData"]["data"])
    assert len(sent) <= 7_000_000
    assert call.json["contents"][0]["parts"][0]["inlineData"]["mimeType"] == "image/jpeg"
    assert result.details["input_resized"] is True
    assert result.details["input_sent"].endswith("image/jpeg")


async def test_an_unreadable_input_is_refused_before_any_call(gemini: GeminiFake) -> None:
    with pytest.raises(ProviderError, match="cannot be sent to the model"):
        await edit(gemini, request(image=b"GIF89a not really"))
    assert gemini.requests == []


async def test_concurrency_is_limited_per_provider() -> None:
    with GeminiFake(api_key=GEMINI_KEY, latency=0.3).running() as fake:
        model = provider(fake, max_concurrency=2)
        try:
            started = time.monotonic()
            results = await asyncio.gather(*(model.edit(request()) for _ in range(6)))
            elapsed = time.monotonic() - started
        finally:
            await model.close()
    assert len(results) == 6
    assert fake.max_in_flight == 2
    # Never more than two at once (so three waves of 0.3 s), and two at once did happen.
    assert elapsed >= 0.9


async def test_the_key_never_reaches_logs_urls_or_errors(
    gemini: GeminiFake, sleep_log: SleepLog, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gemini.push(gemini.error(429, "RESOURCE_EXHAUSTED", f"echoing {GEMINI_KEY}", retry_delay="0.1s"))
    gemini.push(*[gemini.error(500, "INTERNAL", f"internal error near {GEMINI_KEY}")] * 4)
    model = provider(gemini, sleep=sleep_log)
    with pytest.raises(ProviderError) as caught:
        await model.edit(request())
    await model.close()
    assert GEMINI_KEY not in str(caught.value) and "***" in str(caught.value)
    assert GEMINI_KEY not in caplog.text
    assert "retrying" in caplog.text
    assert all(GEMINI_KEY not in call.path for call in gemini.requests)
    assert GEMINI_KEY not in repr(model)


async def test_health_checks_the_key_against_the_model(gemini: GeminiFake) -> None:
    good, bad = provider(gemini), provider(gemini, api_key="AIza-wrong-key-9876543210")
    try:
        assert (await good.health())["healthy"] is True
        report = await bad.health()
        assert report["healthy"] is False and "AI_API_KEY" in report["detail"]
        await good.health()  # cached: no second request
    finally:
        await good.close()
        await bad.close()
    assert [call.method for call in gemini.requests] == ["GET", "GET"]


async def test_health_after_a_recent_answer_needs_no_probe(gemini: GeminiFake) -> None:
    model = provider(gemini)
    try:
        await model.edit(request())
        report = await model.health()
    finally:
        await model.close()
    assert report["healthy"] is True and report["detail"].startswith("answered")
    assert [call.method for call in gemini.requests] == ["POST"]


async def test_health_through_a_proxy_without_model_metadata(gemini: GeminiFake) -> None:
    model = provider(gemini, auth_scheme="bearer", api_base=gemini.url + "/proxy/v1beta")
    try:
        report = await model.health()
    finally:
        await model.close()
    assert report["healthy"] is True and "not checked" in report["detail"]


# An answer far above the cap: before the cap it was read whole (and took about three times its size).
HUGE_ANSWER = 96 * 1024 * 1024
SMALL_CAP = 4 * 1024 * 1024


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
async def test_an_answer_over_the_cap_is_a_clear_error_and_is_not_read_whole(
    gemini: GeminiFake, declare_length: bool
) -> None:
    answer = gemini.oversized(HUGE_ANSWER, declare_length=declare_length)
    gemini.push(answer)
    tracemalloc.start()
    try:
        with pytest.raises(ProviderError) as caught:
            await edit(gemini, max_response_bytes=SMALL_CAP)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    message = str(caught.value)
    assert "AI_MAX_RESPONSE_BYTES" in message and str(SMALL_CAP) in message
    assert not caught.value.retryable
    assert len(gemini.model_calls()) == 1  # the same request would bring the same answer: no retry
    # Memory follows the cap, not the answer: the Python heap (the fake server's included) peaked at a
    # fraction of one copy of the answer, where reading it whole took about three.
    assert peak < 4 * SMALL_CAP, f"peak {peak} bytes for a {HUGE_ANSWER} byte answer over a {SMALL_CAP} byte cap"
    assert answer.sent < HUGE_ANSWER


async def test_an_answer_under_the_cap_is_read(gemini: GeminiFake) -> None:
    # A valid answer (an image and a long text part) just under the cap is used as before.
    gemini.push(gemini.oversized(SMALL_CAP - 1024, declare_length=False))
    result = await edit(gemini, max_response_bytes=SMALL_CAP)
    assert result.image.startswith(b"\x89PNG")
