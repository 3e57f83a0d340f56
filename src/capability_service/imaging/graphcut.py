"""Two-label segmentation of a pixel region by a minimum graph cut.

Each pixel of the region is labelled product or backdrop so that the total cost is least: a per-pixel
cost for each label (how the pixel's own colour votes) plus a cost for every pair of 4-neighbours that
get different labels, high where the two look alike and low across an edge of the photo (Boykov and
Jolly's interactive segmentation energy, as GrabCut uses it). Pixels outside the region are backdrop.
The cut is solved with SciPy's maximum flow (Dinic's algorithm).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.sparse
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

BoolArray = npt.NDArray[np.bool_]
Float32Array = npt.NDArray[np.float32]

# Flow capacities must be integers: costs are scaled by this and rounded.
_SCALE = 1000.0


def edge_weights(image: Float32Array, smoothness: float) -> tuple[Float32Array, Float32Array]:
    """The cost of cutting between each pixel and its right and its lower neighbour.

    `smoothness * exp(-beta * |I_p - I_q|^2)` with beta the inverse of twice the mean squared
    difference over the image, so that "alike" is judged relative to the photo's own contrast.
    `image` is (H, W, C). Returns (H, W-1) and (H-1, W) arrays.
    """
    right = np.square(image[:, 1:] - image[:, :-1]).sum(axis=-1)
    down = np.square(image[1:] - image[:-1]).sum(axis=-1)
    mean = (float(right.sum()) + float(down.sum())) / max(1, right.size + down.size)
    beta = 1.0 / (2.0 * mean + 1e-6)
    return (
        np.asarray(smoothness * np.exp(-beta * right), np.float32),
        np.asarray(smoothness * np.exp(-beta * down), np.float32),
    )


def min_cut(region: BoolArray, cost: Float32Array, right: Float32Array, down: Float32Array) -> BoolArray:
    """The pixels of `region` labelled backdrop by the least-cost labelling.

    `cost` is the per-pixel cost of labelling a pixel product minus that of labelling it backdrop:
    positive where its colour says backdrop, negative where it says product. `right` and `down` are
    the pairwise costs from `edge_weights`. Only the region's bounding box is built into the graph.
    """
    if not region.any():
        return np.zeros_like(region)
    ys, xs = np.nonzero(region)
    # The bounding box grown by a pixel, so that the region's neighbours outside it are in the box.
    y0, x0 = max(0, int(ys.min()) - 1), max(0, int(xs.min()) - 1)
    y1, x1 = min(region.shape[0], int(ys.max()) + 2), min(region.shape[1], int(xs.max()) + 2)
    inside = region[y0:y1, x0:x1]
    height, width = inside.shape
    count = int(inside.sum())
    index = np.full((height, width), -1, np.int64)
    index[inside] = np.arange(count)
    source, sink = count, count + 1

    heads: list[npt.NDArray[np.int64]] = []
    tails: list[npt.NDArray[np.int64]] = []
    capacities: list[npt.NDArray[np.int64]] = []
    # A product pixel next to a pixel outside the region (backdrop by definition) pays the pair's cost.
    to_backdrop = np.zeros((height, width), np.float64)
    horizontal = right[y0:y1, x0 : x1 - 1]
    vertical = down[y0 : y1 - 1, x0:x1]
    for first, second, weight in (
        (index[:, :-1], index[:, 1:], horizontal),
        (index[:-1, :], index[1:, :], vertical),
    ):
        both = (first >= 0) & (second >= 0)
        capacity = np.maximum(1, np.rint(weight[both] * _SCALE)).astype(np.int64)
        heads += [first[both], second[both]]
        tails += [second[both], first[both]]
        capacities += [capacity, capacity]
    to_backdrop[:, :-1] += horizontal * (inside[:, :-1] & ~inside[:, 1:])
    to_backdrop[:, 1:] += horizontal * (~inside[:, :-1] & inside[:, 1:])
    to_backdrop[:-1, :] += vertical * (inside[:-1, :] & ~inside[1:, :])
    to_backdrop[1:, :] += vertical * (~inside[:-1, :] & inside[1:, :])

    unary = cost[y0:y1, x0:x1][inside].astype(np.float64)
    product_cost = np.maximum(unary, 0.0) + to_backdrop[inside]
    backdrop_cost = np.maximum(-unary, 0.0)
    nodes = np.arange(count, dtype=np.int64)
    # source side = product: an edge source->p is cut when p is backdrop, p->sink when p is product.
    to_source = np.rint(backdrop_cost * _SCALE).astype(np.int64)
    to_sink = np.rint(product_cost * _SCALE).astype(np.int64)
    keep_source, keep_sink = to_source > 0, to_sink > 0
    heads += [np.full(int(keep_source.sum()), source, np.int64), nodes[keep_sink]]
    tails += [nodes[keep_source], np.full(int(keep_sink.sum()), sink, np.int64)]
    capacities += [to_source[keep_source], to_sink[keep_sink]]

    head = np.concatenate(heads)
    tail = np.concatenate(tails)
    capacity = np.concatenate(capacities)
    # int32 capacities: costs are bounded well below 2**31 / _SCALE by construction, clip regardless.
    capacity = np.minimum(capacity, 2**31 - 1)
    size = count + 2
    graph = scipy.sparse.coo_array((capacity.astype(np.int32), (head, tail)), shape=(size, size)).tocsr()
    flow = maximum_flow(graph, source, sink, method="dinic").flow
    residual = (graph - flow).tocsr()
    residual.data = np.maximum(residual.data, 0)
    residual.eliminate_zeros()
    reached = breadth_first_order(residual, source, directed=True, return_predecessors=False)
    product = np.zeros(count + 2, bool)
    product[reached] = True
    backdrop = np.zeros_like(region)
    box = np.zeros((height, width), bool)
    box[inside] = ~product[:count]
    backdrop[y0:y1, x0:x1] = box
    return backdrop
