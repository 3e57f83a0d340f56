"""Background replacement through the plugin: offline, with a background image, and with a remote
model (the fake Gemini server on loopback, through the real Gemini provider)."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from capability_service.core.config import Settings
from capability_service.imaging import background as backgrounds
from capability_service.imaging import composite
from capability_service.imaging.composite import Placement
from capability_service.imaging.types import EncodedImage, ImageError
from capability_service.jobs.cpu import CpuExecutor
from capability_service.plugins.ai_playground.configs import BackgroundReplacementConfig
from capability_service.plugins.ai_playground.plugin import AiPlaygroundPlugin
from capability_service.plugins.base import PluginDeps, ProcessContext
from capability_service.providers.base import ProviderError
from capability_service.providers.gemini import GeminiProvider
from capability_service.sources.fetch import SourceFetcher
from tests.fakes.base import Recorded, Reply, json_reply, render_result
from tests.fakes.gemini_server import GeminiFake
from tests.imaging.test_composite import assert_product_preserved, png, scene
from tests.support.servers import http_server, static_bytes

TARGET = (600, 800)
KEY = "gemini-test-key"


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(ai_target_width=TARGET[0], ai_target_height=TARGET[1])


@pytest.fixture
async def ctx(settings: Settings) -> AsyncIterator[ProcessContext]:
    cpu = CpuExecutor("thread", 2)
    fetcher = SourceFetcher.from_settings(settings)

    async def read_source(url: str) -> bytes:
        return (await fetcher.fetch(url)).data

    yield ProcessContext(run_cpu=cpu.run, read_source=read_source)
    await fetcher.close()
    cpu.shutdown()


@pytest.fixture
def gemini() -> Iterator[GeminiFake]:
    with GeminiFake(api_key=KEY).running() as fake:
        yield fake


@pytest.fixture
async def provider(gemini: GeminiFake) -> AsyncIterator[GeminiProvider]:
    client = GeminiProvider(api_base=gemini.api_base, api_key=KEY, timeout=20.0)
    yield client
    await client.close()


def decode(result: EncodedImage) -> npt.NDArray[np.uint8]:
    with Image.open(io.BytesIO(result.data)) as image:
        assert image.size == TARGET
        return np.asarray(image.convert("RGB"))


def placement(result: EncodedImage) -> Placement:
    data = result.metadata["placement"]
    return Placement(crop=tuple(data["crop"]), box=tuple(data["box"]), scale=data["scale"])


async def run(plugin: AiPlaygroundPlugin, config: dict[str, Any], source: bytes, ctx: ProcessContext) -> EncodedImage:
    model = plugin.validate("background_replacement", config)
    reason = plugin.operation_unavailable("background_replacement", model)
    if reason:
        raise ImageError(reason)
    return await plugin.process("background_replacement", model, source, ctx)


async def test_offline_composite_keeps_the_product_and_reports_how(settings: Settings, ctx: ProcessContext) -> None:
    data, pixels, alpha = scene("defocused-camera")
    plugin = AiPlaygroundPlugin(PluginDeps(settings=settings))
    result = await run(plugin, {"backgroundPrompt": "light grey studio", "format": "png"}, data, ctx)
    canvas = decode(result)
    meta = result.metadata
    assert meta["engine"] == "offline" and meta["mode"] == "composite"
    assert meta["segmentation"] == "u2netp"
    assert 0.05 < meta["mask_coverage"] < 0.5
    assert "studio" in meta["background"] and "note" not in meta
    assert {"segment_ms", "background_ms", "composite_ms", "processing_ms"} <= set(meta["timings"])
    assert_product_preserved(canvas, pixels, alpha, placement(result))
    # A product big enough for the canvas: no enlargement worth a warning.
    assert meta["product_scale"] == pytest.approx(placement(result).scale, abs=1e-3)
    assert meta["product_scale"] < 2.0 and meta["warnings"] == []
    # The studio backdrop at the corners, not the old photo.
    assert abs(int(canvas[2, 2, 0]) - 217) <= 8


async def test_a_small_product_is_enlarged_with_lanczos_and_warned_about(
    make_settings: Callable[..., Settings], ctx: ProcessContext, data_dir: Any
) -> None:
    # A 128 px product (its own alpha) on the real 1500x2000 canvas: enlarged about ten times.
    settings = make_settings()
    source = (data_dir / "Minduka_Present_Blue_Pack.png").read_bytes()
    plugin = AiPlaygroundPlugin(PluginDeps(settings=settings))
    result = await run(plugin, {"backgroundPrompt": "pure white", "shadow": False}, source, ctx)
    meta = result.metadata
    place = placement(result)
    assert meta["product_scale"] == pytest.approx(place.scale, abs=1e-3) and meta["product_scale"] > 8
    [warning] = meta["warnings"]
    assert warning["code"] == "product_upscaled" and warning["limit"] == settings.product_scale_warning == 2.0
    assert warning["product_scale"] == pytest.approx(meta["product_scale"], abs=0.01)
    assert f"{meta['product_scale']:.1f}x" in warning["message"] and "at least" in warning["message"]

    # The enlargement is Lanczos (8x8 taps): inside the product the canvas matches OpenCV's Lanczos-4
    # enlargement of the source crop, and is closer to it than a bicubic or bilinear enlargement would be.
    with Image.open(io.BytesIO(source)) as image:
        rgba = np.asarray(image.convert("RGBA"))
    x, y, w, h = place.crop
    bx, by, bw, bh = place.box
    crop = rgba[y : y + h, x : x + w]
    with Image.open(io.BytesIO(result.data)) as image:
        product = np.asarray(image.convert("RGB"))[by : by + bh, bx : bx + bw].astype(np.float32)
    # Opaque well inside the outline: no alpha blending there, only the resampling filter.
    solid = cv2.erode((crop[..., 3] == 255).astype(np.uint8), np.ones((5, 5), np.uint8))
    inside = cv2.resize(solid, (bw, bh), interpolation=cv2.INTER_NEAREST).astype(bool)
    assert inside.sum() > 0.3 * bw * bh

    def error(flag: int) -> float:
        enlarged = cv2.resize(crop[..., :3].astype(np.float32), (bw, bh), interpolation=flag)
        return float(np.abs(enlarged - product)[inside].mean())

    lanczos, cubic, linear = error(cv2.INTER_LANCZOS4), error(cv2.INTER_CUBIC), error(cv2.INTER_LINEAR)
    assert lanczos < 1.0 and lanczos < cubic < linear


async def test_a_bigger_limit_means_no_warning(
    make_settings: Callable[..., Settings], ctx: ProcessContext, data_dir: Any
) -> None:
    settings = make_settings(product_scale_warning=20.0)
    source = (data_dir / "Minduka_Present_Blue_Pack.png").read_bytes()
    plugin = AiPlaygroundPlugin(PluginDeps(settings=settings))
    result = await run(plugin, {"backgroundPrompt": "pure white"}, source, ctx)
    assert result.metadata["product_scale"] > 8 and result.metadata["warnings"] == []


async def test_an_unknown_prompt_falls_back_to_white_with_a_note(settings: Settings, ctx: ProcessContext) -> None:
    data, _, _ = scene("texture-rocket")
    plugin = AiPlaygroundPlugin(PluginDeps(settings=settings))
    result = await run(plugin, {"backgroundPrompt": "a cosy living room", "format": "webp", "shadow": False}, data, ctx)
    canvas = decode(result)
    assert "white" in result.metadata["note"]
    assert canvas[:20, :20].min() >= 250


async def test_background_image_url_is_read_through_the_source_policy(
    settings: Settings, ctx: ProcessContext, data_dir: Any
) -> None:
    data, pixels, alpha = scene("plain-beige")
    backdrop = (data_dir / "chelsea.png").read_bytes()
    plugin = AiPlaygroundPlugin(PluginDeps(settings=settings))
    with http_server({"/bg.png": static_bytes(backdrop, "image/png")}) as base:
        result = await run(
            plugin, {"backgroundPrompt": "ignored", "backgroundImageUrl": f"{base}/bg.png", "shadow": False}, data, ctx
        )
        canvas = decode(result)
        assert "backgroundImageUrl" in result.metadata["background"]
        # The cat photo covers the canvas: a textured, non-uniform backdrop at the edges.
        assert canvas[:, :40].std() > 10
        assert_product_preserved(canvas, pixels, alpha, placement(result))
        missing = {"backgroundPrompt": "x", "backgroundImageUrl": f"{base}/missing.png"}
        with pytest.raises(Exception, match="404"):
            await run(plugin, missing, data, ctx)


async def test_remote_scene_never_changes_the_product(
    settings: Settings, ctx: ProcessContext, gemini: GeminiFake, provider: GeminiProvider
) -> None:
    data, pixels, alpha = scene("texture-cat")
    plugin = AiPlaygroundPlugin(PluginDeps(settings=settings, provider=provider))
    result = await run(plugin, {"backgroundPrompt": "marble kitchen counter", "quality": "high", "seed": 7}, data, ctx)
    canvas = decode(result)
    meta = result.metadata
    assert meta["engine"] == "gemini" and meta["mode"] == "composite" and meta["shadow"] is False
    assert "remote_ms" in meta["timings"]
    # The fake model redraws its input smaller on a tinted backdrop; our product is on top regardless.
    assert_product_preserved(canvas, pixels, alpha, placement(result))
    calls = gemini.model_calls()
    assert len(calls) == 1
    sent = calls[0].parsed
    assert sent["aspect_ratio"] == "3:4" and sent["temperature"] == 0.3 and sent["seed"] == 7
    assert any("marble kitchen counter" in text for text in sent["texts"])
    # What we sent is the layout: the product already at its place on the neutral backdrop.
    with Image.open(io.BytesIO(sent["images"][0])) as layout:
        assert layout.format == "JPEG" and layout.size[0] / layout.size[1] == pytest.approx(0.75, abs=0.01)
        corner = np.asarray(layout.convert("RGB"))[:8, :8].astype(int)
    assert np.abs(corner - 236).max() <= 6
    # The backdrop is the model's scene, not our neutral layout colour.
    assert np.abs(canvas[:8, :8].astype(int) - 236).max() > 6


async def test_a_refusal_is_this_images_clear_error(
    settings: Settings, ctx: ProcessContext, gemini: GeminiFake, provider: GeminiProvider
) -> None:
    data, _, _ = scene("plain-white")
    plugin = AiPlaygroundPlugin(PluginDeps(settings=settings, provider=provider))
    gemini.push(GeminiFake.finished("IMAGE_SAFETY"))
    with pytest.raises(ProviderError, match="refused"):
        await run(plugin, {"backgroundPrompt": "beach"}, data, ctx)


async def test_generative_mode_fits_the_models_photo_to_the_target(
    settings: Settings, ctx: ProcessContext, gemini: GeminiFake, provider: GeminiProvider, data_dir: Any
) -> None:
    source = (data_dir / "rocket.jpg").read_bytes()
    plugin = AiPlaygroundPlugin(PluginDeps(settings=settings, provider=provider))
    result = await run(plugin, {"backgroundPrompt": "night sky", "mode": "generative", "format": "jpg"}, source, ctx)
    decode(result)
    assert result.metadata["mode"] == "generative" and result.metadata["product_preserved"] is False
    assert gemini.model_calls()[0].parsed["aspect_ratio"] == "3:4"
    offline = AiPlaygroundPlugin(PluginDeps(settings=settings))
    with pytest.raises(ImageError, match="AI_API_KEY"):
        await run(offline, {"backgroundPrompt": "night sky", "mode": "generative"}, source, ctx)


async def test_bad_sources_fail_cleanly(settings: Settings, ctx: ProcessContext) -> None:
    plugin = AiPlaygroundPlugin(PluginDeps(settings=settings))
    for bad in (b"", b"plain text", png(np.full((50, 50, 3), 90, np.uint8))):
        with pytest.raises(ImageError):
            await run(plugin, {"backgroundPrompt": "white"}, bad, ctx)
    with pytest.raises(Exception, match=r"backgroundPrompt|background_prompt"):
        plugin.validate("background_replacement", {"padding": 0.1})
    assert isinstance(
        BackgroundReplacementConfig.model_validate({"backgroundPrompt": "w"}), BackgroundReplacementConfig
    )


def fixed_scene(width: int = 864, height: int = 1184) -> tuple[bytes, Reply]:
    """A scene the fake model answers every call with, whatever it is shown: a real PNG in Gemini's answer shape."""
    scene_png = render_result(None, width, height, 4242)
    body = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"inlineData": {"mimeType": "image/png", "data": base64.b64encode(scene_png).decode()}}],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "modelVersion": "gemini-2.5-flash-image",
    }
    return scene_png, json_reply(200, body)


