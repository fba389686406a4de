"""``python -m facerec_server.dlibhog``: compile the detector's kernels into numba's cache
(``make setup`` does this so that the first detection of a node or test does not wait for
the compiler), then print where the cache is and how long it took."""
import os
import time

import numpy as np

from . import FhogDetector, frontal_face_model


def main() -> None:
    started = time.monotonic()
    detector = FhogDetector(frontal_face_model(), threads=1)
    detector.detect(np.zeros((96, 96, 3), np.uint8), 1)
    print(f"facerec_server.dlibhog kernels ready in {time.monotonic() - started:.1f} s "
          f"(cache: {os.environ.get('NUMBA_CACHE_DIR')})")


if __name__ == "__main__":
    main()
