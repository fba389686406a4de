"""A real headless Chromium for the web page's tests (Debian's chromium + chromium-driver).

Selenium drives ``/usr/bin/chromium`` through ``/usr/bin/chromedriver`` (never a browser or
driver of its own: both paths are given, Selenium Manager stays offline). The browser's camera
is a fake device playing a Y4M file (``--use-file-for-fake-video-capture``) made from real
faces; the server certificate is trusted by its key's hash, nothing is fetched from outside.
"""
from __future__ import annotations

import base64
import hashlib
import os
import pathlib
import shutil
import tempfile
import time
from typing import Callable, Iterable, Optional

import cv2
import numpy as np

CHROMIUM = os.environ.get("FACEREC_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("FACEREC_CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOTS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "screenshots"


def missing() -> Optional[str]:
    """Why the browser tests cannot run here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return (f"{path} not found: install Debian's {package} (`sudo apt-get install "
                    "chromium chromium-driver`; `make setup` does it as root)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (requirements/test.txt; run make setup)"
    return None


def write_y4m(path: pathlib.Path, frames: Iterable[np.ndarray], fps: int = 10) -> pathlib.Path:
    """A Y4M video (I420, ``C420`` header) of BGR frames of one size, for Chromium's fake
    camera (it plays the file in a loop)."""
    frames = list(frames)
    height, width = frames[0].shape[:2]
    with open(path, "wb") as handle:
        handle.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420\n".encode())
        for frame in frames:
            handle.write(b"FRAME\n")
            handle.write(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


def portrait_frames(face: np.ndarray, size=(640, 480), hold: int = 4) -> list:
    """Frames of one face as a camera would see a person moving a little: shifted, scaled
    and mirrored copies (descriptors differ by more than enrollment's near-duplicate
    distance), each held for ``hold`` frames."""
    width, height = size
    frames = []
    for scale, dx, mirror in ((1.0, 0, False), (0.8, -60, False), (0.9, 50, True),
                              (0.75, 40, False), (1.0, -30, True), (0.85, 0, True)):
        side = int(height * scale)
        image = cv2.resize(cv2.flip(face, 1) if mirror else face, (side, side))
        canvas = np.full((height, width, 3), 96, np.uint8)
        left = max(0, min(width - side, (width - side) // 2 + dx))
        top = (height - side) // 2
        canvas[top:top + side, left:left + side] = image
        frames += [canvas] * hold
    return frames


def spki_hash(cert_pem: bytes) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of a certificate, for Chromium's
    ``--ignore-certificate-errors-spki-list`` (trust exactly this key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    cert = x509.load_pem_x509_certificate(cert_pem)
    der = cert.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


class Browser:
    """One headless Chromium session (use ``close()``)."""

    def __init__(self, camera_file: pathlib.Path, trusted_cert_pem: bytes,
                 size=(1280, 900)):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager never downloads
        self.profile = tempfile.mkdtemp(prefix="facerec-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        flags = ["--headless=new", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-default-apps", "--disable-extensions",
                 f"--user-data-dir={self.profile}", f"--window-size={size[0]},{size[1]}",
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                 f"--use-file-for-fake-video-capture={pathlib.Path(camera_file).resolve()}",
                 f"--ignore-certificate-errors-spki-list={spki_hash(trusted_cert_pem)}"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            flags.append("--no-sandbox")  # Chromium's sandbox refuses to run as root
        for flag in flags:
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.set_page_load_timeout(60)

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def wait(self, predicate: Callable[[], object], timeout: float, what: str,
             period: float = 0.3):
        """The first truthy value of ``predicate()``; AssertionError naming ``what``."""
        deadline = time.monotonic() + timeout
        last_error = None
        while time.monotonic() < deadline:
            try:
                value = predicate()
                if value:
                    return value
            except Exception as exc:  # noqa: BLE001 - the page is still changing
                last_error = exc
            time.sleep(period)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}"
                             + (f" (last error: {last_error})" if last_error else ""))

    def text(self, element_id: str) -> str:
        return self.js("const e = document.getElementById(arguments[0]);"
                       "return e ? e.textContent : null;", element_id) or ""

    def screenshot(self, name: str, whole_page: bool = False) -> pathlib.Path:
        """docs/screenshots/<name>.png of the window (``whole_page``: as tall as the page)."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        if whole_page:
            width, height = self.js("return [document.documentElement.scrollWidth,"
                                    " document.documentElement.scrollHeight];")
            shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
            path.write_bytes(base64.b64decode(shot["data"]))
        else:
            assert self.driver.save_screenshot(str(path)), f"no screenshot {path}"
        return path

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)
