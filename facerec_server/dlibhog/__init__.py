"""dlib's fhog (HOG) object detectors without dlib: read the ``.svm`` file, run in numpy.

* :mod:`.model`: reader of ``object_detector<scan_fhog_pyramid<pyramid_down<6>>>`` files
  (``fhog_object_detector.save``, ``train_simple_object_detector``) and dlib's filter bank;
* :mod:`.fhog`: dlib's fhog features;
* :mod:`.detector`: :class:`FhogDetector`, the image pyramid, filter responses and
  non-max suppression, giving dlib's boxes and scores.
"""
from .model import HogFormatError, read_svm

__all__ = ["HogFormatError", "read_svm"]
