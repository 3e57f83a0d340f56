"""Putting a finished job's results back on the seller's Ozon products.

Each product's picture list is read from Ozon as it is now; every picture the job processed (matched
by its source URL) is replaced in place by its result, and every other picture stays where it is, so
the main picture stays first and the list never grows (Ozon takes at most 30). A dry run answers what
each list would become; a real publish sends the lists to `/v2/product/pictures/import` (the current
method: `/v1/product/pictures/import` was switched off on 1 October 2026) in batches of 100 products,
then follows `/v1/product/import/info` until Ozon has taken or refused each product.

Ozon downloads the pictures itself, later, from the public internet: results on a loopback or private
address, or behind presigned URLs that expire within the hour, are refused before anything is sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from capability_service.marketplaces.ozon import OzonSellerClient
from capability_service.marketplaces.ozon_errors import OzonError, OzonRateLimited
from capability_service.marketplaces.ozon_types import (
    MAX_IMPORT_ITEMS,
    MAX_PICTURES,
    ImportItemStatus,
    OzonCredentials,
    OzonProduct,
    PictureImport,
)
from capability_service.sources.netguard import parse_address, refused_kind

# Presigned result URLs must stay valid at least this long: Ozon fetches imported pictures
# asynchronously, usually within minutes, sometimes later under load.
MIN_URL_LIFETIME_SECONDS = 3600
# Host names that never resolve on the public internet.
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa", ".intranet", ".corp")

Sleep = Callable[[float], Awaitable[None]]


class PublishRefused(Exception):
    """Publishing cannot work as configured (e.g. Ozon could not fetch the results); the message says why."""


@dataclass(frozen=True, slots=True)
class ProcessedPicture:
    """One image of a finished job made from an Ozon selection."""

    product_id: int
    offer_id: str
    position: int
    source_url: str
    # A URL for the result as of now (freshly signed for presigned storage); None when the image failed.
    result_url: str | None
    error: str | None = None
    # The image's marketplace check (`{ok, problems, ...}`), when it has one.
    check: dict[str, Any] | None = None


@dataclass(slots=True)
class ProductPlan:
    product_id: int
    offer_id: str
    images_before: list[str]
    images_after: list[str]
    status: str
    replaced: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    task_id: int | None = None
    retry_after: float | None = None
    color_image: str | None = None

    @property
    def changed(self) -> bool:
        return self.images_after != self.images_before

    def view(self) -> dict[str, Any]:
        view: dict[str, Any] = {
            "product_id": self.product_id,
            "offer_id": self.offer_id,
            "images_before": self.images_before,
            "images_after": self.images_after,
            "status": self.status,
            "replaced": self.replaced,
            "skipped": self.skipped,
        }
        if self.errors:
            view["errors"] = self.errors
        if self.task_id is not None:
            view["task_id"] = self.task_id
        if self.retry_after is not None:
            view["retry_after"] = round(self.retry_after)
        return view


def unreachable_reason(url: str) -> str | None:
    """Why Ozon could not download `url` from the internet, or None when nothing speaks against it.

    Host names are judged by their form only: they are resolved by Ozon from its own network.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"{url} is not a valid URL"
    if not parts.scheme and url.startswith("/"):
        # Local storage without PUBLIC_BASE_URL: the URL follows each request's address, none of them public.
        return "PUBLIC_BASE_URL is not set, so result URLs have no public address"
    if parts.scheme not in ("http", "https"):
        return f"{url} is not an http(s) URL"
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        return f"{url} has no host"
    address = parse_address(host)
    if address is not None:
        kind = refused_kind(address)
        return f"{host} is a {kind} address, which Ozon cannot reach" if kind else None
    if host == "localhost" or host.endswith(_LOCAL_SUFFIXES) or "." not in host:
        return f"{host} is a local host name, which Ozon cannot reach"
    return None


def reachability_problem(urls: Sequence[str], url_lifetime: float | None) -> str | None:
    """Why Ozon could not fetch these result URLs (the first reason found), or None."""
    for url in urls:
        reason = unreachable_reason(url)
        if reason is not None:
            return (
                f"the results are not reachable by Ozon: {reason}; set PUBLIC_BASE_URL (local storage) or "
                "S3_PUBLIC_BASE_URL to a public address, or use S3 storage"
            )
    if urls and url_lifetime is not None and url_lifetime < MIN_URL_LIFETIME_SECONDS:
        return (
            f"the results are presigned URLs valid for {url_lifetime:.0f} s, which may expire before Ozon "
            f"fetches them; set S3_PUBLIC_BASE_URL, or S3_PRESIGN_EXPIRES to at least {MIN_URL_LIFETIME_SECONDS}"
        )
    return None


