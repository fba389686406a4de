"""Gallery matching: vectorised nearest neighbour, threshold, confidence, atomic swaps."""
import threading

import numpy as np
import pytest

from facerec_server.core.match import Matcher, confidence


def _unit(index, length=1.0):
    vector = np.zeros(128, np.float32)
    vector[index] = length
    return vector


def test_empty_gallery_is_unknown():
    matches = Matcher().match(np.stack([_unit(0), _unit(1)]))
    assert [(m.name, m.distance, m.confidence) for m in matches] == \
        [("", float("inf"), 0.0)] * 2


def test_no_queries_give_no_matches():
    matcher = Matcher()
    matcher.set_gallery(["a"], [_unit(0)])
    assert matcher.match(np.zeros((0, 128), np.float32)) == []


def test_nearest_sample_wins():
    matcher = Matcher(threshold=0.6)
    matcher.set_gallery(["ada", "ada", "bob"], [_unit(0), _unit(1), _unit(2)])
    query = _unit(1) + _unit(2, 0.3)  # 0.3 from ada's 2nd sample, 1.22 from bob, 1.45 from ada 1
    match = matcher.match(query)[0]
    assert match.name == "ada"
    assert match.distance == pytest.approx(0.3, abs=1e-6)


def test_threshold_is_exclusive():
    matcher = Matcher(threshold=0.5)
    matcher.set_gallery(["ada"], [np.zeros(128)])
    at, below = matcher.match(np.stack([_unit(3, 0.5), _unit(3, 0.49)]))
    assert (at.name, at.distance, at.confidence) == ("", 0.5, 0.0)
    assert below.name == "ada"


def test_confidence_formula():
    matcher = Matcher(threshold=0.5)
    matcher.set_gallery(["ada"], [np.zeros(128)])
    exact, quarter = matcher.match(np.stack([np.zeros(128), _unit(0, 0.25)]))
    assert exact.confidence == pytest.approx(1.0)
    assert quarter.confidence == pytest.approx(1 - 0.25 / 1.0)
    assert confidence(0.5 - 1e-12, 0.5) == pytest.approx(0.5)
    assert confidence(0.5, 0.5) == 0.0


def test_matches_brute_force_on_random_data():
    rng = np.random.default_rng(7)
    gallery = rng.normal(0, 0.1, (50, 128)).astype(np.float32)
    names = [f"p{i % 17}" for i in range(50)]
    queries = gallery[[3, 20, 41]] + rng.normal(0, 0.02, (3, 128)).astype(np.float32)
    queries = np.vstack([queries, rng.normal(0, 0.1, (2, 128))])
    matcher = Matcher(threshold=0.6)
    matcher.set_gallery(names, gallery)
    matches = matcher.match(queries)
    for query, match in zip(queries, matches):
        distances = np.linalg.norm(gallery - query, axis=1)
        best = int(np.argmin(distances))
        assert match.distance == pytest.approx(distances[best], abs=1e-5)
        assert match.name == (names[best] if distances[best] < 0.6 else "")
    assert [m.name for m in matches[:3]] == ["p3", "p3", "p7"]
    assert matcher.distances(queries).shape == (5, 50)


def test_single_descriptor_is_accepted():
    matcher = Matcher()
    matcher.set_gallery(["ada"], [_unit(0)])
    assert matcher.match(_unit(0))[0].name == "ada"


@pytest.mark.parametrize("names, descriptors, message", [
    (["a", "b"], np.zeros((1, 128)), "2 names for 1"),
    (["a"], np.zeros((1, 64)), r"shape \(N, 128\)"),
    (["a"], np.full((1, 128), np.nan), "NaN"),
    ([""], np.zeros((1, 128)), "non-empty"),
])
def test_bad_gallery_is_rejected_and_old_one_kept(names, descriptors, message):
    matcher = Matcher()
    matcher.set_gallery(["ada"], [_unit(0)])
    with pytest.raises(ValueError, match=message):
        matcher.set_gallery(names, descriptors)
    assert matcher.names == ("ada",)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_bad_threshold_is_rejected(bad):
    with pytest.raises(ValueError, match="threshold"):
        Matcher(threshold=bad)


def test_gallery_is_copied_and_read_only():
    descriptors = np.stack([_unit(0)])
    matcher = Matcher()
    matcher.set_gallery(["ada"], descriptors)
    descriptors[0, 0] = 9.0
    assert matcher.match(_unit(0))[0].distance == pytest.approx(0.0)
    assert len(matcher) == 1


def test_gallery_swap_is_atomic_under_concurrent_matching():
    """Every match() call sees one whole gallery: names and rows never mix."""
    rng = np.random.default_rng(1)
    rows = rng.normal(0, 0.05, (200, 128))
    galleries = [(["a"] * 200, rows), (["b"] * 100, rows[:100] + 5.0)]
    matcher = Matcher(threshold=1e6)
    matcher.set_gallery(*galleries[0])
    queries = rows[:8]
    seen, errors, done = set(), [], threading.Event()

    def reader():
        while not done.is_set():
            try:
                names = {m.name for m in matcher.match(queries)}
                assert len(names) == 1, names
                seen.update(names)
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(error)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    for i in range(300):
        matcher.set_gallery(*galleries[i % 2])
    done.set()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    assert seen <= {"a", "b"} and seen


def test_float32_search_reports_exact_float64_distances():
    """The matrix is float32 (half the memory traffic); the reported distance is exact."""
    rng = np.random.default_rng(11)
    gallery = rng.normal(0, 0.12, (3000, 128)).astype(np.float32)
    queries = gallery[rng.choice(3000, 40)] + rng.normal(0, 0.01, (40, 128))
    matcher = Matcher(threshold=0.6)
    matcher.set_gallery([f"p{i}" for i in range(3000)], gallery)
    assert matcher._gallery[1].dtype == np.float32
    for query, match in zip(queries, matcher.match(queries)):
        distances = np.linalg.norm(gallery.astype(np.float64) - query, axis=1)
        best = int(np.argmin(distances))
        assert match.name == f"p{best}"
        assert match.distance == pytest.approx(distances[best], abs=1e-12)


def test_distance_to_one_person_and_generation():
    matcher = Matcher(threshold=0.6)
    start = matcher.generation
    matcher.set_gallery(["ada", "ada", "bob"], [_unit(0), _unit(1), _unit(2)])
    assert matcher.generation == start + 1
    query = _unit(1) + _unit(2, 0.3)
    assert matcher.distance_to(query, "ada") == pytest.approx(0.3, abs=1e-6)
    assert matcher.distance_to(query, "bob") == pytest.approx(np.hypot(1, 0.7), abs=1e-6)
    assert matcher.distance_to(query, "eve") == float("inf")
    matcher.clear()
    assert matcher.generation == start + 2 and matcher.distance_to(query, "ada") == \
        float("inf")
