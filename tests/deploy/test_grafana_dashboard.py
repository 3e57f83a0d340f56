"""The Grafana dashboard in `deploy/grafana` asks only for metrics and labels the service exports."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.api.helpers import data_uri, submit, wait_final
from tests.support.metrics import Scrape

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "capability-service.json"
METRIC = re.compile(r"\b(capsvc_[a-z0-9_]+)")
SELECTOR = re.compile(r"\b(capsvc_[a-z0-9_]+)\{([^}]*)\}")
BY = re.compile(r"\bby \(([^)]*)\)")


def expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(found) >= 20
    return found


def test_the_dashboard_is_importable_grafana_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "capability-service"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["targets"], panel["title"]


async def test_every_metric_and_label_the_dashboard_queries_is_exported(client: httpx.AsyncClient) -> None:
    # A job first, so the job, image and stage families have samples (and thereby their labels).
    answer = await submit(
        client,
        job_id="dashboard",
        type="image_enhancement",
        config={},
        source_image_urls=[data_uri("rocket.jpg"), "data:image/png;base64,AAAA"],
    )
    assert answer.status_code == 202
    assert (await wait_final(client, "dashboard"))["status"] == "completed"
    scrape = Scrape((await client.get("/metrics")).text)
    exported = scrape.sample_names()
    labels: dict[str, set[str]] = {}
    for name, found, _value in scrape.samples():
        labels.setdefault(name, set()).update(found)

    for expr in expressions():
        used = set(METRIC.findall(expr))
        assert used, expr
        missing = used - exported
        assert not missing, f"{expr}: not in /metrics: {sorted(missing)}"
        # Label names of selectors and of `by (...)` clauses must be labels those series carry.
        wanted: list[tuple[set[str], str]] = []
        for name, matchers in SELECTOR.findall(expr):
            wanted += [({name}, matcher.split("=")[0].rstrip("!~").strip()) for matcher in matchers.split(",")]
        for group in BY.findall(expr):
            wanted += [(used, label.strip()) for label in group.split(",")]
        for names, label in wanted:
            carriers = [labels[name] for name in names if name in labels]
            if carriers:
                assert any(label in carrier for carrier in carriers), f"{expr}: no label {label!r} on {sorted(names)}"


async def test_queue_panels_match_what_each_engine_exports(make_client: Callable[..., Any]) -> None:
    # Each engine reports its own gauges; the dashboard shows both kinds side by side.
    queries = "\n".join(expressions())
    memory: httpx.AsyncClient = await make_client()
    exported = Scrape((await memory.get("/metrics")).text).sample_names()
    for name in ("capsvc_jobs_queued", "capsvc_images_in_flight"):
        assert name in exported and name in queries
    for name in ("capsvc_images_queued", "capsvc_images_active", "capsvc_workers"):
        assert name in queries
