"""dlib's DNN models without dlib's slow CPU path.

* :mod:`.reader`: pure-Python parser of dlib's serialized networks (+ sha256-keyed cache);
* :mod:`.convert`: the parsed network as an ONNX graph; :mod:`.net`: run it on OpenCV DNN
  (default) or ONNX Runtime;
* :mod:`.embed`: :class:`OpenCVEmbedder`, drop-in for ``core.embed.DlibEmbedder``;
* :mod:`.mmod`: :class:`OpenCVMmodDetector`, drop-in for ``core.detect.CnnDetector``
  (dlib's image pyramid, window decoding and NMS reproduced in numpy).
"""
from .reader import DlibFormatError, UnsupportedLayerError, load_net, read_net

__all__ = ["DlibFormatError", "UnsupportedLayerError", "load_net", "read_net",
           "OpenCVEmbedder", "OpenCVMmodDetector", "MmodNet", "DlibNet"]


def __getattr__(name):
    if name == "OpenCVEmbedder":
        from .embed import OpenCVEmbedder
        return OpenCVEmbedder
    if name in ("OpenCVMmodDetector", "MmodNet"):
        from . import mmod
        return getattr(mmod, name)
    if name == "DlibNet":
        from .net import DlibNet
        return DlibNet
    raise AttributeError(name)
