#!/usr/bin/env python3
"""Matching at scale: time per face and recall against 1k, 100k and 1M stored samples.

Compared, one query face at a time (what the server does per frame), one thread each:

* ``numpy-f64``: brute force in float64 (squared norms + one matrix-vector product), what
  ``core.match.Matcher`` did before this bench; the exact reference for recall;
* ``matcher``: ``core.match.Matcher`` as it is (the same in float32, then the chosen row's
  distance in float64);
* ``faiss-flat``: faiss ``IndexFlatL2`` (exact, BLAS);
* ``faiss-hnsw``: faiss ``IndexHNSWFlat`` (M=32, efConstruction=80, efSearch=64);
* ``faiss-ivf``: faiss ``IndexIVFFlat`` (nlist = 4 sqrt(N), nprobe = 16);
* ``hnswlib``: hnswlib HNSW (M=16, ef_construction=100, ef=64);
* ``usearch``: usearch HNSW (connectivity 16, expansion_add 128, expansion_search 64).

Data (descriptors must be realistic for recall to mean anything; random vectors are not):

* **real**: every LFW image (13,233 images of 5,749 people) described by the server's own
  stages (HOG, 5-point chip, ResNet on the OpenCV embedder; see ``lfw_descriptors.py``,
  cached). Queries: one held-out image of each of the 1,680 people with two or more images
  (their other images are in the gallery: *known* queries), and 1,000 people with one image
  kept out of the gallery (*unknown* queries).
* **synthetic extension** to reach 100k and 1M: new identities whose centre is drawn from a
  Gaussian with the mean and full covariance of the real identity centres (people with two
  or more images), and whose samples are that centre plus real within-person residuals
  (an image's descriptor minus its person's mean, scaled by sqrt(n/(n-1)) for the bias of a
  mean of n), with as many samples per identity as real people have. How close this is to
  real data is measured and written to the JSON (``realism``): distance quantiles of real
  impostor pairs vs real-to-synthetic pairs, and of real genuine pairs vs synthetic ones.

Per size and method: build seconds, median and p90 microseconds per face over the queries
(methods alternated in blocks of queries so machine noise hits them alike), recall@1 (the
approximate nearest sample is the exact one, or as near within 1e-5), and decision
agreement (same name, or both unknown, at threshold 0.6). Also, from the exact search: the
identification accuracy of known queries and the false-accept rate of unknown queries, to
show what a large gallery of distractors does at the fixed threshold.

    python bench/bench_match_scale.py [--sizes 1000,100000,1000000] [--queries 600]
                                      [--methods numpy-f64,...] [--output PATH]
    python bench/bench_match_scale.py --table RESULT.json [...]   # the README's table

Needs the LFW images (``$FACEREC_LFW``) the first time, and ``pip install -r
requirements/bench.txt`` (faiss-cpu, hnswlib, usearch; hnswlib has no binary wheel and is
compiled by pip). Writes ``bench/results/match_scale.json``.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread per search, as the server's matcher gets

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Dict, List  # noqa: E402

import numpy as np  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

THRESHOLD = 0.6
METHODS = ("numpy-f64", "matcher", "faiss-flat", "faiss-hnsw", "faiss-ivf", "hnswlib", "usearch")
BUILD_THREADS = 2  # index construction may use both cores; searches use one


# --- data -----------------------------------------------------------------------------------
def split_lfw(names: List[str], matrix: np.ndarray, rng: np.random.Generator, unknown=1000):
    """Gallery rows, known queries (+ their person) and unknown queries from LFW."""
    people: Dict[str, List[int]] = {}
    for row, name in enumerate(names):
        people.setdefault(name, []).append(row)
    multi = sorted(p for p, rows in people.items() if len(rows) > 1)
    single = sorted(p for p, rows in people.items() if len(rows) == 1)
    held_out = set(rng.choice(single, size=unknown, replace=False).tolist())
    known_queries = [people[p][0] for p in multi]
    gallery_rows = [r for p in multi for r in people[p][1:]]
    gallery_rows += [people[p][0] for p in single if p not in held_out]
    unknown_queries = [people[p][0] for p in sorted(held_out)]
    return people, multi, gallery_rows, known_queries, unknown_queries


class Synthesizer:
    """New identities shaped like LFW's (see the module docstring)."""

    def __init__(self, people, multi, matrix: np.ndarray):
        centres, residuals, counts = [], [], []
        for person in multi:
            rows = matrix[people[person]].astype(np.float64)
            mean = rows.mean(axis=0)
            n = len(rows)
            centres.append(mean)
            residuals.append((rows - mean) * np.sqrt(n / (n - 1)))
            counts.append(n)
        centres = np.array(centres)
        self.mean = centres.mean(axis=0)
        self.cov = np.cov(centres, rowvar=False)
        self.residuals = np.vstack(residuals)
        self.counts = np.array(counts)

    def samples(self, total: int, rng: np.random.Generator):
        """(names, (total, 128) float32): synthetic identities until ``total`` rows."""
        names, rows, made, index = [], [], 0, 0
        while made < total:
            batch = min(20000, total - made)
            n_ids = max(1, int(batch / self.counts.mean()) + 1)
            centres = rng.multivariate_normal(self.mean, self.cov, size=n_ids)
            per = rng.choice(self.counts, size=n_ids)
            for centre, count in zip(centres, per):
                count = int(min(count, total - made))
                if count <= 0:
                    break
                picks = self.residuals[rng.integers(0, len(self.residuals), size=count)]
                rows.append(centre + picks)
                names += [f"synthetic-{index}"] * count
                index += 1
                made += count
        return names, np.vstack(rows).astype(np.float32)


