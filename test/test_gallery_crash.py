"""SIGKILL at random moments never loses a committed sample nor half a transaction.

Run on both backends: an SQLite file, and a database on a real PostgreSQL server (where the
killed client's connection drops and the server rolls its open transaction back).
"""
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from facerec_server.core.gallery import Gallery

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PER_ADD = 3  # samples per add_samples call: a kill must never leave a partial call

ENROLLER = textwrap.dedent("""
    import sys
    import numpy as np
    from facerec_server.core.gallery import Gallery
    gallery = Gallery(sys.argv[1])
    start = gallery.count()
    rng = np.random.default_rng(int(sys.argv[2]))
    print("started", flush=True)
    for i in range(100000):
        gallery.add_samples("person%d" % (i % 7), rng.normal(size=(PER_ADD, 128)), force=True,
                            source="crash")
        print("committed", start + (i + 1) * PER_ADD, flush=True)
""").replace("PER_ADD", str(PER_ADD))


def _last_committed(lines):
    numbers = [int(line.split()[1]) for line in lines if line.startswith("committed ")]
    return numbers[-1] if numbers else None


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "gallery.db")
    return request.getfixturevalue("pg_url")


def test_sigkill_never_loses_committed_samples(location):
    path = location
    Gallery(path).close()
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rng = random.Random(1234)
    floor = 0
    kills = 0
    deadline = time.monotonic() + 25.0
    while kills < 12 and time.monotonic() < deadline:
        child = subprocess.Popen([sys.executable, "-c", ENROLLER, path, str(kills)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(child.stdout), daemon=True)
        reader.start()
        while not lines and child.poll() is None:  # wait until it writes
            time.sleep(0.01)
        assert lines and lines[0].strip() == "started", child.stderr.read()
        time.sleep(rng.uniform(0.0, 0.4))  # then kill it at a random moment
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        reader.join(timeout=10)
        child.stderr.close()
        assert child.returncode == -signal.SIGKILL
        kills += 1
        last = _last_committed([line.strip() for line in lines])

        with Gallery(path) as gallery:  # opens after every kill
            count = gallery.count()
            people = gallery.people()
            names, matrix = gallery.matrix()
        assert count >= (last if last is not None else floor)
        assert count % PER_ADD == 0, "a transaction was half-written"
        assert count >= floor  # nothing committed earlier disappeared
        assert sum(n for _, n in people) == count == len(names) == matrix.shape[0]
        if not path.startswith("postgresql://"):
            conn = sqlite3.connect(path)
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            conn.close()
        floor = count
    assert kills >= 10, f"only {kills} kills in the time budget"
    assert floor > 0


PER_IDENTITY = 4  # samples of each anonymous identity the child makes
NAMER = textwrap.dedent("""
    import sys
    import numpy as np
    from facerec_server.core.gallery import Gallery
    gallery = Gallery(sys.argv[1])
    rng = np.random.default_rng(int(sys.argv[2]))
    print("started", flush=True)
    for i in range(100000):
        anonymous = gallery.add_anonymous(rng.normal(size=(PER_IDENTITY, 128)))
        print("made", anonymous, flush=True)
        gallery.name_anonymous(anonymous, "person%d" % (i % 3))
        print("named", anonymous, flush=True)
        if i % 2:
            source, target = "person%d" % (i % 3), "person%d" % ((i + 2) % 3)
            gallery.merge(source, target)
            print("merged", source, target, flush=True)
""").replace("PER_IDENTITY", str(PER_IDENTITY))


def test_sigkill_during_naming_and_merge_leaves_before_or_after(location):
    """Naming an anonymous identity and merging two people move samples in one transaction:
    after a kill at any moment, every anonymous identity still has all its samples or is
    gone with all of them moved, and no sample was lost or duplicated."""
    path = location
    Gallery(path).close()
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rng = random.Random(16)
    made_floor, kills, deadline = 0, 0, time.monotonic() + 25.0
    while kills < 12 and time.monotonic() < deadline:
        child = subprocess.Popen([sys.executable, "-c", NAMER, path, str(kills)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(child.stdout), daemon=True)
        reader.start()
        while not lines and child.poll() is None:
            time.sleep(0.01)
        assert lines and lines[0].strip() == "started", child.stderr.read()
        time.sleep(rng.uniform(0.05, 0.5))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        reader.join(timeout=10)
        child.stderr.close()
        assert child.returncode == -signal.SIGKILL
        kills += 1
        made = made_floor + sum(1 for line in lines if line.startswith("made "))
        named = {line.split()[1] for line in lines if line.startswith("named ")}

        with Gallery(path) as gallery:
            people = gallery.people()
            anonymous = gallery.anonymous()
        # every anonymous identity is whole: all of its samples, or named with all of them
        assert all(a["samples"] == PER_IDENTITY for a in anonymous), anonymous
        assert not named & {a["name"] for a in anonymous}  # a committed naming stays done
        assert len(anonymous) <= kills  # at most the one being named when killed, per run
        assert all(count % PER_IDENTITY == 0 for _, count in people), people
        total = sum(count for _, count in people) + sum(a["samples"] for a in anonymous)
        identities = total // PER_IDENTITY
        assert total % PER_IDENTITY == 0
        assert made <= identities <= made + 1  # nothing lost; at most the uncommitted one
        made_floor = identities
        if not path.startswith("postgresql://"):
            conn = sqlite3.connect(path)
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            conn.close()
    assert kills >= 10, f"only {kills} kills in the time budget"
    assert made_floor > 0
