"""Ozon's photo requirements as a pure check of one picture: would moderation or the import refuse it?

Sources (looked up in November 2026; Ozon changes them now and then, so each rule names its source):
- Seller API, `/v2/product/pictures/import`: pictures are public links to JPG or PNG files; at most
  30 per product, the first is the main one.
- Seller knowledge base, "Working with images" (docs.ozon.com/global/en/products/upload/adding-content/images):
  1 main + 29 additional pictures; a 3:4 picture is shown in full, any other is stretched to the
  8-point grid or shown with margins at the top and bottom.
- Seller knowledge base, photo requirements: JPEG/JPG/PNG up to 10 MB, 200 to 7680 px per side
  (clothing, shoes and accessories at least 900 x 1200); the main picture shows the product on a
  white or light background (black only for light-coloured products).

`problems` are what would be refused (the import fails, or moderation rejects the card); `advice`
is what passes but shows worse. `ok` is true when there are no problems.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ACCEPTED_FORMATS = frozenset({"jpeg", "png"})
MAX_BYTES = 10 * 1024 * 1024
MIN_SIDE = 200
MAX_SIDE = 7680
# Ozon's size for clothing, shoes and accessories, and the size below which zoom does not work well.
RECOMMENDED_SIZE = (900, 1200)
TARGET_RATIO = 3 / 4
# 1500x2000 and 1200x1600 are exact; a pixel or two of rounding on either side is still 3:4 on screen.
RATIO_TOLERANCE = 0.01
# Border pixels that must be light (luma >= 200 of 255) for the main picture's background to count as
# white or light, and the spread (standard deviation of luma) above which the backdrop looks busy.
LIGHT_SHARE_MIN = 0.75
BUSY_SPREAD = 40.0


@dataclass(frozen=True, slots=True)
class PictureFacts:
    """What the check needs to know about one encoded picture."""

    format: str
    size_bytes: int
    width: int
    height: int
    has_alpha: bool = False
    # Border measurements (see `imaging.border`); None when they were not taken.
    border_luma: float | None = None
    light_share: float | None = None
    border_spread: float | None = None


@dataclass(frozen=True, slots=True)
class OzonCheck:
    problems: tuple[str, ...] = ()
    advice: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems

    def view(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": list(self.problems), "advice": list(self.advice)}


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def check_picture(facts: PictureFacts, *, main: bool) -> OzonCheck:
    """Check one picture against Ozon's requirements; `main` applies the main picture's own rules too."""
    problems: list[str] = []
    advice: list[str] = []
    fmt = facts.format.lower()
    if fmt == "jpg":
        fmt = "jpeg"
    if fmt not in ACCEPTED_FORMATS:
        problems.append(f"format {facts.format.upper()}: Ozon's picture import takes JPG or PNG only")
    if facts.size_bytes > MAX_BYTES:
        problems.append(f"{_megabytes(facts.size_bytes)} is above Ozon's 10 MB limit per picture")
    width, height = facts.width, facts.height
    if min(width, height) < MIN_SIDE:
        problems.append(f"{width}x{height} px: Ozon needs at least {MIN_SIDE} px on each side")
    if max(width, height) > MAX_SIDE:
        problems.append(f"{width}x{height} px: Ozon takes at most {MAX_SIDE} px on each side")
    if width > 0 and height > 0:
        ratio = width / height
        if abs(ratio / TARGET_RATIO - 1) > RATIO_TOLERANCE:
            advice.append(f"{width}x{height} px is not 3:4: Ozon shows it stretched or with margins instead of in full")
    need_w, need_h = RECOMMENDED_SIZE
    if min(width, height) >= MIN_SIDE and (width < need_w or height < need_h) and width * height < need_w * need_h:
        advice.append(
            f"{width}x{height} px is below {need_w}x{need_h}: too small for clothing, shoes and accessories, "
            "and too small to zoom"
        )
    if main:
        _main_rules(facts, problems, advice)
    return OzonCheck(problems=tuple(problems), advice=tuple(advice))


def _main_rules(facts: PictureFacts, problems: list[str], advice: list[str]) -> None:
    if facts.light_share is not None and facts.light_share < LIGHT_SHARE_MIN:
        luma = f", mean brightness {facts.border_luma:.0f}/255" if facts.border_luma is not None else ""
        problems.append(
            f"main picture: the background is not white or light ({facts.light_share:.0%} of the border is light"
            f"{luma}); Ozon asks for a white or light background (black only for light-coloured products)"
        )
    elif facts.border_spread is not None and facts.border_spread > BUSY_SPREAD:
        advice.append("main picture: the background is light but busy; a plain backdrop shows the product best")
    if facts.has_alpha:
        advice.append("main picture: has transparent areas, which Ozon shows on its own background")
