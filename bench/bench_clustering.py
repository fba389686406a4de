#!/usr/bin/env python3
"""How pure are the anonymous identities, and how fragmented do real people get? (LFW)

Every one of LFW's 13,233 images is one stranger's track in turn (a fixed shuffled order):
it joins the anonymous identity the server's rule picks (core.anonymous.vote_identity over
its nearest identity within the threshold, the core Matcher's exact float32 search) and adds
its descriptor there (at most ``--max-samples`` per identity, the oldest go), or it starts a
new identity. Then B-cubed precision (how much of an image's identity is the same person)
and recall (how much of its person is in its identity), their F1, and the number of
identities against LFW's 5,749 people, for the chosen threshold and its neighbours.

    python bench/bench_clustering.py [--thresholds 0.4 0.45 0.5 0.55 0.6] [--orders 2]

Descriptors: the server's defaults (HOG upsample 0, OpenCV embedder) from
``bench/lfw_descriptors.py`` (cached under ~/.cache/facerec/lfw; computed once otherwise,
~30 min on 2 cores). LFW: ``$FACEREC_LFW`` (default: the shared datasets folder beside the
checkout); without it the bench says so and exits 0 with nothing measured.
Writes ``bench/results/clustering.json``.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
import time
from collections import Counter

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from facerec_server.core.anonymous import AnonymousConfig, vote_identity  # noqa: E402
from facerec_server.core.types import Match  # noqa: E402

RESULTS = REPO / "bench" / "results" / "clustering.json"


def cluster(descriptors: np.ndarray, order: np.ndarray, threshold: float,
            max_samples: int) -> np.ndarray:
    """Identity index of each image, assigned online in ``order`` (the server's rule)."""
    capacity = len(order)
    matrix = np.zeros((capacity, descriptors.shape[1]), np.float32)
    norms = np.zeros(capacity, np.float32)
    owner = np.full(capacity, -1, np.int64)  # identity of each stored row (-1: free)
    rows_of = []  # per identity: its rows, oldest first
    free = []
    used = 0
    labels = np.empty(len(descriptors), np.int64)
    for image in order:
        query = descriptors[image]
        if used:
            squared = norms[:used] + float(query @ query) - 2.0 * (matrix[:used] @ query)
            squared[owner[:used] < 0] = np.inf
            row = int(np.argmin(squared))
            distance = float(np.linalg.norm(matrix[row].astype(np.float64) - query))
            found = [Match(str(owner[row]) if distance < threshold else "", distance, 0.0)]
        else:
            found = [Match("", float("inf"), 0.0)]
        leader = vote_identity(found)
        if leader:
            identity = int(leader)
        else:
            identity = len(rows_of)
            rows_of.append([])
        labels[image] = identity
        if free:
            slot = free.pop()
        else:
            slot, used = used, used + 1
        matrix[slot], norms[slot], owner[slot] = query, float(query @ query), identity
        rows_of[identity].append(slot)
        if len(rows_of[identity]) > max_samples:
            oldest = rows_of[identity].pop(0)
            owner[oldest] = -1
            free.append(oldest)
    return labels


def bcubed(truth, labels) -> tuple:
    """(precision, recall) averaged over images."""
    truth = np.asarray(truth)
    pairs = Counter(zip(truth, labels))
    cluster_sizes = Counter(labels)
    class_sizes = Counter(truth)
    precision = recall = 0.0
    for (person, identity), both in pairs.items():
        precision += both * both / cluster_sizes[identity]
        recall += both * both / class_sizes[person]
    return precision / len(truth), recall / len(truth)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--thresholds", type=float, nargs="+",
                        default=[0.35, 0.4, 0.45, 0.5, 0.55, 0.6])
    parser.add_argument("--orders", type=int, default=2, help="shuffled orders averaged")
    parser.add_argument("--max-samples", type=int, default=AnonymousConfig().max_samples)
    parser.add_argument("--output", type=pathlib.Path, default=RESULTS)
    args = parser.parse_args(argv)
    import lfw_descriptors
    try:
        names, descriptors = lfw_descriptors.load(progress=True)
    except FileNotFoundError as error:
        print(f"bench_clustering: skipped: {error}", file=sys.stderr)
        return 0
    people = sorted(set(names))
    truth = np.unique(np.array(names), return_inverse=True)[1]
    rows = []
    for threshold in args.thresholds:
        runs = []
        for seed in range(args.orders):
            order = np.random.default_rng(seed).permutation(len(names))
            start = time.perf_counter()
            labels = cluster(descriptors, order, threshold, args.max_samples)
            elapsed = time.perf_counter() - start
            precision, recall = bcubed(truth, labels)
            runs.append((precision, recall, len(set(labels.tolist())), elapsed))
        precision, recall, identities, elapsed = (float(np.mean([r[i] for r in runs]))
                                                  for i in range(4))
        row = {"threshold": threshold, "bcubed_precision": round(precision, 4),
               "bcubed_recall": round(recall, 4),
               "f1": round(2 * precision * recall / (precision + recall), 4),
               "identities": round(identities, 1), "seconds": round(elapsed, 1),
               "per_order": [{"precision": round(r[0], 4), "recall": round(r[1], 4),
                              "identities": r[2]} for r in runs]}
        rows.append(row)
        print(f"threshold {threshold:.2f}: B-cubed precision {precision:.4f} recall "
              f"{recall:.4f} F1 {row['f1']:.4f}, {identities:.0f} identities "
              f"({len(people)} people)", flush=True)
    result = {"bench": "clustering", "command": " ".join(["python"] + sys.argv),
              "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "images": len(names), "people": len(people),
              "orders": args.orders, "max_samples": args.max_samples,
              "chosen_threshold": AnonymousConfig().threshold,
              "descriptors": "server defaults: HOG upsample 0, OpenCV embedder "
                             "(bench/lfw_descriptors.py)",
              "machine": platform.platform(), "results": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
