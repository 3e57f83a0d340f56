"""A fake Ozon Seller API on loopback, speaking the shapes of docs.ozon.ru/api/seller.

It checks what the real API checks (the `Client-Id` and `Api-Key` headers, a JSON body, the field
names and limits of each method: at most 1000 ids per `/v3/product/info/list`, one id kind per call,
`limit` 1..1000 on `/v3/product/list`, at most 100 products and 30 pictures per import) and answers
like it: products without the unknown ids, `last_id` paging, `task_id`s whose status is `pending`
for a while and then `imported`, and errors as `{"code", "message", "details"}`.

    with OzonSellerFake().running() as ozon:
        ozon.add_catalogue(2500, cdn_base="http://127.0.0.1:9/")
        ozon.push(ozon.rate_limited(retry_after=0.1))   # the next call answers 429 code 8
        settings: OZON_API_BASE=ozon.url, OZON_CLIENT_ID=ozon.client_id, OZON_API_KEY=ozon.api_key
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.base import FakeModelServer, Recorded, Reply, json_reply

VISIBILITY = frozenset(
    {"ALL", "VISIBLE", "INVISIBLE", "EMPTY_STOCK", "NOT_MODERATED", "MODERATED", "DISABLED", "STATE_FAILED"}
)
ID_KINDS = ("offer_id", "product_id", "sku")


@dataclass
class FakeProduct:
    product_id: int
    offer_id: str
    sku: int
    name: str
    primary_image: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    color_image: list[str] = field(default_factory=list)

    def info_item(self) -> dict[str, Any]:
        # A trimmed /v3/product/info/list item: the fields the service reads, plus a few it must ignore.
        return {
            "id": self.product_id,
            "offer_id": self.offer_id,
            "sku": self.sku,
            "name": self.name,
            "primary_image": list(self.primary_image),
            "images": list(self.images),
            "images360": [],
            "color_image": list(self.color_image),
            "barcodes": [f"46{self.product_id:011d}"],
            "currency_code": "RUB",
            "price": "999.0000",
            "statuses": {"status": "price_sent", "is_created": True},
            "errors": [],
        }


@dataclass
class ImportTask:
    items: list[dict[str, Any]]
    polls: int = 0
    applied: bool = False


def ozon_error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    return json_reply(status, {"code": code, "message": message, "details": []}, headers)


class OzonSellerFake(FakeModelServer):
    """The fake Seller API; `url` is what `OZON_API_BASE` should be."""

    def __init__(
        self, *, client_id: str = "2128753", api_key: str = "7cc90d26-33e4-499b-aaaa-0123456789ab", latency: float = 0.0
    ) -> None:
        super().__init__(api_key=api_key, latency=latency)
        self.client_id = client_id
        self.products: dict[int, FakeProduct] = {}
        self.tasks: dict[int, ImportTask] = {}
        # How many /v1/product/import/info calls answer `pending` before a task is `imported`.
        self.pending_polls = 1
        # offer_id -> the error Ozon reports for that product's import (a moderation failure, say).
        self.import_failures: dict[str, str] = {}
        self._task_ids = itertools.count(7_000_001)

    # -- the catalogue --------------------------------------------------------------------------

    def add_product(
        self,
        product_id: int,
        offer_id: str,
        *,
        images: list[str] | None = None,
        primary_image: list[str] | None = None,
        color_image: list[str] | None = None,
        name: str | None = None,
    ) -> FakeProduct:
        product = FakeProduct(
            product_id=product_id,
            offer_id=offer_id,
            sku=product_id + 900_000_000,
            name=name or f"Product {offer_id}",
            primary_image=list(primary_image or []),
            images=list(images or []),
            color_image=list(color_image or []),
        )
        with self._lock:
            self.products[product_id] = product
        return product

    def add_catalogue(
        self, count: int, *, cdn_base: str = "https://cdn1.ozone.ru/s3/multimedia-1/", images: int = 2
    ) -> None:
        """`count` products `OFF-00001`... with ids from 100001, each with `images` pictures (the first main)."""
        for n in range(1, count + 1):
            urls = [f"{cdn_base.rstrip('/')}/{n:05d}-{k}.jpg" for k in range(images)]
            self.add_product(100_000 + n, f"OFF-{n:05d}", primary_image=urls[:1], images=urls[1:])

    def by_offer(self, offer_id: str) -> FakeProduct | None:
        with self._lock:
            return next((p for p in self.products.values() if p.offer_id == offer_id), None)

    def calls(self, path: str) -> list[Recorded]:
        """The recorded POSTs to `path` that passed authentication and request checks or not, in order."""
        with self._lock:
            return [request for request in self.requests if request.path == path]

    # -- answers tests can push -----------------------------------------------------------------

    @staticmethod
    def rate_limited(retry_after: float | None = 1.0) -> Reply:
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        return ozon_error(429, 8, "You have reached request rate limit per second", headers)

    @staticmethod
    def item_rate_limited(minutes: int = 1) -> Reply:
        return ozon_error(
            429,
            8,
            "item limit exceeded",
            {"Item-Retry-After": str(minutes), "Item-Rate-Limit-Remaining": "0"},
        )

    @staticmethod
    def circle_open() -> Reply:
        # What Ozon's gateway answers while its circuit breaker holds a method closed for the account.
        return Reply(status=503, body=b"Circle is open", content_type="text/plain; charset=utf-8")

    @staticmethod
    def server_error() -> Reply:
        return ozon_error(500, 13, "internal error")

    # -- the protocol ---------------------------------------------------------------------------

    def route(self, request: Recorded) -> Reply | None:
        if request.method != "POST":
            return ozon_error(405, 12, "Method Not Allowed")
        path = request.path.split("?", 1)[0]
        if path not in self._methods():
            return ozon_error(404, 5, "Not Found")
        client_id = request.headers.get("client-id")
        api_key = request.headers.get("api-key")
        if not client_id or not api_key:
            return ozon_error(400, 3, "Client-Id and Api-Key headers are required")
        if not client_id.isdigit() or client_id != self.client_id:
            return ozon_error(400, 3, f"Invalid Client-Id: {client_id}")
        if api_key != self.api_key:
            return ozon_error(404, 5, "Api-key is deactivated, use another one")
        if not request.headers.get("content-type", "").startswith("application/json"):
            return ozon_error(400, 3, "Content-Type must be application/json")
        try:
            body = json.loads(request.body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return ozon_error(400, 3, "invalid JSON body")
        if not isinstance(body, dict):
            return ozon_error(400, 3, "request body must be an object")
        request.parsed = body
        problem = self._methods()[path][0](body)
        if problem is not None:
            return ozon_error(400, 3, problem)
        return None

    def answer(self, request: Recorded) -> Reply:
        path = request.path.split("?", 1)[0]
        return self._methods()[path][1](request.parsed)

    def _methods(self) -> dict[str, tuple[Callable[[dict[str, Any]], str | None], Callable[[dict[str, Any]], Reply]]]:
        return {
            "/v3/product/info/list": (self._check_info, self._info),
            "/v3/product/list": (self._check_list, self._list),
            "/v2/product/pictures/import": (self._check_import, self._import),
            "/v1/product/import/info": (self._check_task, self._task_info),
            "/v2/product/pictures/info": (self._check_pictures_info, self._pictures_info),
        }

    @staticmethod
    def _check_info(body: dict[str, Any]) -> str | None:
        unknown = set(body) - set(ID_KINDS)
        if unknown:
            return f"unknown field {sorted(unknown)[0]}"
        given = [kind for kind in ID_KINDS if body.get(kind)]
        if len(given) != 1:
            return "pass exactly one of offer_id, product_id, sku"
        values = body[given[0]]
        if not isinstance(values, list):
            return f"{given[0]} must be an array"
        if len(values) > 1000:
            return f"{given[0]}: at most 1000 values per request, got {len(values)}"
        if given[0] != "offer_id" and not all(str(value).isdigit() for value in values):
            return f"{given[0]}: values must be int64"
        return None

    def _info(self, body: dict[str, Any]) -> Reply:
        kind = next(kind for kind in ID_KINDS if body.get(kind))
        wanted = {str(value) for value in body[kind]}
        with self._lock:
            items = [product.info_item() for product in self.products.values() if str(getattr(product, kind)) in wanted]
        return json_reply(200, {"items": items})

    @staticmethod
    def _check_list(body: dict[str, Any]) -> str | None:
        visibility = (body.get("filter") or {}).get("visibility", "ALL")
        if visibility not in VISIBILITY:
            return f"filter.visibility: unknown value {visibility}"
        limit = body.get("limit", 100)
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            return "limit must be between 1 and 1000"
        if not isinstance(body.get("last_id", ""), str):
            return "last_id must be a string"
        return None

    def _list(self, body: dict[str, Any]) -> Reply:
        limit = body.get("limit", 100)
        last_id = body.get("last_id", "")
        start = int(base64.b64decode(last_id).decode()) if last_id else 0
        with self._lock:
            ordered = sorted(self.products.values(), key=lambda product: product.product_id)
        page = ordered[start : start + limit]
        end = start + len(page)
        next_id = base64.b64encode(str(end).encode()).decode() if end < len(ordered) else ""
        items = [
            {"product_id": p.product_id, "offer_id": p.offer_id, "archived": False, "has_fbo_stocks": False}
            for p in page
        ]
        return json_reply(200, {"result": {"items": items, "total": len(ordered), "last_id": next_id}})

    @staticmethod
    def _check_import(body: dict[str, Any]) -> str | None:
        items = body.get("items")
        if not isinstance(items, list) or not 1 <= len(items) <= 100:
            return "items: from 1 to 100 products per request"
        for item in items:
            if not isinstance(item, dict) or not item.get("offer_id"):
                return "items.offer_id is required"
            images = item.get("images") or []
            if not isinstance(images, list) or len(images) > 30:
                return "items.images: at most 30 images"
            for url in [*images, item.get("primary_image") or "", item.get("color_image") or ""]:
                if url and not str(url).startswith(("http://", "https://")):
                    return f"items.images: {url} is not a link"
        return None

    def _import(self, body: dict[str, Any]) -> Reply:
        task_id = next(self._task_ids)
        with self._lock:
            self.tasks[task_id] = ImportTask(items=[dict(item) for item in body["items"]])
        return json_reply(200, {"task_id": task_id})

    @staticmethod
    def _check_task(body: dict[str, Any]) -> str | None:
        return None if isinstance(body.get("task_id"), int) else "task_id is required"

    def _task_info(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            task = self.tasks.get(body["task_id"])
            if task is None:
                return ozon_error(404, 5, "task not found")
            task.polls += 1
            done = task.polls > self.pending_polls
            items = []
            for item in task.items:
                product = next((p for p in self.products.values() if p.offer_id == item["offer_id"]), None)
                failure = self.import_failures.get(item["offer_id"])
                if product is None:
                    missing = {"code": "NOT_FOUND", "message": "product not found", "field": "offer_id"}
                    status, errors = "failed", [missing]
                elif failure is not None and done:
                    status, errors = "failed", [{"code": "IMAGE_FAILED", "message": failure, "field": "images"}]
                else:
                    status, errors = ("imported" if done else "pending"), []
                if done and status == "imported" and product is not None and not task.applied:
                    # The import replaces every picture; the first becomes the main one.
                    product.primary_image = [item["primary_image"]] if item.get("primary_image") else []
                    product.images = list(item.get("images") or [])
                    if item.get("color_image"):
                        product.color_image = [item["color_image"]]
                items.append(
                    {
                        "offer_id": item["offer_id"],
                        "product_id": product.product_id if product else 0,
                        "status": status,
                        "errors": errors,
                    }
                )
            if done:
                task.applied = True
        return json_reply(200, {"result": {"items": items, "total": len(items)}})

    @staticmethod
    def _check_pictures_info(body: dict[str, Any]) -> str | None:
        ids = body.get("product_id")
        if not isinstance(ids, list) or not 1 <= len(ids) <= 1000:
            return "product_id: from 1 to 1000 values"
        return None

    def _pictures_info(self, body: dict[str, Any]) -> Reply:
        wanted = {int(value) for value in body["product_id"]}
        with self._lock:
            items = [
                {
                    "product_id": p.product_id,
                    "primary_photo": list(p.primary_image),
                    "photo": list(p.images),
                    "color_photo": list(p.color_image),
                    "photo_360": [],
                    "errors": [],
                }
                for p in self.products.values()
                if p.product_id in wanted
            ]
        return json_reply(200, {"items": items})
