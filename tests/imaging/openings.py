"""Scenes of products with openings, with a known answer: frames, bags and mugs with ring handles,
spoked wheels, bicycles and chairs.

Each product is a shape drawn at 4x and reduced (so its rim is anti-aliased as a photo's is) and
filled with a real texture: a crop of a real photo in tests/data (wood planks, red paint, navy cloth,
fur, rock). It is composited, I = a*F + (1-a)*B, onto a plain colour, a studio backdrop or a busy
real photo (a garage, rocks and plants, a launch pad at dusk). The truth is the shape's own alpha:
through every opening the backdrop shows, as it does in a photo.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

DATA = Path(__file__).resolve().parents[1] / "data"
SUPER = 4  # drawing scale: shapes are drawn 4x larger and reduced with area averaging
UInt8Array = npt.NDArray[np.uint8]
Float32Array = npt.NDArray[np.float32]
Point = tuple[float, float]


@dataclass(frozen=True)
class Scene:
    name: str
    kind: str
    backdrop: str
    rgb: UInt8Array
    alpha: Float32Array

    @property
    def truth(self) -> npt.NDArray[np.bool_]:
        return self.alpha >= 0.5


@cache
def photo(name: str) -> UInt8Array:
    with Image.open(DATA / name) as image:
        if name.startswith("camera"):
            image.draft("RGB", (912, 684))
        return np.asarray(image.convert("RGB"))


def _window(name: str, box: tuple[int, int, int, int], size: tuple[int, int]) -> UInt8Array:
    x0, y0, x1, y1 = box
    return np.asarray(cv2.resize(photo(name)[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA))


# Materials: crops of real photos (file, box x0, y0, x1, y1).
MATERIALS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "wood": ("motorcycle_left.png", (62, 12, 112, 100)),
    "red-paint": ("motorcycle_left.png", (345, 180, 440, 232)),
    "navy-cloth": ("grace_hopper.jpg", (20, 470, 150, 600)),
    "fur": ("chelsea.png", (170, 10, 290, 90)),
    "rock": ("camera_3648x2736.jpg", (430, 260, 600, 420)),
    "black-rubber": ("motorcycle_left.png", (240, 172, 330, 200)),
}


def material(name: str, size: tuple[int, int]) -> UInt8Array:
    file, box = MATERIALS[name]
    return _window(file, box, size)


def _gradient(top: tuple[int, int, int], bottom: tuple[int, int, int], size: tuple[int, int]) -> UInt8Array:
    t = np.linspace(0.0, 1.0, size[1], dtype=np.float32)[:, None, None]
    row = (1 - t) * np.array(top, np.float32) + t * np.array(bottom, np.float32)
    return np.broadcast_to(row, (size[1], size[0], 3)).round().astype(np.uint8)


def _studio(base: tuple[int, int, int], size: tuple[int, int]) -> UInt8Array:
    """A light falloff around the middle, as a softbox on a paper sweep gives."""
    width, height = size
    light = np.array([min(255, c + 40) for c in base], np.float32)
    ys = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    falloff = np.clip(np.sqrt(xs * xs + ys * ys) / 1.4, 0.0, 1.0)[..., None] ** 1.5
    return np.rint(light + (np.array(base, np.float32) - light) * falloff).astype(np.uint8)


# Backdrops by group: plain colours, studio sweeps and busy real photos.
def backdrop(name: str, size: tuple[int, int]) -> UInt8Array:
    width, height = size
    if name == "plain-white":
        return np.full((height, width, 3), 248, np.uint8)
    if name == "plain-grey":
        return np.full((height, width, 3), (206, 206, 203), np.uint8)
    if name == "studio-grey":
        return _studio((190, 190, 192), size)
    if name == "studio-warm":
        return _gradient((250, 243, 232), (214, 196, 172), size)
    aspect = width / height
    if name == "busy-garage":
        # Shelves of boxes and tins, or the workshop wall with tools and a bench (the motorcycle left out).
        box = (565, 0, 741, 235) if aspect < 1 else (0, 0, 213, 160)
        return _window("motorcycle_left.png", box, size)
    if name == "busy-rocks":
        h = 600
        w = min(900, round(h * aspect))
        return _window("camera_3648x2736.jpg", (900 - w, 40, 900, 40 + h), size)
    if name == "busy-launchpad":
        h = 420
        w = min(640, round(h * aspect))
        return _window("rocket.jpg", (0, 0, w, h), size)
    raise ValueError(name)


def group_of(backdrop_name: str) -> str:
    return backdrop_name.split("-")[0]


class Canvas:
    """A supersampled drawing surface: one mask per material, in scene coordinates."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size
        self.layers: dict[str, UInt8Array] = {}

    def _layer(self, name: str) -> UInt8Array:
        if name not in self.layers:
            self.layers[name] = np.zeros((self.size[1] * SUPER, self.size[0] * SUPER), np.uint8)
        return self.layers[name]

    @staticmethod
    def _p(point: Point) -> tuple[int, int]:
        return round(point[0] * SUPER), round(point[1] * SUPER)

    def polygon(self, name: str, points: list[Point]) -> None:
        cv2.fillPoly(self._layer(name), [np.array([self._p(p) for p in points], np.int32)], 255)

    def rect(self, name: str, x0: float, y0: float, x1: float, y1: float) -> None:
        self.polygon(name, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)])

    def hole(self, x0: float, y0: float, x1: float, y1: float) -> None:
        for layer in self.layers.values():
            cv2.rectangle(layer, self._p((x0, y0)), self._p((x1, y1)), 0, -1)

    def line(self, name: str, a: Point, b: Point, width: float) -> None:
        cv2.line(self._layer(name), self._p(a), self._p(b), 255, max(1, round(width * SUPER)))

    def disc(self, name: str, centre: Point, radius: float) -> None:
        cv2.circle(self._layer(name), self._p(centre), round(radius * SUPER), 255, -1)

    def ring(self, name: str, centre: Point, radius: float, width: float) -> None:
        cv2.circle(self._layer(name), self._p(centre), round(radius * SUPER), 255, max(1, round(width * SUPER)))

    def arc(self, name: str, centre: Point, axes: Point, start: float, end: float, width: float) -> None:
        cv2.ellipse(
            self._layer(name),
            self._p(centre),
            self._p(axes),
            0,
            start,
            end,
            255,
            max(1, round(width * SUPER)),
        )

    def render(self, background: UInt8Array) -> tuple[UInt8Array, Float32Array]:
        """The composite and its true alpha; later layers cover earlier ones."""
        width, height = self.size
        colour = np.zeros((height, width, 3), np.float32)
        alpha = np.zeros((height, width), np.float32)
        for name, layer in self.layers.items():
            a = np.asarray(cv2.resize(layer, (width, height), interpolation=cv2.INTER_AREA), np.float32) / 255.0
            texture = material(name, (width, height)).astype(np.float32)
            colour = texture * a[..., None] + colour * (1.0 - a[..., None])
            alpha = a + alpha * (1.0 - a)
        # `colour` is premultiplied by `alpha` by construction.
        scene = colour + background.astype(np.float32) * (1.0 - alpha[..., None])
        return np.clip(np.rint(scene), 0, 255).astype(np.uint8), alpha


