"""An async client of the Ozon Seller API: products and their pictures, and picture imports.

One instance (one `httpx.AsyncClient`, one connection pool) serves every seller: credentials are
passed per call and go only into that call's `Client-Id` / `Api-Key` headers. They are never logged,
never put in an error message (anything Ozon echoes is scrubbed of them) and never stored.

Ozon's limits and errors, as its reference and changelog describe them (docs.ozon.ru/api/seller):
- about 50 requests per second per Client-Id over all methods: a client-side leaky bucket per
  Client-Id keeps us under it, so a big catalogue does not trip the limit in the first place;
- `429` with `{"code": 8, "message": "You have reached request rate limit per second"}` and a
  `Retry-After` header (seconds): wait and retry; picture and product imports also have per-item
  limits answered with `Item-Retry-After` (minutes);
- "Circle is open": Ozon's circuit breaker has blocked the method for this account for some minutes;
  retrying only keeps it open, so the call stops with `OzonCircleOpen`;
- a wrong Api-Key (`404` code 5, or `403` code 7 "Invalid Api-Key") and a wrong Client-Id (`400` code 3
  naming the Client-Id) become `OzonAuthError`;
- ids that match no product simply do not come back from `/v3/product/info/list`: they become
  per-product errors, never a failed request.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import httpx
from aiolimiter import AsyncLimiter

from capability_service import __version__
from capability_service.marketplaces.ozon_errors import (
    OzonAuthError,
    OzonCircleOpen,
    OzonError,
    OzonRateLimited,
    OzonRequestRejected,
    OzonUnavailable,
)
from capability_service.marketplaces.ozon_types import (
    MAX_IDS_PER_CALL,
    MAX_IMPORT_ITEMS,
    CataloguePage,
    IdField,
    ImportItemStatus,
    OzonCredentials,
    OzonProduct,
    PictureImport,
    ProductError,
    ProductLookup,
    chunks,
    import_error_text,
    item_key,
    normalize_ids,
    product_from_item,
)

log = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://api-seller.ozon.ru"
# Ozon's documented limit: 50 requests per second per Client-Id, all methods together.
DEFAULT_RATE_PER_SECOND = 50.0
# Statuses worth another attempt besides 429: Ozon's gateway answers these while it recovers.
_TRANSIENT = frozenset({500, 502, 503, 504})
# Limiters of this many Client-Ids are kept; the least recently used one is forgotten first.
_MAX_LIMITERS = 1024

Sleep = Callable[[float], Awaitable[None]]


def scrub(text: str, secrets: Sequence[str]) -> str:
    """`text` with every credential replaced, so nothing Ozon echoes can leak one."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<hidden>")
    return text


