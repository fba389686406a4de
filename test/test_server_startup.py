"""Server start-up: clear errors for bad model files and gallery files; two inputs at once."""
import os
import subprocess
import sys
import time

import pytest
from sensor_msgs.msg import CompressedImage

from facerec_msgs.msg import FaceArray
from facerec_msgs.srv import ListFaces
from rosutil import (Proc, child_env, compressed, jpeg, start_node, wait_for_service,
                     write_params)


def _run_server(tmp_path, values, timeout=120):
    params = write_params(tmp_path / "p.yaml", "facerec_server", values)
    return subprocess.run(
        [sys.executable, "-m", "facerec_server.server_node", "--ros-args", "--params-file",
         str(params)], env=child_env(), capture_output=True, text=True, timeout=timeout)


def test_missing_model_file_stops_startup_with_a_clear_message(tmp_path):
    missing = tmp_path / "nowhere" / "shape_predictor_5_face_landmarks.dat"
    values = {"gallery.path": str(tmp_path / "g.db"),
              "face.models.shape_predictor": str(missing)}
    result = _run_server(tmp_path, values)
    assert result.returncode != 0
    err = result.stderr + result.stdout
    assert str(missing) in err
    assert "face_recognition_models" in err or "dlib.net" in err
    assert "Traceback" not in err


def test_corrupt_model_file_stops_startup_with_a_clear_message(tmp_path):
    corrupt = tmp_path / "dlib_face_recognition_resnet_model_v1.dat"
    corrupt.write_bytes(os.urandom(4096))
    result = _run_server(tmp_path, {"gallery.path": str(tmp_path / "g.db"),
                                    "face.models.recognition": str(corrupt)})
    assert result.returncode != 0
    err = result.stderr + result.stdout
    assert str(corrupt) in err, err[-2000:]


def test_foreign_gallery_file_is_refused_and_left_alone(tmp_path):
    foreign = tmp_path / "notes.db"
    foreign.write_bytes(b"this is not a gallery, keep me\n" * 10)
    before = foreign.read_bytes()
    result = _run_server(tmp_path, {"gallery.path": str(foreign)})
    assert result.returncode != 0
    assert str(foreign) in result.stderr + result.stdout
    assert foreign.read_bytes() == before


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int):
    kids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            kids += [int(k) for k in f.read().split()]
    return kids


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPU cores")
def test_two_inputs_are_served_concurrently_on_two_cores(tmp_path, graph, astronaut, messi):
    proc = start_node("facerec_server.server_node", tmp_path, "server", "facerec_server", {
        "gallery.path": str(tmp_path / "g.db"), "face.upsample": 1,
        "image_topics": ["left/image/compressed", "right/image/compressed"]})
    try:
        wait_for_service(graph, ListFaces, "/facerec_server/list_faces", proc)
        results = graph.subscribe(FaceArray, "/facerec_server/faces")
        left = graph.publisher(CompressedImage, "left/image/compressed", 1)
        right = graph.publisher(CompressedImage, "right/image/compressed", 1)
        assert "2 face worker process(es)" in proc.output()
        workers = _children(proc.popen.pid)
        before = {pid: _cpu_seconds(pid) for pid in workers}
        left_data, right_data = jpeg(astronaut), jpeg(messi)
        end = time.monotonic() + 15
        while time.monotonic() < end:
            left.publish(compressed(graph, left_data, frame_id="left"))
            right.publish(compressed(graph, right_data, frame_id="right"))
            time.sleep(0.1)
        time.sleep(1.0)
        by_source = {}
        for msg in results.messages:
            by_source.setdefault(msg.source, []).append(msg)
        assert set(by_source) == {"/left/image/compressed", "/right/image/compressed"}
        assert all(m.header.frame_id == "left" for m in by_source["/left/image/compressed"])
        assert all(m.header.frame_id == "right" for m in by_source["/right/image/compressed"])
        # Both worker processes computed (each input got its own core's worth of work).
        used = {pid: _cpu_seconds(pid) - before[pid] for pid in workers if pid in before}
        busy = [pid for pid, secs in used.items() if secs > 2.0]
        assert len(busy) >= 2, f"worker CPU seconds over 15 s: {used}"
    finally:
        assert proc.stop() == 0, proc.output()


def test_proc_helper_reports_exit(tmp_path):
    """The helper used above reports a dead child (guards the tests' own plumbing)."""
    proc = Proc([sys.executable, "-c", "import sys; sys.exit(3)"], tmp_path, "dead")
    proc.popen.wait(10)
    assert not proc.alive() and proc.stop() == 3


