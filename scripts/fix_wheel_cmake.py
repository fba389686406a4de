"""Point the ROS wheels' exported CMake files at this machine's Python and numpy headers.

The ros-* message wheels were built in a manylinux container; their exported .cmake files
name /opt/python/cp3XX-cp3XX/include/python3.X and .../numpy/_core/include, which do not
exist here, and CMake's generate step fails on them. This rewrites those paths (idempotent).
Usage: python fix_wheel_cmake.py <venv>
"""
import pathlib
import re
import sys
import sysconfig

import numpy


def main(venv: str) -> int:
    py_include = sysconfig.get_paths()["include"]
    np_include = numpy.get_include()
    pattern_np = re.compile(
        r"/opt/python/cp\d+-cp\d+/lib/python3\.\d+/site-packages/numpy/_core/include")
    pattern_py = re.compile(r"/opt/python/cp\d+-cp\d+/include/python3\.\d+")
    changed = 0
    for path in pathlib.Path(venv, "share").rglob("*.cmake"):
        text = path.read_text(errors="surrogateescape")
        if "/opt/python/" not in text:
            continue
        new = pattern_py.sub(py_include, pattern_np.sub(np_include, text))
        if new != text:
            path.write_text(new, errors="surrogateescape")
            changed += 1
    if changed:
        print(f"[setup] rewrote wheel builder paths in {changed} CMake files", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