def frame_large(c: Canvas, body: str) -> None:
    """A picture frame whose opening is most of it."""
    w, h = c.size
    x0, y0, x1, y1 = 0.18 * w, 0.16 * h, 0.82 * w, 0.8 * h
    c.rect(body, x0, y0, x1, y1)
    border = 0.075 * (x1 - x0)
    c.hole(x0 + border, y0 + border, x1 - border, y1 - border)


def frame_small(c: Canvas, body: str) -> None:
    """A wide mount with a small window."""
    w, h = c.size
    x0, y0, x1, y1 = 0.2 * w, 0.2 * h, 0.8 * w, 0.78 * h
    c.rect(body, x0, y0, x1, y1)
    bw, bh = 0.33 * (x1 - x0), 0.34 * (y1 - y0)
    c.hole(x0 + bw, y0 + bh, x1 - bw, y1 - bh)


def bag(c: Canvas, body: str) -> None:
    """A tote with a ring handle on top: the loop shows what is behind the bag."""
    w, h = c.size
    top, bottom = 0.42 * h, 0.84 * h
    c.polygon(body, [(0.2 * w, top), (0.8 * w, top), (0.84 * w, bottom), (0.16 * w, bottom)])
    c.arc(body, (0.5 * w, top + 2), (0.2 * w, 0.22 * h), 180, 360, 0.035 * w)


def mug(c: Canvas, body: str) -> None:
    """A mug with a D-shaped handle on its side."""
    w, h = c.size
    c.arc(body, (0.66 * w, 0.52 * h), (0.16 * w, 0.13 * h), -90, 90, 0.055 * w)
    c.rect(body, 0.22 * w, 0.34 * h, 0.68 * w, 0.74 * h)


def wheel(c: Canvas, tyre: str, metal: str, centre: Point, radius: float, spokes: int = 24) -> None:
    """A tyre, a rim, a hub and thin crossed spokes."""
    c.ring(tyre, centre, radius * 0.93, radius * 0.14)
    c.ring(metal, centre, radius * 0.8, radius * 0.05)
    spoke = max(1.3, radius * 0.018)
    for index in range(spokes):
        angle = 2 * math.pi * index / spokes
        hub_angle = angle + (0.35 if index % 2 else -0.35)
        hub = (centre[0] + 0.09 * radius * math.cos(hub_angle), centre[1] + 0.09 * radius * math.sin(hub_angle))
        end = (centre[0] + 0.79 * radius * math.cos(angle), centre[1] + 0.79 * radius * math.sin(angle))
        c.line(metal, hub, end, spoke)
    c.disc(metal, centre, radius * 0.12)


def spoked_wheel(c: Canvas, body: str) -> None:
    w, h = c.size
    wheel(c, "black-rubber", body, (0.5 * w, 0.5 * h), 0.36 * min(w, h) / 0.75 * 0.75)


