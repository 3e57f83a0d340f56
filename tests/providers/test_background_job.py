"""End to end through the job API: generative background replacement against a fake remote model."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import httpx
import pyvips

from tests.api.helpers import data_uri, submit, wait_final
from tests.fakes.base import Recorded, Scripted
from tests.fakes.gemini_server import GeminiFake
from tests.fakes.openai_server import OpenAIFake
from tests.providers.conftest import GEMINI_KEY, OPENAI_KEY
from tests.support.data import AUTH

CONFIG = {"backgroundPrompt": "a warm beige studio backdrop", "mode": "generative", "format": "png"}


def refuse_landscape(fake: GeminiFake) -> Callable[[Recorded], Scripted | None]:
    """Refuse (IMAGE_SAFETY) every landscape input, whatever order the job sends them in."""

    def rule(request: Recorded) -> Scripted | None:
        images = request.parsed.get("images") or []
        if images:
            image = pyvips.Image.new_from_buffer(images[-1], "")
            if image.width > image.height:
                return fake.finished("IMAGE_SAFETY")
        return None

    return rule


async def stored_image(client: httpx.AsyncClient, url: str) -> pyvips.Image:
    response = await client.get(url)
    assert response.status_code == 200
    return pyvips.Image.new_from_buffer(response.content, "")


async def replace_one_background(client: httpx.AsyncClient, job_id: str) -> None:
    """A generative job of one photo completes with a result of the 3:4 target size."""
    await submit(
        client, job_id=job_id, type="background_replacement", config=CONFIG, source_image_urls=[data_uri("rocket.jpg")]
    )
    result = await wait_final(client, job_id)
    assert result["status"] == "completed", result["errors"]
    image = await stored_image(client, result["result_image_urls"][0])
    assert (image.width, image.height) == (1500, 2000)


async def test_a_generative_job_stores_target_sized_results_and_per_image_refusals(
    make_client: Callable[..., Any], gemini: GeminiFake
) -> None:
    gemini.rule = refuse_landscape(gemini)
    client = await make_client(ai_api_key=GEMINI_KEY, ai_api_base=gemini.api_base, ai_max_retries=1)
    sources = [data_uri("grace_hopper.jpg"), data_uri("rocket.jpg"), data_uri("chelsea.png", "image/png")]
    response = await submit(
        client, job_id="gen-1", type="background_replacement", config=CONFIG, source_image_urls=sources
    )
    assert response.status_code == 202

    result = await wait_final(client, "gen-1")

    assert result["status"] == "completed"
    assert (result["succeeded"], result["failed"]) == (1, 2)
    urls = result["result_image_urls"]
    assert urls[1] is None and urls[2] is None
    assert {error["index"] for error in result["errors"]} == {1, 2}
    for error in result["errors"]:
        assert error["error"].startswith("the model refused: ") and "IMAGE_SAFETY" in error["error"]
    image = await stored_image(client, urls[0])
    assert (image.width, image.height) == (1500, 2000)
    assert image.get("vips-loader").startswith("png")

    calls = gemini.model_calls()
    assert len(calls) == 3  # refusals are not retried
    for call in calls:
        assert call.headers["x-goog-api-key"] == GEMINI_KEY and GEMINI_KEY not in call.path
        assert call.json["generationConfig"]["imageConfig"] == {"aspectRatio": "3:4"}
        assert call.json["generationConfig"]["temperature"] == 0.5  # quality "standard"


async def test_a_generative_job_survives_a_rate_limit(make_client: Callable[..., Any], gemini: GeminiFake) -> None:
    gemini.push(gemini.error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", retry_delay="0.2s"))
    client = await make_client(ai_api_key=GEMINI_KEY, ai_api_base=gemini.api_base)
    await replace_one_background(client, "gen-2")
    assert len(gemini.model_calls()) == 2


async def test_a_generative_job_with_the_openai_provider(make_client: Callable[..., Any], openai: OpenAIFake) -> None:
    client = await make_client(ai_provider="openai", openai_api_key=OPENAI_KEY, openai_api_base=openai.api_base)
    await replace_one_background(client, "gen-3")
    (call,) = openai.model_calls()
    assert call.parsed["fields"]["input_fidelity"] == "high"


async def test_health_reports_the_remote_model(make_client: Callable[..., Any], gemini: GeminiFake) -> None:
    client = await make_client(ai_api_key="AIza-not-the-right-key-000", ai_api_base=gemini.api_base)
    body = (await client.get("/api/v1/health", headers=AUTH)).json()
    (playground,) = [plugin for plugin in body["plugins"] if plugin["name"] == "ai-playground"]
    assert playground["healthy"] is False


async def test_ai_default_temperature_sets_the_presets_sent_to_the_model(
    make_client: Callable[..., Any], gemini: GeminiFake
) -> None:
    client = await make_client(ai_api_key=GEMINI_KEY, ai_api_base=gemini.api_base, ai_default_temperature=0.9)
    for quality in ("low", "standard", "high"):
        config = {**CONFIG, "quality": quality}
        source = [data_uri("rocket.jpg")]
        await submit(
            client, job_id=f"t-{quality}", type="background_replacement", config=config, source_image_urls=source
        )
        assert (await wait_final(client, f"t-{quality}"))["status"] == "completed"
    sent = [call.json["generationConfig"]["temperature"] for call in gemini.model_calls()]
    # "standard" is the configured default, "low" 0.2 above it, "high" 0.2 below.
    assert sent == [1.1, 0.9, 0.7]


async def test_a_model_answer_over_the_cap_fails_its_image_only(
    make_client: Callable[..., Any], gemini: GeminiFake
) -> None:
    cap = 4 * 1024 * 1024
    huge = gemini.oversized(96 * 1024 * 1024, declare_length=False)
    # The first call gets the oversized answer, the second a normal one: one image fails, one succeeds.
    gemini.push(huge)
    client = await make_client(
        ai_api_key=GEMINI_KEY, ai_api_base=gemini.api_base, ai_max_response_bytes=cap, ai_max_concurrency=1
    )
    tracemalloc.start()
    try:
        await submit(
            client,
            job_id="gen-huge",
            type="background_replacement",
            config=CONFIG,
            source_image_urls=[data_uri("rocket.jpg"), data_uri("grace_hopper.jpg")],
        )
        result = await wait_final(client, "gen-huge")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (result["succeeded"], result["failed"]) == (1, 1), result["errors"]
    (error,) = result["errors"]
    assert "answer is larger than the 4194304 byte limit (AI_MAX_RESPONSE_BYTES)" in error["error"]
    # The service's Python heap stayed near the cap, far under one copy of the 96 MiB answer.
    assert peak < 4 * cap + 16 * 1024 * 1024, f"peak {peak} bytes"
    assert huge.sent < 96 * 1024 * 1024