def quantiles(values) -> Dict[str, float]:
    values = np.asarray(values, np.float64)
    return {f"p{q}": round(float(np.percentile(values, q)), 4) for q in (1, 5, 25, 50, 75, 95)}


def realism(people, multi, matrix, synth_names, synth, rng) -> dict:
    """Distance distributions, real vs synthetic (the extension's faithfulness)."""
    real_people = [p for p in people]
    a = rng.choice(len(real_people), size=4000)
    b = rng.choice(len(real_people), size=4000)
    keep = a != b
    real_impostor = [np.linalg.norm(matrix[people[real_people[i]][0]]
                                    - matrix[people[real_people[j]][0]])
                     for i, j in zip(a[keep], b[keep])]
    rows = rng.choice(len(synth), size=4000)
    reals = rng.choice(len(matrix), size=4000)
    real_synth = np.linalg.norm(matrix[reals] - synth[rows], axis=1)
    genuine_real = []
    for person in rng.choice(multi, size=1500):
        i, j = rng.choice(people[person], size=2, replace=False)
        genuine_real.append(np.linalg.norm(matrix[i] - matrix[j]))
    by_name: Dict[str, List[int]] = {}
    for row, name in enumerate(synth_names[:200000]):
        by_name.setdefault(name, []).append(row)
    multi_synth = [rows for rows in by_name.values() if len(rows) > 1]
    genuine_synth = []
    for k in rng.choice(len(multi_synth), size=1500):
        i, j = rng.choice(multi_synth[k], size=2, replace=False)
        genuine_synth.append(np.linalg.norm(synth[i] - synth[j]))
    return {
        "impostor_real_real": quantiles(real_impostor),
        "impostor_real_synthetic": quantiles(real_synth),
        "genuine_real": quantiles(genuine_real),
        "genuine_synthetic": quantiles(genuine_synth),
        "below_threshold": {
            "impostor_real_real": float(np.mean(np.array(real_impostor) < THRESHOLD)),
            "impostor_real_synthetic": float(np.mean(real_synth < THRESHOLD)),
            "genuine_real": float(np.mean(np.array(genuine_real) < THRESHOLD)),
            "genuine_synthetic": float(np.mean(np.array(genuine_synth) < THRESHOLD))},
        "norm_real": quantiles(np.linalg.norm(matrix, axis=1)),
        "norm_synthetic": quantiles(np.linalg.norm(synth[:100000], axis=1)),
    }


