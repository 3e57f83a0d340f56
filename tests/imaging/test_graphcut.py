"""The two-label graph cut: the least-cost labelling, checked against every labelling of small grids."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt

from capability_service.imaging import graphcut


def _energy(
    backdrop: npt.NDArray[np.bool_],
    region: npt.NDArray[np.bool_],
    cost: npt.NDArray[np.float32],
    right: npt.NDArray[np.float32],
    down: npt.NDArray[np.float32],
) -> float:
    """The energy `min_cut` minimises, written out plainly: pixels outside the region are backdrop."""
    product = region & ~backdrop
    unary = float(np.where(product, np.maximum(cost, 0), np.maximum(-cost, 0))[region].sum())
    pairwise = float(right[product[:, :-1] != product[:, 1:]].sum() + down[product[:-1, :] != product[1:, :]].sum())
    return unary + pairwise


def test_the_cut_is_the_least_cost_labelling_of_every_small_grid() -> None:
    rng = np.random.default_rng(3)
    for _ in range(12):
        region = rng.random((4, 4)) < 0.8
        region[1:3, 1:3] = True
        cost = rng.normal(0.0, 1.0, (4, 4)).astype(np.float32)
        right = rng.uniform(0.0, 1.0, (4, 3)).astype(np.float32)
        down = rng.uniform(0.0, 1.0, (3, 4)).astype(np.float32)
        cut = graphcut.min_cut(region, cost, right, down)
        assert not (cut & ~region).any()
        cells = list(zip(*np.nonzero(region), strict=True))
        best = np.inf
        for labels in itertools.product((False, True), repeat=len(cells)):
            candidate = np.zeros_like(region)
            for (y, x), label in zip(cells, labels, strict=True):
                candidate[y, x] = label
            best = min(best, _energy(candidate, region, cost, right, down))
        # Costs are rounded to 1/1000 for the integer flow: the cut is optimal to that precision.
        assert _energy(cut, region, cost, right, down) <= best + 0.01 * region.size


def test_the_cut_follows_the_photo_edges_through_noisy_votes() -> None:
    # Left half dark, right half light; the votes say "backdrop" on the right, with noise everywhere.
    image = np.zeros((40, 60, 3), np.float32)
    image[:, 30:] = 80.0
    rng = np.random.default_rng(5)
    votes = np.where(np.arange(60) >= 30, 0.4, -0.4)[None, :] + rng.normal(0.0, 0.6, (40, 60))
    region = np.zeros((40, 60), bool)
    region[5:35, 5:55] = True
    right, down = graphcut.edge_weights(image, 1.0)
    cut = graphcut.min_cut(region, votes.astype(np.float32), right, down)
    expected = region.copy()
    expected[:, :30] = False
    # Noise alone would flip about a quarter of the pixels; the cut keeps both halves whole.
    assert float((cut[region] != expected[region]).mean()) < 0.02
    pixelwise = (votes > 0) & region
    assert float((pixelwise[region] != expected[region]).mean()) > 0.2


def test_an_empty_region_cuts_nothing() -> None:
    region = np.zeros((5, 5), bool)
    zeros = np.zeros((5, 5), np.float32)
    cut = graphcut.min_cut(region, zeros, zeros[:, :-1], zeros[:-1, :])
    assert not cut.any()
