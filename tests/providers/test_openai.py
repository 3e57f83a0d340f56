"""The OpenAI provider against a fake OpenAI Images API on loopback."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
import pyvips

from capability_service.providers.base import EditRequest, ProviderError, ProviderRefused
from capability_service.providers.openai import OpenAIProvider
from tests.fakes.base import Reply, Stall
from tests.fakes.openai_server import OpenAIFake
from tests.providers.conftest import OPENAI_KEY, SleepLog
from tests.providers.edits import edit_once, edit_request, provider_options
from tests.support.data import read_image


def provider(fake: OpenAIFake, sleep: SleepLog | None = None, **overrides: Any) -> OpenAIProvider:
    return OpenAIProvider(**provider_options(fake.api_base, OPENAI_KEY, sleep, **overrides))


def request(**overrides: Any) -> EditRequest:
    return edit_request("chelsea.png", "Put the cat on a plain white studio background", **overrides)


async def edit(fake: OpenAIFake, req: EditRequest | None = None, **overrides: Any) -> Any:
    return await edit_once(provider(fake, **overrides), req or request())


async def test_sends_a_multipart_edit_and_returns_the_image(openai: OpenAIFake) -> None:
    source = read_image("chelsea.png")
    result = await edit(openai, request(image=source, negative_prompt="shadows"))

    (call,) = openai.model_calls()
    assert call.path == "/v1/images/edits"
    assert call.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert call.headers["content-type"].startswith("multipart/form-data; boundary=")
    fields = call.parsed["fields"]
    assert fields == {
        "model": "gpt-image-1",
        "prompt": "Put the cat on a plain white studio background\n\nAvoid: shadows",
        "input_fidelity": "high",
        "size": "1024x1536",
        "n": "1",
    }
    assert call.parsed["image"] == source
    assert call.parsed["image_type"] == "image/png" and call.parsed["image_name"] == "image.png"

    image = pyvips.Image.new_from_buffer(result.image, "")
    assert (image.width, image.height) == (1024, 1536)
    assert result.mime_type == "image/png"
    assert result.details["size"] == "1024x1536" and result.details["attempts"] == 1
    assert result.details["total_tokens"] == 9290


@pytest.mark.parametrize(
    ("target", "size"),
    [("3:4", "1024x1536"), ("1:1", "1024x1024"), ("16:9", "1536x1024"), ("5:4", "1536x1024"), ("9:8", "1024x1024")],
)
async def test_size_is_the_nearest_shape(openai: OpenAIFake, target: str, size: str) -> None:
    await edit(openai, request(aspect_ratio=target))
    assert openai.model_calls()[0].parsed["fields"]["size"] == size


async def test_a_gif_is_re_encoded_to_a_type_the_api_accepts(openai: OpenAIFake) -> None:
    gif = bytes(pyvips.Image.new_from_buffer(read_image("rocket.jpg"), "").gifsave_buffer())
    await edit(openai, request(image=gif))
    (call,) = openai.model_calls()
    assert call.parsed["image_type"] == "image/jpeg" and call.parsed["image_name"] == "image.jpg"


async def test_moderation_block_is_a_refusal_and_not_retried(openai: OpenAIFake, sleep_log: SleepLog) -> None:
    openai.push(OpenAIFake.moderation_blocked())
    with pytest.raises(ProviderRefused) as caught:
        await edit(openai, sleep=sleep_log)
    assert str(caught.value).startswith("the model refused: Your request was rejected by the safety system.")
    assert "(moderation_blocked)" in str(caught.value)
    assert len(openai.model_calls()) == 1 and sleep_log.waits == []


async def test_rate_limit_honours_retry_after_ms(openai: OpenAIFake, sleep_log: SleepLog) -> None:
    openai.push(OpenAIFake.rate_limited(retry_after="20", retry_after_ms="300"))
    result = await edit(openai, sleep=sleep_log)
    assert 0.3 <= sleep_log.waits[0] <= 0.4
    assert result.details["attempts"] == 2


async def test_rate_limit_honours_retry_after_seconds(openai: OpenAIFake, sleep_log: SleepLog) -> None:
    openai.push(OpenAIFake.rate_limited(retry_after="1"))
    await edit(openai, sleep=sleep_log)
    assert 1.0 <= sleep_log.waits[0] <= 1.2


async def test_server_errors_then_success(openai: OpenAIFake, sleep_log: SleepLog) -> None:
    openai.push(
        OpenAIFake.error(500, "The server had an error while processing your request.", "server_error", None),
        OpenAIFake.error(503, "Service unavailable", "server_error", None),
    )
    result = await edit(openai, sleep=sleep_log)
    assert result.details["attempts"] == 3 and len(sleep_log.waits) == 2


async def test_no_quota_is_not_retried(openai: OpenAIFake, sleep_log: SleepLog) -> None:
    openai.push(OpenAIFake.no_quota())
    with pytest.raises(ProviderError, match="no quota left"):
        await edit(openai, sleep=sleep_log)
    assert len(openai.model_calls()) == 1


@pytest.mark.parametrize("status", [400, 403, 404])
async def test_client_errors_are_not_retried(openai: OpenAIFake, sleep_log: SleepLog, status: int) -> None:
    openai.push(OpenAIFake.error(status, "Invalid request.", "invalid_request_error", "invalid_value"))
    with pytest.raises(ProviderError) as caught:
        await edit(openai, sleep=sleep_log)
    assert caught.value.status == status and len(openai.model_calls()) == 1 and sleep_log.waits == []


async def test_a_wrong_key_is_named_but_never_shown(openai: OpenAIFake) -> None:
    wrong = "sk-wrong-key-abcdefghijklmnop"
    with pytest.raises(ProviderError) as caught:
        await edit(openai, api_key=wrong)
    message = str(caught.value)
    assert "refused the key (OPENAI_API_KEY)" in message
    assert wrong not in message and wrong[-4:] not in message
    assert len(openai.requests) == 1


async def test_an_unknown_model_is_clear(openai: OpenAIFake) -> None:
    with pytest.raises(ProviderError, match=r"does not know gpt-image-0 \(OPENAI_MODEL\)"):
        await edit(openai, model="gpt-image-0")


async def test_a_stall_past_the_timeout_fails_in_time(openai: OpenAIFake) -> None:
    openai.push(Stall(5.0))
    started = time.monotonic()
    with pytest.raises(ProviderError, match=r"^the OpenAI model did not answer within 0.5 s$"):
        await edit(openai, timeout=0.5)
    assert time.monotonic() - started < 3.0  # the stall lasts 5 s


async def test_an_answer_without_image_is_clear(openai: OpenAIFake) -> None:
    openai.push(Reply(status=200, body=b'{"created": 1, "data": []}'))
    with pytest.raises(ProviderError, match=r"no image \(no data\[0\].b64_json\)"):
        await edit(openai)


async def test_malformed_json_is_retried(openai: OpenAIFake, sleep_log: SleepLog) -> None:
    openai.push(Reply(status=200, body=b'{"data": [{"b64_json": "iVBOR'))
    result = await edit(openai, sleep=sleep_log)
    assert result.details["attempts"] == 2


async def test_concurrency_is_limited_per_provider() -> None:
    with OpenAIFake(api_key=OPENAI_KEY, latency=0.3).running() as fake:
        model = provider(fake, max_concurrency=3)
        try:
            started = time.monotonic()
            await asyncio.gather(*(model.edit(request()) for _ in range(6)))
            elapsed = time.monotonic() - started
        finally:
            await model.close()
    assert fake.max_in_flight == 3
    assert elapsed >= 0.6  # two waves of 0.3 s


async def test_the_key_never_reaches_logs_or_errors(
    openai: OpenAIFake, sleep_log: SleepLog, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    openai.push(*[OpenAIFake.error(500, f"error near {OPENAI_KEY}", "server_error", None)] * 4)
    model = provider(openai, sleep=sleep_log)
    with pytest.raises(ProviderError) as caught:
        await model.edit(request())
    await model.close()
    assert OPENAI_KEY not in str(caught.value) and OPENAI_KEY not in caplog.text
    assert OPENAI_KEY not in repr(model)


async def test_health(openai: OpenAIFake) -> None:
    good, unknown = provider(openai), provider(openai, model="gpt-image-0")
    try:
        assert (await good.health())["healthy"] is True
        report = await unknown.health()
        assert report["healthy"] is False and "OPENAI_MODEL" in report["detail"]
    finally:
        await good.close()
        await unknown.close()