def _brief(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _header_seconds(headers: httpx.Headers) -> float | None:
    """The wait Ozon asks for: `Retry-After` in seconds, else `Item-Retry-After` in minutes."""
    for name, scale in (("retry-after", 1.0), ("item-retry-after", 60.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw.strip())
        except ValueError:
            continue
        if value >= 0:
            return value * scale
    return None


class OzonSellerClient:
    """Calls the Seller API with a per-Client-Id rate limit, retries and typed errors."""

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_API_BASE,
        timeout: float = 30.0,
        rate_per_second: float = DEFAULT_RATE_PER_SECOND,
        max_retries: int = 4,
        max_wait: float = 60.0,
        sleep: Sleep = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.rate_per_second = rate_per_second
        self.max_retries = max_retries
        # A wait longer than this (a per-minute import limit, say) is reported instead of slept through.
        self.max_wait = max_wait
        self._sleep = sleep
        self._rng = random.Random()
        self._limiters: OrderedDict[str, AsyncLimiter] = OrderedDict()
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
            headers={"User-Agent": f"capability-service/{__version__}", "Accept": "application/json"},
            transport=transport,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )

    async def close(self) -> None:
        await self._client.aclose()

    # -- the methods ----------------------------------------------------------------------------

    async def product_info(self, creds: OzonCredentials, ids: Sequence[str], id_field: IdField) -> ProductLookup:
        """Every product of a selection (in its order), and an error for each id that found none."""
        lookup = ProductLookup()
        async for part in self.iter_product_info(creds, ids, id_field):
            lookup.products.extend(part.products)
            lookup.errors.extend(part.errors)
        return lookup

    async def iter_product_info(
        self, creds: OzonCredentials, ids: Sequence[str], id_field: IdField
    ) -> AsyncIterator[ProductLookup]:
        """The selection in parts of at most 1000 ids (one `/v3/product/info/list` call each)."""
        valid, invalid = normalize_ids(ids, id_field)
        if invalid:
            yield ProductLookup(errors=invalid)
        for part in chunks(valid, MAX_IDS_PER_CALL):
            # product_id and sku travel as strings of digits (int64 in JSON would lose precision in JS clients).
            payload = await self._call(creds, "/v3/product/info/list", {id_field: part})
            found: dict[str, OzonProduct] = {}
            for item in payload.get("items") or []:
                product = product_from_item(item) if isinstance(item, dict) else None
                if product is not None:
                    found.setdefault(item_key(product, id_field), product)
            lookup = ProductLookup()
            for wanted in part:
                product = found.get(wanted)
                if product is None:
                    missing = f"no product with this {id_field} in the account"
                    lookup.errors.append(ProductError(id=wanted, error=missing))
                else:
                    lookup.products.append(product)
            yield lookup

    async def list_page(
        self, creds: OzonCredentials, last_id: str = "", limit: int = MAX_IDS_PER_CALL
    ) -> CataloguePage:
        """One page of the whole catalogue (`/v3/product/list`, every product but archived ones)."""
        limit = max(1, min(limit, MAX_IDS_PER_CALL))
        payload = await self._call(
            creds, "/v3/product/list", {"filter": {"visibility": "ALL"}, "last_id": last_id, "limit": limit}
        )
        result = payload.get("result")
        if not isinstance(result, dict):
            raise OzonUnavailable("Ozon answered /v3/product/list without a result")
        product_ids: list[int] = []
        for item in result.get("items") or []:
            try:
                product_ids.append(int(item["product_id"]))
            except (KeyError, TypeError, ValueError):
                continue
        total = result.get("total")
        return CataloguePage(
            product_ids=product_ids,
            last_id=str(result.get("last_id") or ""),
            total=total if isinstance(total, int) else None,
        )

    async def catalogue_page(
        self, creds: OzonCredentials, last_id: str = "", limit: int = MAX_IDS_PER_CALL
    ) -> tuple[ProductLookup, str]:
        """A page of the catalogue with each product's pictures, and the `last_id` of the next page."""
        page = await self.list_page(creds, last_id, limit)
        if not page.product_ids:
            return ProductLookup(), ""
        lookup = await self.product_info(creds, [str(pid) for pid in page.product_ids], "product_id")
        # A product listed a moment ago and gone now is not an error of the caller's selection.
        lookup.errors = [error for error in lookup.errors if not error.error.startswith("no product")]
        # An empty page token after a full page would loop forever on a misbehaving server: stop instead.
        next_id = page.last_id if page.last_id != last_id else ""
        return lookup, next_id

    async def import_pictures(self, creds: OzonCredentials, items: Sequence[PictureImport]) -> int:
        """Replace the pictures of up to 100 products (`/v2/product/pictures/import`); returns the task id."""
        if not 1 <= len(items) <= MAX_IMPORT_ITEMS:
            raise ValueError(f"a picture import takes 1 to {MAX_IMPORT_ITEMS} products, not {len(items)}")
        payload = await self._call(creds, "/v2/product/pictures/import", {"items": [item.body() for item in items]})
        task_id = payload.get("task_id")
        if not isinstance(task_id, int) or task_id <= 0:
            raise OzonUnavailable("Ozon accepted the picture import but gave no task id")
        return task_id

    async def import_info(self, creds: OzonCredentials, task_id: int) -> list[ImportItemStatus]:
        """Where an import task stands, per product (`/v1/product/import/info`)."""
        payload = await self._call(creds, "/v1/product/import/info", {"task_id": task_id})
        result = payload.get("result") or {}
        statuses = []
        for item in result.get("items") or [] if isinstance(result, dict) else []:
            if not isinstance(item, dict):
                continue
            product_id = item.get("product_id")
            statuses.append(
                ImportItemStatus(
                    offer_id=str(item.get("offer_id") or ""),
                    product_id=int(product_id) if isinstance(product_id, int) and product_id > 0 else None,
                    status=str(item.get("status") or "unknown"),
                    errors=tuple(import_error_text(error) for error in item.get("errors") or []),
                )
            )
        return statuses

    async def picture_errors(self, creds: OzonCredentials, product_ids: Sequence[int]) -> dict[int, list[str]]:
        """Per product, the pictures Ozon could not take (`/v2/product/pictures/info`), as "url: reason"."""
        found: dict[int, list[str]] = {}
        for part in chunks([str(pid) for pid in product_ids], MAX_IDS_PER_CALL):
            payload = await self._call(creds, "/v2/product/pictures/info", {"product_id": part})
            for item in payload.get("items") or []:
                if not isinstance(item, dict) or not isinstance(item.get("product_id"), int):
                    continue
                problems = [
                    f"{error.get('url', '')}: {error.get('message', 'rejected')}"
                    for error in item.get("errors") or []
                    if isinstance(error, dict)
                ]
                found[item["product_id"]] = problems
        return found

    # -- transport ------------------------------------------------------------------------------

    def _limiter(self, client_id: str) -> AsyncLimiter:
        limiter = self._limiters.get(client_id)
        if limiter is None:
            limiter = AsyncLimiter(self.rate_per_second, 1.0)
            self._limiters[client_id] = limiter
            if len(self._limiters) > _MAX_LIMITERS:
                self._limiters.popitem(last=False)
        else:
            self._limiters.move_to_end(client_id)
        return limiter

    async def _call(self, creds: OzonCredentials, path: str, body: dict[str, Any]) -> dict[str, Any]:
        secrets = creds.secrets()
        headers = {"Client-Id": creds.client_id, "Api-Key": creds.api_key.get_secret_value()}
        for attempt in range(self.max_retries + 1):
            await self._limiter(creds.client_id).acquire()
            try:
                response = await self._client.post(path, json=body, headers=headers)
            except httpx.TimeoutException:
                failure: OzonError = OzonUnavailable(f"Ozon did not answer {path} in time")
                wait = self._backoff(attempt)
            except httpx.TransportError as exc:
                reason = scrub(str(exc) or type(exc).__name__, secrets)
                failure = OzonUnavailable(f"could not reach the Ozon Seller API ({self.base_url}): {reason}")
                wait = self._backoff(attempt)
            else:
                try:
                    return self._parse(response, path, secrets)
                except _Retry as retry:
                    failure = retry.error
                    wait = retry.wait if retry.wait is not None else self._backoff(attempt)
            if attempt == self.max_retries or wait > self.max_wait:
                raise failure
            log.info("ozon %s: retrying in %.1f s (%s)", path, wait, failure)
            await self._sleep(wait)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        ceiling = min(8.0, 0.5 * 2**attempt)
        return self._rng.uniform(ceiling / 2, ceiling)

    def _parse(self, response: httpx.Response, path: str, secrets: Sequence[str]) -> dict[str, Any]:
        status = response.status_code
        text = scrub(response.text, secrets)
        payload: Any = None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if status == 200:
            if not isinstance(payload, dict):
                raise OzonUnavailable(f"Ozon answered {path} with something that is not its JSON: {_brief(text, 120)}")
            return payload
        code = payload.get("code") if isinstance(payload, dict) else None
        code = code if isinstance(code, int) else None
        message = payload.get("message") if isinstance(payload, dict) else None
        said = scrub(str(message), secrets) if message else _brief(text, 200)
        if "circle is open" in text.lower():
            raise OzonCircleOpen(
                f'Ozon has blocked {path} for this account for a while (it answered "Circle is open"); '
                "this usually lifts within a few minutes: try again later",
                method=path,
                status=status,
            )
        if status == 429:
            hint = _header_seconds(response.headers)
            limit = "per-item import limit" if "item-retry-after" in response.headers else "request rate limit"
            later = f"in {hint:.0f} s" if hint is not None else "in a few seconds"
            error = OzonRateLimited(
                f"Ozon's {limit} was reached on {path} ({said}); try again {later}",
                retry_after=hint if hint is not None else 5.0,
                code=code,
            )
            raise _Retry(error, hint)
        if status in _TRANSIENT:
            raise _Retry(OzonUnavailable(f"Ozon answered {path} with HTTP {status}: {said}", status=status), None)
        lowered = said.lower()
        if (status == 404 and code == 5) or (status in (401, 403) and ("api-key" in lowered or "api key" in lowered)):
            raise OzonAuthError(
                f"Ozon rejected the Api-Key (HTTP {status}, code {code}: {said}); check the key and its roles "
                "in the seller's Ozon settings",
                which="api_key",
                status=status,
                code=code,
            )
        if status in (400, 401, 403) and "client" in lowered:
            raise OzonAuthError(
                f"Ozon rejected the Client-Id (HTTP {status}, code {code}: {said}); it is the number shown "
                "beside the Api-Key in the seller's Ozon settings",
                which="client_id",
                status=status,
                code=code,
            )
        if status in (401, 403):
            raise OzonAuthError(
                f"Ozon refused the credentials (HTTP {status}, code {code}: {said})",
                which="api_key",
                status=status,
                code=code,
            )
        raise OzonRequestRejected(f"Ozon refused {path} (HTTP {status}, code {code}): {said}", status=status, code=code)


class _Retry(Exception):
    """An answer worth another attempt: the error to raise if none follows, and the wait Ozon asked for
    (None: exponential backoff)."""

    def __init__(self, error: OzonError, wait: float | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.wait = wait
