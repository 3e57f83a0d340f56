"""Plain data the Ozon Seller API client takes and returns, and the rules that shape it.

Shapes follow the Seller API reference (docs.ozon.ru/api/seller):
- `POST /v3/product/info/list` (ProductAPI_GetProductInfoList) answers `{"items": [...]}` where each item
  has `id` (the product_id), `offer_id`, `sku`, `name`, `primary_image: [url]`, `images: [url, ...]`
  (site order; "if primary_image is not given, the first image is the main one") and
  `color_image: [url]`.
- `POST /v3/product/list` answers `{"result": {"items": [{"product_id", "offer_id", ...}], "total",
  "last_id"}}`; `last_id` is empty on the last page.
- `POST /v2/product/pictures/import` (ProductImportPicturesV2) takes `{"items": [{"offer_id",
  "primary_image", "color_image", "images": [...]}]}` (at most 100 items, 30 images each, public
  JPG/PNG URLs; the list replaces every picture, the first is the main one) and answers `{"task_id"}`.
- `POST /v1/product/import/info` takes `{"task_id"}` and answers `{"result": {"items": [{"offer_id",
  "product_id", "status", "errors": [...]}], "total"}}`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import SecretStr

IdField = Literal["offer_id", "product_id", "sku"]
ID_FIELDS: tuple[IdField, ...] = ("offer_id", "product_id", "sku")

# Per call of /v3/product/info/list and per page of /v3/product/list.
MAX_IDS_PER_CALL = 1000
# Per call of /v2/product/pictures/import, and pictures per product.
MAX_IMPORT_ITEMS = 100
MAX_PICTURES = 30
# Ozon's own limit on an offer_id (article) string.
MAX_OFFER_ID_LENGTH = 50


@dataclass(frozen=True, slots=True)
class OzonCredentials:
    """A seller's Client-Id and Api-Key. The key never shows in `repr`, logs or error messages."""

    client_id: str
    api_key: SecretStr

    def __repr__(self) -> str:
        return "OzonCredentials(client_id=<hidden>, api_key=<hidden>)"

    def secrets(self) -> tuple[str, str]:
        """Both values, for scrubbing them out of anything Ozon echoes back."""
        return self.client_id, self.api_key.get_secret_value()


@dataclass(frozen=True, slots=True)
class OzonProduct:
    """One product and its pictures: `images` in site order, the main one first, no duplicates."""

    product_id: int
    offer_id: str
    sku: int | None
    name: str
    images: tuple[str, ...]
    # The marketing colour swatch: not a product photo, but kept when pictures are replaced.
    color_image: str | None = None

    def view(self) -> dict[str, Any]:
        return {
            "offer_id": self.offer_id,
            "product_id": self.product_id,
            "sku": self.sku,
            "name": self.name,
            "images": list(self.images),
            "color_image": self.color_image,
        }


@dataclass(frozen=True, slots=True)
class ProductError:
    """A selected id that gave no product (unknown to this account, or malformed)."""

    id: str
    error: str

    def view(self) -> dict[str, str]:
        return {"id": self.id, "error": self.error}


@dataclass(slots=True)
class ProductLookup:
    """Products for a selection, in the order of the selection, and the ids that found none."""

    products: list[OzonProduct] = field(default_factory=list)
    errors: list[ProductError] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CataloguePage:
    """One page of `/v3/product/list`: its product ids and where the next page starts ("" at the end)."""

    product_ids: list[int]
    last_id: str
    total: int | None


@dataclass(frozen=True, slots=True)
class PictureImport:
    """The full picture list one product should have after an import (main first)."""

    offer_id: str
    images: tuple[str, ...]
    color_image: str | None = None

    def body(self) -> dict[str, Any]:
        item: dict[str, Any] = {"offer_id": self.offer_id, "images": list(self.images)}
        if self.color_image:
            item["color_image"] = self.color_image
        return item


@dataclass(frozen=True, slots=True)
class ImportItemStatus:
    """How the import of one product went, per `/v1/product/import/info`."""

    offer_id: str
    product_id: int | None
    # Ozon's words: "pending", "imported", "failed", "skipped"...
    status: str
    errors: tuple[str, ...] = ()


def merge_images(primary: Iterable[str], images: Iterable[str]) -> tuple[str, ...]:
    """The pictures in site order, main first, each once.

    Ozon may return the main picture only in `primary_image`, or in both fields: take both, drop
    repeats (and blanks), keep the first occurrence's place.
    """
    seen: set[str] = set()
    merged: list[str] = []
    for url in (*primary, *images):
        url = url.strip()
        if url and url not in seen:
            seen.add(url)
            merged.append(url)
    return tuple(merged)


def _strings(value: Any) -> list[str]:
    # Ozon documents these as string arrays; a lone string from an older version is taken too.
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def _int_or_none(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def product_from_item(item: dict[str, Any]) -> OzonProduct | None:
    """An `OzonProduct` from one `/v3/product/info/list` item, None when it has no usable product id."""
    product_id = _int_or_none(item.get("id", item.get("product_id")))
    if product_id is None:
        return None
    colors = _strings(item.get("color_image"))
    return OzonProduct(
        product_id=product_id,
        offer_id=str(item.get("offer_id") or ""),
        sku=_int_or_none(item.get("sku")),
        name=str(item.get("name") or ""),
        images=merge_images(_strings(item.get("primary_image")), _strings(item.get("images"))),
        color_image=colors[0] if colors else None,
    )


def item_key(product: OzonProduct, id_field: IdField) -> str:
    """The value of `id_field` for a product, as the caller wrote it in a selection."""
    if id_field == "offer_id":
        return product.offer_id
    if id_field == "product_id":
        return str(product.product_id)
    return str(product.sku) if product.sku is not None else ""


def normalize_ids(ids: Sequence[str | int], id_field: IdField) -> tuple[list[str], list[ProductError]]:
    """Selection ids as Ozon wants them, each once; malformed ones become errors, never a failed call."""
    valid: list[str] = []
    errors: list[ProductError] = []
    seen: set[str] = set()
    for raw in ids:
        text = str(raw).strip()
        if text in seen:
            continue
        seen.add(text)
        if not text:
            errors.append(ProductError(id=text, error=f"empty {id_field}"))
        elif id_field != "offer_id" and (not text.isascii() or not text.isdigit() or int(text) == 0):
            errors.append(ProductError(id=text, error=f"{id_field} must be a positive whole number"))
        elif id_field == "offer_id" and len(text) > MAX_OFFER_ID_LENGTH:
            errors.append(ProductError(id=text, error=f"offer_id is longer than {MAX_OFFER_ID_LENGTH} characters"))
        else:
            valid.append(str(int(text)) if id_field != "offer_id" else text)
    return valid, errors


def chunks(values: Sequence[str], size: int = MAX_IDS_PER_CALL) -> list[list[str]]:
    return [list(values[start : start + size]) for start in range(0, len(values), size)]


def import_error_text(error: Any) -> str:
    """One line from an error object of `/v1/product/import/info` (its fields vary by kind)."""
    if not isinstance(error, dict):
        return str(error)
    code = error.get("code") or ""
    words = error.get("message") or error.get("description") or error.get("attribute_name") or ""
    field_name = error.get("field") or ""
    text = ": ".join(part for part in (str(code), str(words)) if part)
    return f"{text} ({field_name})" if field_name else text or "unspecified error"