# --- the searchers: build(matrix) -> search(query (128,) float32) -> (row, distance) --------
def build(method: str, matrix: np.ndarray):
    n = len(matrix)
    if method == "numpy-f64":
        m64 = np.ascontiguousarray(matrix, np.float64)
        norms = np.einsum("ij,ij->i", m64, m64)

        def search(q):
            q = q.astype(np.float64)
            d = norms - 2.0 * (m64 @ q) + float(q @ q)
            i = int(np.argmin(d))
            return i, float(np.sqrt(max(d[i], 0.0)))
        return search
    if method == "matcher":
        from facerec_server.core.match import Matcher
        matcher = Matcher(1e9)  # names every nearest row (its index); decisions at 0.6 below
        matcher.set_gallery([str(i) for i in range(n)], matrix)

        def search(q):
            found = matcher.match(q)[0]
            return int(found.name), found.distance
        return search
    if method.startswith("faiss"):
        import faiss
        faiss.omp_set_num_threads(BUILD_THREADS)
        if method == "faiss-flat":
            index = faiss.IndexFlatL2(128)
        elif method == "faiss-hnsw":
            index = faiss.IndexHNSWFlat(128, 32)
            index.hnsw.efConstruction = 80
            index.hnsw.efSearch = 64
        else:
            nlist = max(1, int(4 * np.sqrt(n)))
            quantizer = faiss.IndexFlatL2(128)
            index = faiss.IndexIVFFlat(quantizer, 128, nlist)
            sample = np.random.default_rng(0).choice(n, min(n, 50 * nlist), replace=False)
            index.train(matrix[sample])
            index.nprobe = 16
        index.add(matrix)
        faiss.omp_set_num_threads(1)

        def search(q):
            d, i = index.search(q.reshape(1, -1), 1)
            return int(i[0, 0]), float(np.sqrt(max(d[0, 0], 0.0)))
        return search
    if method == "hnswlib":
        import hnswlib
        index = hnswlib.Index(space="l2", dim=128)
        index.init_index(max_elements=n, M=16, ef_construction=100, random_seed=1)
        index.add_items(matrix, np.arange(n), num_threads=BUILD_THREADS)
        index.set_ef(64)
        index.set_num_threads(1)

        def search(q):
            labels, d = index.knn_query(q.reshape(1, -1), k=1, num_threads=1)
            return int(labels[0, 0]), float(np.sqrt(max(d[0, 0], 0.0)))
        return search
    if method == "usearch":
        from usearch.index import Index
        index = Index(ndim=128, metric="l2sq", dtype="f32", connectivity=16,
                      expansion_add=128, expansion_search=64)
        index.add(np.arange(n), matrix, threads=BUILD_THREADS)

        def search(q):
            found = index.search(q, 1, threads=1)
            return int(found.keys[0]), float(np.sqrt(max(found.distances[0], 0.0)))
        return search
    raise ValueError(f"unknown method {method}")


def memory_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