@pytest.mark.parametrize("values, expected", [
    ({"image_topics": ["a/image", "a/image"]}, "twice"),
    ({"image_topics": [""]}, "image_topics"),
    ({"image_reliability": "bogus"}, "image_reliability"),
    ({"max_frame_age": "soon"}, "max_frame_age must be a number"),  # (an integer is taken)
    ({"face.jitter": 1000}, "face.jitter"),
])
def test_invalid_startup_values_stop_with_a_reason(tmp_path, values, expected):
    result = _run_server(tmp_path, dict(values, **{"gallery.path": str(tmp_path / "g.db")}))
    err = result.stderr + result.stdout
    assert result.returncode == 1, err[-2000:]
    assert "cannot start" in err and expected in err
    assert "Traceback" not in err


def _descendants(pid: int):
    found, todo = [], [pid]
    while todo:
        for kid in _children(todo.pop()):
            found.append(kid)
            todo.append(kid)
    return found


def test_sigkilled_server_leaves_no_worker_processes(tmp_path, graph):
    proc = start_node("facerec_server.server_node", tmp_path, "server", "facerec_server", {
        "gallery.path": str(tmp_path / "g.db"), "workers": 2})
    wait_for_service(graph, ListFaces, "/facerec_server/list_faces", proc)
    workers = _descendants(proc.popen.pid)
    assert len(workers) >= 2, workers
    proc.popen.kill()
    proc.popen.wait(10)
    deadline = time.monotonic() + 20
    alive = workers
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in workers if os.path.exists(f"/proc/{pid}")
                 and open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] != "Z"]
    assert not alive, f"orphaned worker processes: {alive}"


# --- issue 21: start-up files and values, each refused with one line ---------------------------

def _sparse(path, size):
    """A file of ``size`` bytes that takes no disk space (a stand-in for a huge file)."""
    with open(path, "wb") as handle:
        handle.truncate(size)
    return str(path)


def _corrupt(path):
    path.write_bytes(os.urandom(4096))
    return str(path)


def _fifo(path):
    os.mkfifo(path)
    return str(path)


def _gallery_with(path, statement):
    """A real gallery file changed by another program: ``statement`` run with sqlite3."""
    import sqlite3
    from facerec_server.core.gallery import Gallery
    Gallery(str(path)).close()
    with sqlite3.connect(str(path)) as db:
        db.execute(statement)
    return str(path)


STARTUP_FILES = {
    # item 7: a 4 GB file blocked the parameter service 27 s and the worker kept 4.7 GB
    "huge model": (lambda t: {"face.models.recognition": _sparse(t / "big.dat", 1 << 30)},
                   ["big.dat", "1073741824 bytes, more than a recognition model file can be"]),
    # item 8: a corrupt CNN detector file was accepted while the detector is hog
    "corrupt unused model": (
        lambda t: {"face.detector": "hog",
                   "face.models.cnn_detector": _corrupt(t / "mmod.dat")},
        ["mmod.dat", "cnn_detector", "corrupt"]),
    # item 11: a FIFO as the gallery (the server ignored SIGTERM for ~12 min)
    "fifo gallery": (lambda t: {"gallery.path": _fifo(t / "fifo.db")},
                     ["fifo.db", "not a regular file (a FIFO)"]),
    "fifo model": (lambda t: {"face.models.shape_predictor": _fifo(t / "sp.dat")},
                   ["sp.dat", "not a regular file (a FIFO)"]),
    # item 14: raw tracebacks before
    "gallery without generation": (
        lambda t: {"gallery.path": _gallery_with(
            t / "nogen.db", "DELETE FROM meta WHERE key = 'generation'")},
        ["nogen.db", "generation"]),
    "gallery with a bad generation": (
        lambda t: {"gallery.path": _gallery_with(
            t / "badgen.db", "UPDATE meta SET value = 'seven' WHERE key = 'generation'")},
        ["badgen.db", "generation", "'seven'"]),
    "topic starting with a digit": (lambda t: {"image_topics": ["9abc"]},
                                    ["image_topics", "'9abc'"]),
    "unknown user in gallery path": (lambda t: {"gallery.path": "~nouser-facerec/x.db"},
                                     ["~nouser-facerec/x.db", "no user 'nouser-facerec'"]),
}


@pytest.mark.parametrize("case", sorted(STARTUP_FILES))
def test_unusable_startup_values_stop_with_one_line(tmp_path, case):
    make, expected = STARTUP_FILES[case]
    values = {"gallery.path": str(tmp_path / "g.db")}
    values.update(make(tmp_path))
    result = _run_server(tmp_path, values, timeout=90)
    err = result.stderr + result.stdout
    assert result.returncode == 1, err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    line = next((line for line in err.splitlines() if "cannot start" in line), "")
    for text in expected:
        assert text in line, (text, err[-2000:])
    assert not os.path.exists(os.path.join(tmp_path, "~nouser-facerec"))