async def test_remote_composite_equals_the_plain_pipeline_on_the_same_scene(
    make_settings: Callable[..., Settings], ctx: ProcessContext, gemini: GeminiFake, provider: GeminiProvider
) -> None:
    # The real canvas, so that the layout is made at its own, smaller size.
    settings = make_settings()
    canvas = (settings.ai_target_width, settings.ai_target_height)
    data, _, _ = scene("texture-cat")
    scene_png, reply = fixed_scene()
    gemini.rule = lambda request: reply
    plugin = AiPlaygroundPlugin(PluginDeps(settings=settings, provider=provider))
    result = await run(plugin, {"backgroundPrompt": "marble kitchen counter"}, data, ctx)

    # The plain pipeline, one step after another: the product at full scale on the model's scene.
    cut = composite.cut_out(data, canvas, 0.08, settings.max_image_pixels)
    expected = composite.compose(cut, backgrounds.from_image(scene_png, *canvas, settings.max_image_pixels), False)
    with Image.open(io.BytesIO(result.data)) as image:
        assert np.array_equal(np.asarray(image.convert("RGB")), expected)

    # The layout the model was shown: the full canvas on the neutral backdrop, reduced to 1024 px, as
    # it was made before the layout was drawn at its own size. Only resampling order and JPEG differ.
    neutral = np.full((canvas[1], canvas[0], 3), 236, np.uint8)
    full = composite.compose(cut, neutral, shadow=False)
    before = cv2.resize(full, (768, 1024), interpolation=cv2.INTER_AREA).astype(np.float32)
    with Image.open(io.BytesIO(gemini.model_calls()[0].parsed["images"][0])) as image:
        sent = np.asarray(image.convert("RGB")).astype(np.float32)
    assert sent.shape == before.shape
    difference = np.abs(sent - before)
    assert difference.mean() < 2.0 and np.percentile(difference, 99) < 30