# --- one gallery size ---------------------------------------------------------------------------
def run_size(size, data, methods, n_queries, rng, log) -> dict:
    names, matrix, people, multi, gallery_rows, known_q, unknown_q, synth = data
    real_rows = list(gallery_rows)
    if size < len(real_rows):  # a random subset of whole people
        order = rng.permutation(len(multi))
        chosen, count = set(), 0
        for k in order:
            person = multi[k]
            if count + len(people[person]) - 1 > size:
                continue
            chosen.add(person)
            count += len(people[person]) - 1
        real_rows = [r for p in sorted(chosen) for r in people[p][1:]]
        known = [people[p][0] for p in sorted(chosen)]
    else:
        known = list(known_q)
    fill = size - len(real_rows)
    synth_names, synth_matrix = synth
    row_names = [names[r] for r in real_rows] + list(synth_names[:fill])
    gallery = np.vstack([matrix[real_rows], synth_matrix[:fill]]).astype(np.float32)
    queries = known[: n_queries // 2] + list(unknown_q[: n_queries - min(len(known),
                                                                         n_queries // 2)])
    truth = [names[q] for q in queries]
    is_known = np.array([names[q] in set(row_names[:len(real_rows)]) for q in queries])
    qmatrix = matrix[queries].astype(np.float32)
    log(f"size {size}: {len(real_rows)} real + {fill} synthetic rows, {len(queries)} queries "
        f"({int(is_known.sum())} known)")

    searchers, builds, rss = {}, {}, {}
    for method in methods:
        before = memory_mb()
        started = time.perf_counter()
        try:
            searchers[method] = build(method, gallery)
        except ImportError as error:
            log(f"  {method}: skipped ({error}); pip install -r requirements/bench.txt")
            continue
        builds[method] = time.perf_counter() - started
        rss[method] = memory_mb() - before
        log(f"  {method}: built in {builds[method]:.1f} s (+{rss[method]:.0f} MB)")

    results = {m: [None] * len(queries) for m in searchers}
    times = {m: [] for m in searchers}
    block = 20
    order = list(searchers)
    for start in range(0, len(queries), block):  # alternate methods per block of queries
        order = order[1:] + order[:1]
        for method in order:
            search = searchers[method]
            for k in range(start, min(start + block, len(queries))):
                t0 = time.perf_counter()
                results[method][k] = search(qmatrix[k])
                times[method].append(time.perf_counter() - t0)

    exact = results.get("numpy-f64")
    out = {"size": size, "real_rows": len(real_rows), "synthetic_rows": fill,
           "queries": len(queries), "known_queries": int(is_known.sum()), "methods": {}}
    for method in searchers:
        entry = {"build_s": round(builds[method], 3), "rss_added_mb": round(rss[method], 1),
                 "median_us": round(float(np.median(times[method])) * 1e6, 1),
                 "p90_us": round(float(np.percentile(times[method], 90)) * 1e6, 1)}
        if exact is not None:
            same = [r[0] == e[0] or abs(r[1] - e[1]) < 1e-5
                    for r, e in zip(results[method], exact)]
            agree = [_decision(r, row_names) == _decision(e, row_names)
                     for r, e in zip(results[method], exact)]
            entry["recall_at_1"] = round(float(np.mean(same)), 4)
            entry["decision_agreement"] = round(float(np.mean(agree)), 4)
        out["methods"][method] = entry
        log(f"  {method}: median {entry['median_us']:.0f} us/face, "
            f"recall@1 {entry.get('recall_at_1')}, agreement {entry.get('decision_agreement')}")
    if exact is not None:
        decided = [_decision(e, row_names) for e in exact]
        out["exact_accuracy"] = {
            "known_identified": round(float(np.mean(
                [d == t for d, t, k in zip(decided, truth, is_known) if k])), 4),
            "unknown_false_accept": round(float(np.mean(
                [d != "" for d, k in zip(decided, is_known) if not k])), 4)}
    return out


def _decision(found, row_names) -> str:
    row, distance = found
    return row_names[row] if distance < THRESHOLD else ""


def table(paths) -> str:
    """A Markdown table (one row per size and method) from result files."""
    lines = ["| samples | method | median per face | p90 | recall@1 | agreement | build |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]

    def duration(us):
        return f"{us / 1000:.1f} ms" if us >= 1000 else f"{us:.0f} us"
    for path in paths:
        for entry in json.loads(pathlib.Path(path).read_text())["sizes"]:
            for method, m in entry["methods"].items():
                lines.append(
                    f"| {entry['size']:,} | {method} | {duration(m['median_us'])} | "
                    f"{duration(m['p90_us'])} | {m.get('recall_at_1', 1.0):.3f} | "
                    f"{m.get('decision_agreement', 1.0):.3f} | {m['build_s']:.1f} s |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--queries", type=int, default=600)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--output", type=pathlib.Path,
                        default=REPO / "bench" / "results" / "match_scale.json")
    parser.add_argument("--table", nargs="+", type=pathlib.Path, metavar="JSON",
                        help="print the Markdown table of these result files and exit")
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.table))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    methods = [m for m in args.methods.split(",") if m]

    def log(text):
        print(text, flush=True)

    import lfw_descriptors
    try:
        names, matrix = lfw_descriptors.load()
    except FileNotFoundError as error:
        print(f"bench_match_scale: {error}", file=sys.stderr)
        return 1
    rng = np.random.default_rng(19)
    people, multi, gallery_rows, known_q, unknown_q = split_lfw(names, matrix, rng)
    synthesizer = Synthesizer(people, multi, matrix)
    started = time.perf_counter()
    synth = synthesizer.samples(max(50000, max(sizes) - len(gallery_rows)), rng)  # realism: 50k+
    log(f"LFW: {len(matrix)} descriptors of {len(people)} people; gallery {len(gallery_rows)} "
        f"real rows; {len(synth[1])} synthetic rows made in "
        f"{time.perf_counter() - started:.1f} s")
    report = {
        "command": " ".join(["python", "bench/bench_match_scale.py"] + (argv or sys.argv[1:])),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average": os.getloadavg()},
        "threshold": THRESHOLD, "search_threads": 1, "build_threads": BUILD_THREADS,
        "lfw": {"images": len(matrix), "people": len(people), "multi_image_people": len(multi),
                "gallery_real_rows": len(gallery_rows), "known_queries": len(known_q),
                "unknown_queries": len(unknown_q)},
        "realism": realism(people, multi, matrix, synth[0], synth[1], rng),
        "sizes": []}
    log(f"realism: {json.dumps(report['realism']['below_threshold'])}")
    data = (names, matrix, people, multi, gallery_rows, known_q, unknown_q, synth)
    for size in sizes:
        report["sizes"].append(run_size(size, data, methods, args.queries, rng, log))
        report["machine"]["load_average_end"] = os.getloadavg()
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")  # after each size
    log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
