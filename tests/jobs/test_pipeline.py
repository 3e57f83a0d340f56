"""One image end to end: results of earlier jobs as sources, scoped to their user."""

from __future__ import annotations

import httpx

from tests.api.helpers import data_uri, submit, wait_final


async def test_a_result_feeds_the_same_users_next_job_but_no_other_users(client: httpx.AsyncClient) -> None:
    await submit(
        client, job_id="first", user_id="alice", type="batch_optimization", source_image_urls=[data_uri("rocket.jpg")]
    )
    first = await wait_final(client, "first")
    url = first["result_image_urls"][0]
    key = url.split("/files/", 1)[1]

    await submit(client, job_id="again", user_id="alice", type="image_enhancement", source_image_urls=[url, key])
    again = await wait_final(client, "again")
    assert again["status"] == "completed"
    # Both spellings were read from storage, never over HTTP, and each image says where it came from.
    assert [image["source"] for image in again["metadata"]["images"]] == [f"storage:{key}"] * 2
    assert first["metadata"]["images"][0]["source"] == "data: URI"

    await submit(client, job_id="theft", user_id="mallory", type="image_enhancement", source_image_urls=[url, key])
    theft = await wait_final(client, "theft")
    assert theft["status"] == "failed"
    assert all("belongs to another user" in error["error"] for error in theft["errors"])
    await submit(client, job_id="anon", type="image_enhancement", source_image_urls=[key])
    assert (await wait_final(client, "anon"))["status"] == "failed"