async def test_the_full_scale_matte_is_made_while_the_model_paints(
    settings: Settings, gemini: GeminiFake, provider: GeminiProvider
) -> None:
    cpu = CpuExecutor("thread", 2)
    steps: list[str] = []
    matte_made = threading.Event()

    async def run_cpu(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        steps.append(fn.__name__)
        value = await cpu.run(fn, *args, **kwargs)
        if fn is composite.finish:
            matte_made.set()
        return value

    async def no_sources(url: str) -> bytes:
        raise AssertionError(url)

    _, reply = fixed_scene(600, 800)
    calls_seen: list[list[str]] = []

    def model(request: Recorded) -> Reply:
        # The model answers once the matte is made (or after 20 s, for the test to fail, not hang).
        calls_seen.append(list(steps))
        matte_made.wait(20)
        return reply

    gemini.rule = model
    data, pixels, alpha = scene("texture-cat")
    plugin = AiPlaygroundPlugin(PluginDeps(settings=settings, provider=provider))
    try:
        result = await run(
            plugin, {"backgroundPrompt": "marble"}, data, ProcessContext(run_cpu=run_cpu, read_source=no_sources)
        )
    finally:
        cpu.shutdown()
    # One CPU step before the model is called (the product found and the layout made together), and the
    # matte made during the call; after it, one step decodes the scene, composes and encodes.
    assert calls_seen == [["_find_and_lay_out", "finish"]] or calls_seen == [["_find_and_lay_out"]]
    assert matte_made.is_set() and steps == ["_find_and_lay_out", "finish", "_paint_compose_and_encode"]
    assert "remote_ms" in result.metadata["timings"]
    assert_product_preserved(decode(result), pixels, alpha, placement(result))
