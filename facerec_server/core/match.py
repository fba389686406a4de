"""Nearest-neighbour matching of face descriptors against an in-memory gallery.

Distances are Euclidean between 128-D descriptors. A face is known when its nearest gallery
sample is closer than ``threshold`` (strictly); the nearest sample's name wins (one person may
have many samples). Confidence follows :class:`facerec_server.core.types.Match`.

Negative examples ("this face is not alice", see the gallery's ``add_negatives``) veto a
name: a face as near to one of alice's negative examples as to alice's nearest sample (or
nearer) is not alice, and the next nearest person (or unknown) is taken instead. A gallery without
negative examples matches exactly as before.
"""
from __future__ import annotations

import math
from typing import Optional, List, Sequence, Tuple

import numpy as np

from .types import Match

DESCRIPTOR_SIZE = 128


def confidence(distance: float, threshold: float) -> float:
    """``clip(1 - distance / (2 * threshold), 0, 1)`` if ``distance < threshold`` else 0."""
    if not distance < threshold:
        return 0.0
    return float(min(1.0, max(0.0, 1.0 - distance / (2.0 * threshold))))


def as_descriptors(descriptors, what: str = "descriptors") -> np.ndarray:
    """(N, 128) float64 array from an array/list; a single (128,) becomes (1, 128)."""
    array = np.asarray(descriptors, dtype=np.float64)
    if array.ndim == 1 and array.size == DESCRIPTOR_SIZE:
        array = array.reshape(1, DESCRIPTOR_SIZE)
    if array.size == 0:
        return np.zeros((0, DESCRIPTOR_SIZE))
    if array.ndim != 2 or array.shape[1] != DESCRIPTOR_SIZE:
        raise ValueError(f"{what} must have shape (N, {DESCRIPTOR_SIZE}), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contain NaN or infinite values")
    return array


