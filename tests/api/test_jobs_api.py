"""The job API through the ASGI app: every route, every error, the SSE stream."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import pyvips

from tests.api.helpers import data_uri, parse_sse, submit, wait_final, wait_status
from tests.support.data import AUTH, read_image
from tests.support.servers import http_server, static_bytes

OPTIMIZE = {"quality": "standard", "format": "webp", "maxSize": 320}


async def test_health_needs_no_key_and_shows_details_only_with_one(client: httpx.AsyncClient) -> None:
    public = (await client.get("/api/v1/health")).json()
    assert public["status"] == "ok"
    names = {plugin["name"]: plugin for plugin in public["plugins"]}
    assert set(names) >= {"ai-playground", "image-compress"}
    for plugin in names.values():
        assert set(plugin) == {"name", "display_name", "category", "enabled", "healthy"}
        assert plugin["enabled"] and plugin["healthy"]
    # Where Redis, the bucket or the results live is for callers with a key only.
    assert set(public) == {"status", "version", "plugins"}
    for wrong in ({}, {"X-API-Key": "wrong-key-123456"}):
        assert (await client.get("/api/v1/health", headers=wrong)).json() == public
    detailed = (await client.get("/api/v1/health", headers=AUTH)).json()
    assert detailed["storage"]["healthy"] is True
    assert detailed["jobs"]["healthy"] is True and detailed["jobs"]["backend"] in {"memory", "redis"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/ai/job"),
        ("GET", "/api/v1/ai/job/x/status"),
        ("GET", "/api/v1/ai/job/x"),
        ("POST", "/api/v1/ai/job/x/cancel"),
        ("GET", "/api/v1/ai/job/x/stream"),
        ("POST", "/api/v1/image/compress"),
    ],
)
@pytest.mark.parametrize("key", [None, "wrong-key-123456"])
async def test_every_endpoint_but_health_needs_a_valid_key(
    client: httpx.AsyncClient, method: str, path: str, key: str | None
) -> None:
    headers = {"X-API-Key": key} if key else {}
    response = await client.request(method, path, headers=headers, json={})
    assert response.status_code == 401
    assert "key" in response.json()["detail"].lower()
    if key:
        assert key not in response.text


async def test_several_keys_are_accepted(make_client: Callable[..., Any]) -> None:
    client = await make_client(api_keys=["first-key-abcdef", "second-key-abcdef"])
    for key in ("first-key-abcdef", "second-key-abcdef"):
        response = await client.get("/api/v1/ai/job/none/status", headers={"X-API-Key": key})
        assert response.status_code == 404


async def test_submit_answers_202_at_once_and_the_job_completes(client: httpx.AsyncClient) -> None:
    sources = [data_uri("rocket.jpg"), data_uri("chelsea.png", "image/png")]
    response = await submit(
        client, job_id="job-1", user_id="u-42", type="batch_optimization", config=OPTIMIZE, source_image_urls=sources
    )
    assert response.status_code == 202
    body = response.json()
    assert body["success"] is True
    assert body["data"]["job_id"] == "job-1"
    assert body["data"]["status"] == "pending"
    assert body["data"]["total"] == 2
    assert isinstance(body["execution_time_ms"], float)

    result = await wait_final(client, "job-1")
    assert result["status"] == "completed"
    assert result["progress"] == 100
    assert result["processed"] == result["total"] == 2
    assert result["processing_time_ms"] >= 0
    assert len(result["result_image_urls"]) == 2
    for url, meta in zip(result["result_image_urls"], result["metadata"]["images"], strict=True):
        assert url.startswith("http://testserver/files/ai-playground/default/u-42/job-1/")
        fetched = await client.get(url)
        assert fetched.status_code == 200
        assert fetched.headers["content-type"] == "image/webp"
        image = pyvips.Image.new_from_buffer(fetched.content, "")
        assert max(image.width, image.height) == 320
        assert meta["width"] == image.width and meta["bytes"] == len(fetched.content)


async def test_a_broken_image_fails_alone(client: httpx.AsyncClient) -> None:
    sources = [data_uri("rocket.jpg"), "data:image/png;base64,bm90IGFuIGltYWdl", data_uri("grace_hopper.jpg")]
    await submit(client, job_id="mixed", type="batch_optimization", config=OPTIMIZE, source_image_urls=sources)
    result = await wait_final(client, "mixed")
    assert result["status"] == "completed"
    assert result["result_image_urls"][0] is not None
    assert result["result_image_urls"][1] is None
    assert result["result_image_urls"][2] is not None
    assert "1 of 3 images failed" in result["message"]
    [error] = result["errors"]
    assert error["index"] == 1
    assert "not a supported image" in error["error"]


async def test_a_job_with_no_good_image_fails(client: httpx.AsyncClient) -> None:
    await submit(
        client,
        job_id="all-bad",
        type="image_enhancement",
        config={},
        source_image_urls=["data:image/png;base64,AAAA", "data:image/png;base64,!!"],
    )
    result = await wait_final(client, "all-bad")
    assert result["status"] == "failed"
    assert result["result_image_urls"] == [None, None]
    assert len(result["errors"]) == 2


async def test_enhancement_and_background_replacement_produce_images(client: httpx.AsyncClient) -> None:
    await submit(client, job_id="enh", type="image_enhancement", config={}, source_image_urls=[data_uri("rocket.jpg")])
    await submit(
        client,
        job_id="bg",
        type="background_replacement",
        config={"backgroundPrompt": "pure white studio"},
        source_image_urls=[data_uri("Minduka_Present_Blue_Pack.png", "image/png")],
    )
    enhanced = await wait_final(client, "enh")
    replaced = await wait_final(client, "bg")
    assert enhanced["status"] == "completed"
    png = await client.get(enhanced["result_image_urls"][0])
    assert png.headers["content-type"] == "image/png"
    assert replaced["status"] == "completed", replaced["errors"]
    image = pyvips.Image.new_from_buffer((await client.get(replaced["result_image_urls"][0])).content, "")
    assert (image.width, image.height) == (1500, 2000)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"type": "paint_it_blue", "source_image_urls": ["data:,x"]}, "type"),
        ({"type": "batch_optimization", "source_image_urls": []}, "source_image_urls"),
        ({"type": "batch_optimization"}, "source_image_urls"),
        ({"type": "batch_optimization", "source_image_urls": ["u"] * 6}, "source_image_urls"),
        ({"type": "batch_optimization", "config": {"maxSize": 0}, "source_image_urls": ["u"]}, "config.maxSize"),
        ({"type": "batch_optimization", "config": {"quality": "ultra"}, "source_image_urls": ["u"]}, "config.quality"),
        ({"type": "batch_optimization", "config": {"format": "bmp"}, "source_image_urls": ["u"]}, "config.format"),
        ({"type": "image_enhancement", "config": {"enhancementLevel": 11}, "source_image_urls": ["u"]}, "config"),
        ({"type": "background_replacement", "config": {}, "source_image_urls": ["u"]}, "config.backgroundPrompt"),
        ({"type": "background_replacement", "config": {"backgroundPrompt": ""}, "source_image_urls": ["u"]}, "config"),
        ({"job_id": "../../etc", "type": "batch_optimization", "source_image_urls": ["u"]}, "job_id"),
        ({"type": "batch_optimization", "config": "big", "source_image_urls": ["u"]}, "config"),
    ],
)
async def test_invalid_submissions_are_400_naming_the_field(
    make_client: Callable[..., Any], payload: dict[str, Any], field: str
) -> None:
    client = await make_client(max_images_per_job=5)
    response = await client.post("/api/v1/ai/job", json=payload, headers=AUTH)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and field in detail


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/ai/job", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 400


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_a_job_sent_as_another_content_type_is_400_naming_json(
    client: httpx.AsyncClient, content_type: str
) -> None:
    body = b'{"type": "batch_optimization", "source_image_urls": ["https://example.com/a.jpg"]}'
    response = await client.post("/api/v1/ai/job", content=body, headers={**AUTH, "Content-Type": content_type})
    assert response.status_code == 400, response.text
    assert "Content-Type: application/json" in response.json()["detail"]
    assert content_type in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"type": "batch_optimization\xff", "source_image_urls": ["u"]}', "not valid UTF-8"),
        (
            b'{"type": "batch_optimization", "config": {"maxSize": ' + b"9" * 5000 + b'}, "source_image_urls": ["u"]}',
            "digits",
        ),
        (b'{"config": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested"),
    ],
)
async def test_json_python_cannot_read_is_400_saying_why(client: httpx.AsyncClient, body: bytes, words: str) -> None:
    response = await client.post("/api/v1/ai/job", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert words in response.json()["detail"]


async def test_same_job_id_and_payload_returns_the_same_job(client: httpx.AsyncClient) -> None:
    payload: dict[str, Any] = {
        "job_id": "idem",
        "type": "batch_optimization",
        "config": OPTIMIZE,
        "source_image_urls": [data_uri("rocket.jpg")],
    }
    first = await submit(client, **payload)
    second = await submit(client, **payload)
    assert first.status_code == second.status_code == 202
    assert first.json()["data"]["created"] is True
    assert second.json()["data"]["created"] is False
    result = await wait_final(client, "idem")
    # Replayed after completion: still the same job, nothing processed twice.
    third = await submit(client, **payload)
    assert third.json()["data"]["status"] == "completed"
    assert third.json()["data"]["created"] is False
    assert (await client.get("/api/v1/ai/job/idem", headers=AUTH)).json()["started_at"] == result["started_at"]


async def test_same_job_id_with_another_payload_is_409(client: httpx.AsyncClient) -> None:
    await submit(client, job_id="dup", type="batch_optimization", config=OPTIMIZE, source_image_urls=["data:,a"])
    response = await submit(
        client, job_id="dup", type="batch_optimization", config={"maxSize": 100}, source_image_urls=["data:,a"]
    )
    assert response.status_code == 409
    assert "dup" in response.json()["detail"]


@pytest.mark.parametrize("path", ["/status", "", "/cancel"])
async def test_unknown_job_is_404(client: httpx.AsyncClient, path: str) -> None:
    method = "POST" if path == "/cancel" else "GET"
    response = await client.request(method, f"/api/v1/ai/job/nope{path}", headers=AUTH)
    assert response.status_code == 404
    assert "nope" in response.json()["detail"]


async def test_another_users_job_is_404_to_them(client: httpx.AsyncClient) -> None:
    await submit(client, job_id="mine", user_id="alice", type="batch_optimization", source_image_urls=["data:,a"])
    for path, method in (("/status", "GET"), ("", "GET"), ("/cancel", "POST"), ("/stream", "GET")):
        response = await client.request(method, f"/api/v1/ai/job/mine{path}", headers={**AUTH, "X-User-Id": "mallory"})
        if path == "/stream":
            assert parse_sse(response.text)[0][0] == "error"
        else:
            assert response.status_code == 404
    own = await client.get("/api/v1/ai/job/mine/status", headers={**AUTH, "X-User-Id": "alice"})
    assert own.status_code == 200


async def test_stream_sends_progress_then_one_final_event(client: httpx.AsyncClient) -> None:
    sources = [data_uri("rocket.jpg"), data_uri("grace_hopper.jpg"), data_uri("chelsea.png", "image/png")]
    await submit(client, job_id="sse", type="batch_optimization", config=OPTIMIZE, source_image_urls=sources)
    async with client.stream("GET", "/api/v1/ai/job/sse/stream", headers=AUTH) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        body = "".join([chunk async for chunk in response.aiter_text()])
    events = parse_sse(body)
    names = [name for name, _ in events]
    assert names[-1] == "completed"
    assert set(names[:-1]) <= {"progress"}
    assert names.count("completed") == 1
    processed = [data["processed"] for _, data in events]
    assert processed == sorted(processed)
    assert events[-1][1]["processed"] == 3 and events[-1][1]["progress"] == 100
    assert set(events[-1][1]) == {"job_id", "status", "progress", "processed", "total", "current_image", "message"}


async def test_late_subscriber_gets_the_final_state_and_the_stream_ends(client: httpx.AsyncClient) -> None:
    await submit(
        client, job_id="late", type="batch_optimization", config=OPTIMIZE, source_image_urls=[data_uri("rocket.jpg")]
    )
    await wait_final(client, "late")
    response = await client.get("/api/v1/ai/job/late/stream", headers=AUTH)
    events = parse_sse(response.text)
    assert [name for name, _ in events] == ["completed"]


async def test_stream_of_unknown_job_is_an_error_event(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/ai/job/ghost/stream", headers=AUTH)
    [(name, data)] = parse_sse(response.text)
    assert name == "error"
    assert "ghost" in data["detail"]


async def test_cancel_keeps_finished_images_and_stops_the_rest(make_client: Callable[..., Any]) -> None:
    client = await make_client(max_images_in_flight=1, serve_local_workers=1)
    fast = read_image("rocket.jpg")
    routes = {"/fast.jpg": static_bytes(fast), "/slow.jpg": static_bytes(fast, delay=1.5)}
    with http_server(routes) as base:
        sources = [f"{base}/fast.jpg"] + [f"{base}/slow.jpg"] * 4
        await submit(client, job_id="cancel-me", type="batch_optimization", config=OPTIMIZE, source_image_urls=sources)
        await wait_status(client, "cancel-me", lambda status: status["processed"] >= 1)
        response = await client.post("/api/v1/ai/job/cancel-me/cancel", headers=AUTH)
        assert response.status_code == 200
        assert response.json()["success"] is True
        result = await wait_final(client, "cancel-me", timeout=10)
    assert result["status"] == "cancelled"
    assert result["result_image_urls"][0] is not None
    assert (await client.get(result["result_image_urls"][0])).status_code == 200
    assert result["result_image_urls"][1:] == [None] * 4
    statuses = [image["status"] for image in result["metadata"]["images"]]
    assert statuses[0] == "succeeded" and set(statuses[1:]) == {"cancelled"}
    assert "Cancelled" in result["message"]
    again = await client.post("/api/v1/ai/job/cancel-me/cancel", headers=AUTH)
    assert again.status_code == 409


@pytest.mark.engines("memory")  # the Redis engine's queue limit counts images: test_redis_distributed
async def test_full_queue_answers_503_with_retry_after(make_client: Callable[..., Any]) -> None:
    client = await make_client(max_images_in_flight=1, job_queue_size=1)
    slow = static_bytes(read_image("rocket.jpg"), delay=2.0)
    with http_server({"/slow.jpg": slow}) as base:
        first = await submit(client, job_id="q0", type="batch_optimization", source_image_urls=[f"{base}/slow.jpg"])
        assert first.status_code == 202
        await wait_status(client, "q0", lambda status: status["status"] == "processing")
        # One job runs, one may wait in the queue, the rest are turned away.
        responses = [
            await submit(client, job_id=f"q{n}", type="batch_optimization", source_image_urls=[f"{base}/slow.jpg"])
            for n in range(1, 4)
        ]
        codes = [response.status_code for response in responses]
        assert codes == [202, 503, 503]
        rejected = next(response for response in responses if response.status_code == 503)
        assert int(rejected.headers["Retry-After"]) > 0
        assert "queue is full" in rejected.json()["detail"]
        # A rejected job id is not remembered: retrying later is a fresh submission.
        assert (await client.get("/api/v1/ai/job/q3/status", headers=AUTH)).status_code == 404
        for n in range(2):
            await client.post(f"/api/v1/ai/job/q{n}/cancel", headers=AUTH)


async def test_disabled_plugin_answers_503_with_the_reason(make_client: Callable[..., Any], tmp_path: Any) -> None:
    config = tmp_path / "plugins.yaml"
    config.write_text("plugins:\n  ai-playground:\n    enabled: ${PLAYGROUND_ON:-false}\n")
    client = await make_client(plugins_config=config)
    response = await submit(client, type="batch_optimization", source_image_urls=["data:,a"])
    assert response.status_code == 503
    assert "disabled" in response.json()["detail"]
    health = (await client.get("/api/v1/health", headers=AUTH)).json()
    playground = next(plugin for plugin in health["plugins"] if plugin["name"] == "ai-playground")
    assert playground["enabled"] is False


async def test_generative_mode_without_a_model_is_503(client: httpx.AsyncClient) -> None:
    response = await submit(
        client,
        type="background_replacement",
        config={"backgroundPrompt": "beach", "mode": "generative"},
        source_image_urls=["data:,a"],
    )
    assert response.status_code == 503
    assert "AI_API_KEY" in response.json()["detail"]


async def test_cors_allows_the_configured_origin(make_client: Callable[..., Any]) -> None:
    client = await make_client(cors_origins=["https://seller.example"])
    response = await client.options(
        "/api/v1/ai/job",
        headers={"Origin": "https://seller.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.headers["access-control-allow-origin"] == "https://seller.example"
    denied = await client.options(
        "/api/v1/ai/job", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in denied.headers


async def test_oversize_submission_is_413_before_it_is_read(make_client: Callable[..., Any]) -> None:
    client = await make_client(max_job_request_bytes=64 * 1024)
    sources = [data_uri("rocket.jpg")]  # ~150 KB of base64
    response = await submit(client, type="batch_optimization", source_image_urls=sources)
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]

    async def chunked() -> Any:
        # No Content-Length: the limit is enforced while the body streams in.
        body = json.dumps({"type": "batch_optimization", "source_image_urls": sources}).encode()
        for start in range(0, len(body), 16 * 1024):
            yield body[start : start + 16 * 1024]

    streamed = await client.post(
        "/api/v1/ai/job", content=chunked(), headers={**AUTH, "Content-Type": "application/json"}
    )
    assert streamed.status_code == 413


@pytest.mark.parametrize(
    "body",
    [
        b'{"type":"batch_optimization","config":{"x":"\\ud800"},"source_image_urls":["data:,"]}',
        b'{"type":"batch_optimization","source_image_urls":["https://cdn.example/\\udfff.jpg"]}',
        b'{"job_id":"ok","user_id":"\\ud83d","type":"batch_optimization","source_image_urls":["data:,"]}',
    ],
)
async def test_lone_surrogates_are_400_not_a_later_500(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post("/api/v1/ai/job", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert "unicode" in response.json()["detail"].lower()


async def test_json_syntax_errors_name_the_body(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/ai/job", content=b"{bad", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "body"


async def test_the_result_echoes_the_validated_config(client: httpx.AsyncClient) -> None:
    config = {"maxSize": 300, "somethingElse": "x" * 1000}
    await submit(client, job_id="echo", type="batch_optimization", config=config, source_image_urls=["data:,x"])
    result = await wait_final(client, "echo")
    assert result["metadata"]["config"] == {
        "quality": "standard",
        "format": "webp",
        "maxSize": 300,
        "maintainAspect": True,
    }
    # The same meaning spelt another way is the same job, not a conflict.
    again = await submit(
        client, job_id="echo", type="batch_optimization", config={"max_size": 300}, source_image_urls=["data:,x"]
    )
    assert again.status_code == 202
    assert again.json()["data"]["created"] is False


async def test_bodies_of_requests_without_a_key_are_never_read(client: httpx.AsyncClient) -> None:
    read = 0

    async def body() -> Any:
        nonlocal read
        for _ in range(100):
            read += 1
            yield b"x" * 65536

    response = await client.post(
        "/api/v1/image/compress", content=body(), headers={"Content-Type": "multipart/form-data"}
    )
    assert response.status_code == 401
    assert read <= 1
    bad_json = await client.post("/api/v1/ai/job", content=b"{bad", headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 401


async def test_errors_carry_cors_headers(make_client: Callable[..., Any]) -> None:
    client = await make_client(cors_origins=["https://seller.example"])
    response = await client.get("/api/v1/ai/job/x/status", headers={"Origin": "https://seller.example"})
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == "https://seller.example"


async def test_sources_held_by_unfinished_jobs_are_bounded(make_client: Callable[..., Any]) -> None:
    client = await make_client(max_images_in_flight=1, serve_local_workers=1, max_pending_source_bytes=400_000)
    photo = data_uri("rocket.jpg")  # ~150 KB of base64
    with http_server({"/slow.jpg": static_bytes(read_image("rocket.jpg"), delay=1.0)}) as base:
        running = await submit(client, job_id="slow", type="batch_optimization", source_image_urls=[f"{base}/slow.jpg"])
        assert running.status_code == 202
        first = await submit(client, job_id="big-1", type="batch_optimization", source_image_urls=[photo, photo])
        assert first.status_code == 202
        second = await submit(client, job_id="big-2", type="batch_optimization", source_image_urls=[photo, photo])
        assert second.status_code == 503
        assert "data: URIs" in second.json()["detail"]
        assert (await wait_final(client, "big-1"))["status"] == "completed"
        # Once the held sources are released, the same submission is taken.
        again = await submit(client, job_id="big-2", type="batch_optimization", source_image_urls=[photo, photo])
        assert again.status_code == 202
        assert (await wait_final(client, "big-2"))["status"] == "completed"


@pytest.mark.parametrize("public_base_url", [None, "https://images.example.com"])
async def test_result_urls_follow_the_request_unless_a_public_base_is_set(
    make_client: Callable[..., Any], public_base_url: str | None
) -> None:
    client = await make_client(public_base_url=public_base_url)
    sources = [data_uri("rocket.jpg")]
    await submit(client, job_id="urls", type="batch_optimization", config=OPTIMIZE, source_image_urls=sources)
    assert (await wait_final(client, "urls"))["status"] == "completed"
    key = "ai-playground/default/-anonymous/urls/0.webp"
    for host in ("testserver", "api.internal:8123"):
        answer = await client.get("/api/v1/ai/job/urls", headers={**AUTH, "Host": host})
        expected = f"{public_base_url or f'http://{host}'}/files/{key}"
        assert answer.json()["result_image_urls"] == [expected]
    if public_base_url is None:
        fetched = await client.get(f"http://testserver/files/{key}")
        assert fetched.status_code == 200 and fetched.content[:4] == b"RIFF"
