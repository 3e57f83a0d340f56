"""Image limits from settings reach the image code through the plugin."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

from PIL import Image

from tests.api.helpers import data_uri, submit, wait_final
from tests.support.data import read_image


def animated_gif(frames: int) -> str:
    photo = Image.open(io.BytesIO(read_image("rocket.jpg"))).convert("RGB").resize((64, 48))
    images = [photo.rotate(angle) for angle in range(0, 10 * frames, 10)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=100, loop=0)
    return "data:image/gif;base64," + base64.b64encode(buffer.getvalue()).decode()


async def test_frame_and_pixel_limits_come_from_settings(make_client: Callable[..., Any]) -> None:
    client = await make_client(max_image_frames=3, max_image_pixels=280_000)
    sources = [animated_gif(2), animated_gif(5), data_uri("rocket.jpg"), data_uri("grace_hopper.jpg")]
    for job_type in ("batch_optimization", "image_enhancement"):
        await submit(client, job_id=job_type, type=job_type, source_image_urls=sources)
        result = await wait_final(client, job_id=job_type)
        errors = {error["index"]: error["error"] for error in result["errors"]}
        assert result["result_image_urls"][0] is not None
        assert "frame" in errors[1]
        # rocket.jpg is 640x427 (273 kpx, under the limit); grace_hopper.jpg is 512x600 (307 kpx, over it).
        assert result["result_image_urls"][2] is not None
        assert set(errors) == {1, 3}
        assert "limit" in errors[3]