def bicycle(c: Canvas, body: str) -> None:
    """Two spoked wheels and a tube frame: many openings, two contacts with the ground."""
    w, h = c.size
    r = 0.19 * w
    ground = 0.8 * h
    back, front = (0.26 * w, ground - r), (0.74 * w, ground - r)
    wheel(c, "black-rubber", "wood" if body == "wood" else "navy-cloth", back, r, 20)
    wheel(c, "black-rubber", "wood" if body == "wood" else "navy-cloth", front, r, 20)
    seat, crank, head = (0.42 * w, ground - 2.05 * r), (0.47 * w, ground - r), (0.68 * w, ground - 2.1 * r)
    tube = 0.016 * w
    for a, b in ((back, seat), (back, crank), (seat, crank), (seat, head), (crank, head), (head, front)):
        c.line(body, a, b, tube)
    c.line(body, (seat[0] - 0.04 * w, seat[1] - 0.02 * h), (seat[0] + 0.04 * w, seat[1] - 0.02 * h), 0.02 * w)
    c.line(body, head, (head[0] - 0.03 * w, head[1] - 0.07 * h), tube)
    c.line(body, (head[0] - 0.07 * w, head[1] - 0.07 * h), (head[0] + 0.02 * w, head[1] - 0.07 * h), tube)


def chair(c: Canvas, body: str) -> None:
    """A slatted chair in three-quarter view: legs, rails and the gaps between them."""
    w, h = c.size
    leg = 0.035 * w
    front_y, back_y = 0.86 * h, 0.8 * h
    seat_front, seat_back = 0.54 * h, 0.5 * h
    fl, fr, bl, br = 0.24 * w, 0.66 * w, 0.34 * w, 0.78 * w
    for x, foot, top in ((bl, back_y, seat_back), (br, back_y, seat_back)):
        c.line(body, (x, top), (x, foot), leg * 0.9)
    c.polygon(body, [(fl, seat_front), (fr, seat_front), (br, seat_back), (bl, seat_back)])
    c.rect(body, fl - leg / 2, seat_front, fr + leg / 2, seat_front + 0.035 * h)
    for x in (fl, fr):
        c.line(body, (x, seat_front), (x, front_y), leg)
    c.line(body, (fl, 0.74 * h), (fr, 0.74 * h), leg * 0.6)
    # Back: two posts, a top rail and three slats.
    top = 0.14 * h
    for x in (bl, br):
        c.line(body, (x, seat_back), (x + 0.01 * w, top), leg)
    c.rect(body, bl - leg / 2, top, br + leg / 2 + 0.01 * w, top + 0.06 * h)
    for k in (1, 2, 3):
        x = bl + (br - bl) * k / 4
        c.line(body, (x, top + 0.06 * h), (x, seat_back), leg * 0.8)


@dataclass(frozen=True)
class Kind:
    name: str
    draw: Callable[[Canvas, str], None]
    size: tuple[int, int]
    materials: tuple[str, ...]


KINDS = (
    Kind("frame-large", frame_large, (480, 640), ("wood", "navy-cloth", "red-paint")),
    Kind("frame-small", frame_small, (480, 640), ("red-paint", "wood", "fur")),
    Kind("bag-handle", bag, (480, 640), ("navy-cloth", "red-paint", "wood")),
    Kind("mug-handle", mug, (640, 480), ("red-paint", "navy-cloth", "rock")),
    Kind("spoked-wheel", spoked_wheel, (640, 480), ("rock", "wood", "red-paint")),
    Kind("bicycle", bicycle, (640, 480), ("wood", "navy-cloth", "wood")),
    Kind("chair", chair, (480, 640), ("navy-cloth", "wood", "red-paint")),
)
BACKDROPS = ("plain-white", "plain-grey", "studio-grey", "studio-warm", "busy-garage", "busy-rocks", "busy-launchpad")


def make(kind: Kind, backdrop_name: str, body: str) -> Scene:
    canvas = Canvas(kind.size)
    kind.draw(canvas, body)
    rgb, alpha = canvas.render(backdrop(backdrop_name, kind.size))
    return Scene(f"{kind.name}/{backdrop_name}", kind.name, backdrop_name, rgb, alpha)


def kind(name: str) -> Kind:
    return next(k for k in KINDS if k.name == name)


def scenes(every: int = 1) -> list[Scene]:
    """Each kind on a plain, a studio and a busy backdrop (rotating which), its material rotating too."""
    out: list[Scene] = []
    plain = [b for b in BACKDROPS if b.startswith("plain")]
    studio = [b for b in BACKDROPS if b.startswith("studio")]
    busy = [b for b in BACKDROPS if b.startswith("busy")]
    for index, k in enumerate(KINDS):
        picks = (plain[index % len(plain)], studio[index % len(studio)], busy[index % len(busy)])
        for slot, name in enumerate(picks):
            if (index * 3 + slot) % every == 0:
                out.append(make(k, name, k.materials[slot]))
    return out
