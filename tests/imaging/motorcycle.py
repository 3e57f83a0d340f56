"""Hand-marked regions of the real motorcycle photo (tests/data/motorcycle_left.png, 741x500).

The photo has no true alpha, so a few boxes were marked by eye at the source's pixels: backdrop seen
through the front wheel's openings (the lit garage floor between its spokes) and product parts that must
stay (headlight, fork, turn signal, tyres, brake disc, seat, tank). The rear wheel's openings show the
floor in shadow and the far side of the wheel, and the bench behind the seat shows through above it;
both are marked too, as what the matte is measured on, not as what it gets right.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

PHOTO = Path(__file__).resolve().parents[1] / "data" / "motorcycle_left.png"
SIZE = (741, 500)
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in source pixels

# Backdrop the matte should remove.
FRONT_WHEEL_FLOOR: dict[str, Box] = {
    "floor between the front spokes, right": (610, 328, 626, 344),
    "floor between the front spokes, low": (618, 386, 634, 398),
}
REAR_WHEEL_FLOOR: dict[str, Box] = {
    "floor between the rear spokes, upper left": (162, 290, 174, 300),
    "floor between the rear spokes, top": (192, 280, 204, 288),
}
BENCH: dict[str, Box] = {"bench above the seat": (150, 145, 215, 160)}
# Product the matte must keep.
PRODUCT: dict[str, Box] = {
    "headlight": (530, 140, 550, 162),
    "fork": (494, 215, 502, 245),
    "turn signal": (468, 180, 482, 196),
    "front tyre": (665, 350, 675, 378),
    "brake disc": (588, 378, 600, 390),
    "seat": (230, 185, 270, 198),
    "tank": (400, 200, 440, 215),
    "rear tyre": (124, 320, 134, 340),
}


def coverage(alpha: npt.NDArray[np.float32], box: Box) -> float:
    """Mean opacity of a source-size matte inside a box."""
    x0, y0, x1, y1 = box
    return float(alpha[y0:y1, x0:x1].mean())