class Matcher:
    """Thread-safe gallery + vectorised matcher (exact nearest neighbour, brute force).

    The gallery is held as one immutable tuple ``(names, matrix, squared norms)`` that
    :meth:`set_gallery` replaces in a single assignment, so :meth:`match` running in other
    threads sees either the old or the new gallery, never a mix.

    The matrix is float32, as the gallery stores descriptors: the nearest row is found in
    float32 (half the memory traffic of float64: measured 2.1x faster at 100k samples, with
    the same decision for every query; ``bench/bench_match_scale.py``), and the distance
    reported for that row is recomputed in float64. Exact search is the default by the
    numbers of that bench: the approximate indexes measured there changed 3-5% of the
    decisions at 100k samples and take minutes to rebuild after a change.
    """

    def __init__(self, threshold: float = 0.6) -> None:
        self.threshold = threshold
        self._gallery: tuple = self._build((), [])
        self._generation = 0
        self._rows = None  # (gallery, {name: rows}) for distance_to

    @property
    def threshold(self) -> float:
        """Distance below which a face is known (Euclidean, >= 0)."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        value = float(value)
        if not value >= 0.0 or math.isinf(value):
            raise ValueError(f"threshold must be a finite number >= 0, got {value}")
        self._threshold = value

    @staticmethod
    def _build(names: Sequence[str], descriptors, negatives=None):
        """``(names, matrix, squared norms, {name: negative examples (K, 128) float64})``."""
        names = tuple(str(n) for n in names)
        matrix = as_descriptors(descriptors, "gallery descriptors")
        if len(names) != matrix.shape[0]:
            raise ValueError(f"{len(names)} names for {matrix.shape[0]} gallery descriptors")
        if any(not n for n in names):
            raise ValueError("gallery names must be non-empty ('' means unknown)")
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)  # a copy
        matrix.setflags(write=False)
        norms = np.einsum("ij,ij->i", matrix, matrix)
        norms.setflags(write=False)
        vetoes: dict = {}
        if negatives is not None:
            negative_names, negative_matrix = negatives
            negative_matrix = as_descriptors(negative_matrix, "negative examples")
            if len(negative_names) != negative_matrix.shape[0]:
                raise ValueError(f"{len(negative_names)} names for {negative_matrix.shape[0]} "
                                 "negative examples")
            for name, row in zip(negative_names, negative_matrix):
                vetoes.setdefault(str(name), []).append(row)
            vetoes = {name: np.stack(rows) for name, rows in vetoes.items()}
        return names, matrix, norms, vetoes

    def set_gallery(self, names: Sequence[str], descriptors, negatives=None) -> None:
        """Replace the gallery: ``names[i]`` labels row i of ``descriptors`` (N, 128).

        Several rows may share a name. ``negatives``: ``(names, (K, 128))`` negative examples
        (row i is a face that is *not* names[i]). Raises ValueError for mismatched sizes,
        empty names or non-finite values; the previous gallery stays in place then.
        """
        self._gallery = self._build(names, descriptors, negatives)
        self._generation += 1

    def clear(self) -> None:
        """Empty the gallery: every face becomes unknown."""
        self._gallery = self._build((), [])
        self._generation += 1

    @property
    def generation(self) -> int:
        """Grows each time the gallery is replaced (callers that keep matches compare it)."""
        return self._generation

    @property
    def names(self) -> Tuple[str, ...]:
        """Sample names, one per gallery row."""
        return self._gallery[0]

    def __len__(self) -> int:
        return len(self._gallery[0])

    def distances(self, descriptors) -> np.ndarray:
        """(M, N) Euclidean distances between M query descriptors and the N gallery rows
        (float32 arithmetic: within ~1e-3 of the exact value near 0, ~1e-6 near 0.6)."""
        squared = self._squared(as_descriptors(descriptors), self._gallery)
        return np.sqrt(np.maximum(squared, 0.0)).astype(np.float64)

    @staticmethod
    def _squared(queries: np.ndarray, gallery) -> np.ndarray:
        """(M, N) squared distances in float32: |q|^2 + |g|^2 - 2 q.g."""
        matrix, norms = gallery[1], gallery[2]
        queries = queries.astype(np.float32)
        return (np.einsum("ij,ij->i", queries, queries)[:, None] + norms[None, :]
                - 2.0 * (queries @ matrix.T))

    def distance_to(self, descriptor, name: str) -> float:
        """Distance (float64) from one descriptor (128,) to the nearest gallery sample of
        ``name`` (``inf`` when the gallery holds none of that name)."""
        gallery = self._gallery  # one consistent snapshot
        rows = self._rows_of(gallery).get(name)
        if rows is None:
            return float("inf")
        query = as_descriptors(descriptor)[0].astype(np.float64)
        samples = gallery[1][rows].astype(np.float64)
        return float(np.sqrt(np.einsum("ij,ij->i", samples - query, samples - query)).min())

    def _rows_of(self, gallery) -> dict:
        """{name: row indices} of ``gallery``, built once per gallery."""
        cached = self._rows
        if cached is not None and cached[0] is gallery:
            return cached[1]
        rows: dict = {}
        for index, name in enumerate(gallery[0]):
            rows.setdefault(name, []).append(index)
        self._rows = (gallery, rows)
        return rows

    def _unvetoed(self, query, squared, gallery, threshold, index, distance):
        """The nearest row whose name no negative example vetoes: ``(index, distance)``, or
        ``(None, distance to the nearest row)`` when every name within threshold is vetoed.
        A name is vetoed for ``query`` when one of its negative examples is as near as the
        name's nearest sample, or nearer."""
        names, matrix, vetoes = gallery[0], gallery[1], gallery[3]
        rows = self._rows_of(gallery)
        squared = np.array(squared, dtype=np.float64)  # a copy to mask
        nearest = distance
        while True:
            name = names[index]
            negatives = vetoes.get(name)
            if negatives is None:
                return index, distance
            if float(np.sqrt(((negatives - query) ** 2).sum(axis=1)).min()) > distance:
                return index, distance  # (a tie vetoes: the negative example is newer)
            squared[rows[name]] = np.inf
            index = int(np.argmin(squared))
            if not np.isfinite(squared[index]):
                return None, nearest
            distance = float(np.linalg.norm(matrix[index].astype(np.float64) - query))
            if distance >= threshold:
                return None, nearest

    def name_faces(self, faces: Sequence, threshold: Optional[float] = None) -> None:
        """Fill ``name``, ``distance`` and ``confidence`` of every face that has a descriptor
        (``FaceResult`` objects, matched in one batch; see :meth:`match`)."""
        described = [face for face in faces if face.descriptor is not None]
        if not described:
            return
        for face, found in zip(described, self.match([f.descriptor for f in described],
                                                     threshold)):
            face.name, face.distance, face.confidence = found.name, found.distance, \
                found.confidence

    def match(self, descriptors, threshold: Optional[float] = None) -> List[Match]:
        """One :class:`Match` per query row of ``descriptors`` (M, 128), in order.

        Unknown (name ``''``, confidence 0) when the nearest distance >= threshold; distance
        ``inf`` when the gallery is empty. ``threshold`` overrides the matcher's own for this
        call (a caller holding a settings snapshot passes its value).
        """
        queries = as_descriptors(descriptors)
        gallery = self._gallery  # one consistent snapshot
        threshold = self._threshold if threshold is None else float(threshold)
        names = gallery[0]
        if not names:
            return [Match("", float("inf"), 0.0) for _ in range(queries.shape[0])]
        squared = self._squared(queries, gallery)
        nearest = np.argmin(squared, axis=1)
        matrix, vetoes = gallery[1], gallery[3]
        result = []
        for row, index in enumerate(nearest):
            distance = float(np.linalg.norm(matrix[index].astype(np.float64) - queries[row]))
            if vetoes and names[index] in vetoes and distance < threshold:
                index, distance = self._unvetoed(queries[row], squared[row], gallery,
                                                 threshold, index, distance)
                if index is None:
                    result.append(Match("", distance, 0.0))
                    continue
            known = distance < threshold
            result.append(Match(names[index] if known else "", distance,
                                confidence(distance, threshold)))
        return result
