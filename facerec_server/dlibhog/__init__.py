"""dlib's fhog (HOG) object detectors without dlib: read the ``.svm`` file, run compiled
numpy kernels, get dlib's boxes and scores.

* :mod:`.model`: reader of ``object_detector<scan_fhog_pyramid<pyramid_down<6>>>`` files
  (``fhog_object_detector.save``, ``train_simple_object_detector``; several weight vectors
  per file, like dlib's frontal face detector) and dlib's filter banks;
* :mod:`.pyramid`: dlib's image pyramid (``pyramid_down<6>``, ``pyramid_up``), bit-exact;
* :mod:`.fhog`: fhog geometry and dlib's orientation table;
* :mod:`.kernels`: the compiled loops: resize (bit-exact), fhog features (dlib's decisions,
  votes summed in another order: within float32 rounding), FFT spectra products;
* :mod:`.reference`: dlib's fhog in dlib's own float32 order (bit-exact), for the tests;
* :mod:`.detector`: :class:`FhogDetector` (filter responses, thresholds, rectangles,
  non-max suppression, the task graph over the threads, per-stage CPU profile), equal to
  ``dlib.fhog_object_detector.run``.
"""
from .model import FhogModel, HogFormatError, frontal_face_model, read_svm

__all__ = ["FhogDetector", "FhogModel", "HogFormatError", "frontal_face_model", "read_svm"]


def __getattr__(name):
    if name == "FhogDetector":  # imports numba: only when a detector is built
        from .detector import FhogDetector
        return FhogDetector
    raise AttributeError(name)