def plan_product(product: OzonProduct, pictures: Sequence[ProcessedPicture], include_failing: bool) -> ProductPlan:
    """What one product's picture list becomes: processed pictures replaced in place, the rest kept."""
    before = list(product.images)
    replacements: dict[str, str] = {}
    plan = ProductPlan(
        product_id=product.product_id,
        offer_id=product.offer_id,
        images_before=before,
        images_after=before,
        status="unchanged",
        color_image=product.color_image,
    )
    for picture in sorted(pictures, key=lambda item: item.position):
        problems = (picture.check or {}).get("problems") or []
        if picture.result_url is None:
            reason = f"the image failed in the job: {picture.error or 'no result'}"
        elif problems and not include_failing:
            reason = "Ozon would refuse the result: " + "; ".join(problems)
        elif picture.source_url not in before:
            reason = "the picture is no longer on the product (it was changed after the job)"
        else:
            replacements[picture.source_url] = picture.result_url
            plan.replaced.append(
                {"position": before.index(picture.source_url) + 1, "from": picture.source_url, "to": picture.result_url}
            )
            continue
        plan.skipped.append({"position": picture.position, "source_url": picture.source_url, "reason": reason})
    plan.images_after = [replacements.get(url, url) for url in before][:MAX_PICTURES]
    return plan


class OzonPublisher:
    """Plans and runs the publication of one job's results, for one seller's credentials."""

    def __init__(
        self,
        client: OzonSellerClient,
        creds: OzonCredentials,
        *,
        wait_seconds: float,
        poll_seconds: float,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.client = client
        self.creds = creds
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self._sleep = sleep

    async def plan(self, pictures: Sequence[ProcessedPicture], include_failing: bool) -> list[ProductPlan]:
        by_product: dict[int, list[ProcessedPicture]] = {}
        offers: dict[int, str] = {}
        for picture in pictures:
            by_product.setdefault(picture.product_id, []).append(picture)
            offers.setdefault(picture.product_id, picture.offer_id)
        lookup = await self.client.product_info(self.creds, [str(pid) for pid in by_product], "product_id")
        found = {product.product_id: product for product in lookup.products}
        plans = []
        for product_id, group in by_product.items():
            product = found.get(product_id)
            if product is None:
                plans.append(
                    ProductPlan(
                        product_id=product_id,
                        offer_id=offers[product_id],
                        images_before=[],
                        images_after=[],
                        status="not_found",
                        errors=["no product with this product_id in the account of these credentials"],
                    )
                )
                continue
            plan = plan_product(product, group, include_failing)
            plan.status = "would_update" if plan.changed else "unchanged"
            plans.append(plan)
        return plans

    async def publish(self, plans: list[ProductPlan]) -> None:
        """Import every changed product's new list and follow the imports; fills in each plan's status."""
        changed = [plan for plan in plans if plan.status == "would_update"]
        tasks: dict[int, list[ProductPlan]] = {}
        for start in range(0, len(changed), MAX_IMPORT_ITEMS):
            batch = changed[start : start + MAX_IMPORT_ITEMS]
            items = [PictureImport(plan.offer_id, tuple(plan.images_after), plan.color_image) for plan in batch]
            try:
                task_id = await self.client.import_pictures(self.creds, items)
            except OzonRateLimited as exc:
                for plan in batch:
                    plan.status, plan.retry_after, plan.errors = "rate_limited", exc.retry_after, [str(exc)]
                continue
            except OzonError as exc:
                if not tasks:
                    # Nothing was sent yet: the whole request fails with Ozon's reason (a wrong key, say).
                    raise
                for plan in batch:
                    plan.status, plan.errors = "failed", [str(exc)]
                continue
            for plan in batch:
                plan.status, plan.task_id = "pending", task_id
            tasks[task_id] = batch
        await self._follow(tasks)

    async def _follow(self, tasks: dict[int, list[ProductPlan]]) -> None:
        deadline = time.monotonic() + self.wait_seconds
        open_tasks = dict(tasks)
        while open_tasks:
            for task_id, batch in list(open_tasks.items()):
                try:
                    statuses = await self.client.import_info(self.creds, task_id)
                except OzonError as exc:
                    for plan in batch:
                        plan.errors = [f"could not read the import status: {exc}"]
                    del open_tasks[task_id]
                    continue
                if self._apply(batch, statuses):
                    del open_tasks[task_id]
            if not open_tasks or time.monotonic() >= deadline:
                break
            await self._sleep(self.poll_seconds)
        imported = [plan for batch in tasks.values() for plan in batch if plan.status == "imported"]
        if imported:
            try:
                problems = await self.client.picture_errors(self.creds, [plan.product_id for plan in imported])
            except OzonError:
                problems = {}
            for plan in imported:
                plan.errors.extend(problems.get(plan.product_id, []))

    @staticmethod
    def _apply(batch: list[ProductPlan], statuses: list[ImportItemStatus]) -> bool:
        """Copy Ozon's per-product status into the plans; True when none of them is pending any more."""
        by_offer = {status.offer_id: status for status in statuses}
        settled = True
        for plan in batch:
            status = by_offer.get(plan.offer_id)
            if status is None or status.status == "pending":
                settled = False
                continue
            plan.status = "imported" if status.status == "imported" else "failed"
            plan.errors = list(status.errors)
            if plan.status == "failed" and not plan.errors:
                plan.errors = [f"Ozon answered {status.status!r}"]
        return settled
