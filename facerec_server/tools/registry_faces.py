"""Real face images that come from package registries (for the demo, tests and benches).

* ``astronaut_path()``: scikit-image's ``skimage/data/astronaut.png`` (PyPI wheel), one face.
* ``messi_path()``: Debian opencv-doc's ``examples/data/messi5.jpg``, one small face (HOG
  finds it at upsample 1). ``make setup`` installs opencv-doc when run as root;
  ``FACEREC_MESSI_JPG`` points elsewhere.
"""
import os
import pathlib

MESSI_PATHS = ("/usr/share/doc/opencv-doc/examples/data/messi5.jpg",)


def astronaut_path() -> pathlib.Path:
    import skimage
    return pathlib.Path(skimage.__file__).parent / "data" / "astronaut.png"


def messi_path() -> pathlib.Path:
    override = os.environ.get("FACEREC_MESSI_JPG")
    for candidate in ((override,) if override else ()) + MESSI_PATHS:
        if candidate and os.path.isfile(candidate):
            return pathlib.Path(candidate)
    raise FileNotFoundError(
        "messi5.jpg not found: install Debian's opencv-doc (`sudo apt-get install opencv-doc`, "
        "done by `make setup` as root) or set FACEREC_MESSI_JPG")
