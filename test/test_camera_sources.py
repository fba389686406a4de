"""ROS-free tests of the camera side: sources, encoder, rate keeper and capture loop."""
import threading
import time

import cv2
import numpy as np
import pytest

from facerec_camera.encode import EncodeError, FrameEncoder
from facerec_camera.pipeline import CaptureLoop
from facerec_camera.rate import RateKeeper
from facerec_camera.sources import (Frame, ImageFolderSource, OpenCVCameraSource,
                                    PiCameraSource, SourceError, TestPatternSource,
                                    VideoFileSource, ensure_huffman_tables, frames, is_jpeg,
                                    open_source)


def write_video(path, image, count=20, size=(160, 120), fps=20.0):
    """A short MJPG .avi of ``image`` panning across (real face content), ``count`` frames."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened(), "OpenCV cannot write MJPG/.avi here"
    h, w = image.shape[:2]
    crop_w, crop_h = w * 3 // 4, h * 3 // 4
    for i in range(count):
        x = (i * (w - crop_w)) // max(1, count - 1)
        writer.write(cv2.resize(image[:crop_h, x:x + crop_w], size,
                                interpolation=cv2.INTER_AREA))
    writer.release()
    return path


def decode(data):
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a decodable JPEG"
    return image


@pytest.fixture
def video(tmp_path, astronaut):
    return write_video(tmp_path / "astronaut.avi", astronaut)


@pytest.fixture
def folder(tmp_path, astronaut, messi):
    folder = tmp_path / "images"
    folder.mkdir()
    small = cv2.resize(astronaut, (128, 128))
    cv2.imwrite(str(folder / "b_astronaut.png"), small)
    cv2.imwrite(str(folder / "a_messi.jpg"), messi)
    cv2.imwrite(str(folder / "c_flipped.BMP"), small[:, ::-1])
    (folder / "notes.txt").write_text("not an image")
    (folder / "d_broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    return folder


# --- sources ---------------------------------------------------------------------------------

def test_pattern_source_moves_and_counts():
    with TestPatternSource(96, 64) as source:
        got = frames(source, 5)
    assert len(got) == 5 and source.count == 5
    for frame in got:
        assert frame.jpeg is None and frame.image_bgr.shape == (64, 96, 3)
        assert frame.image_bgr.dtype == np.uint8
    assert all(a.capture_time <= b.capture_time for a, b in zip(got, got[1:]))
    # consecutive frames differ (moving ball, counter)
    for a, b in zip(got, got[1:]):
        assert np.count_nonzero(a.image_bgr != b.image_bgr) > 50
    assert not source.is_open
    with pytest.raises(SourceError):
        source.read()
    with pytest.raises(SourceError):
        TestPatternSource(8, 8)


def test_folder_source_sorted_skips_unreadable_and_loops(folder, astronaut, messi):
    source = ImageFolderSource(folder, loop=False).open()
    assert [p.name for p in source.files] == [
        "a_messi.jpg", "b_astronaut.png", "c_flipped.BMP", "d_broken.jpg"]
    got = frames(source, 10)
    assert len(got) == 3  # the broken jpeg is skipped, then the end
    assert got[0].image_bgr.shape == messi.shape
    assert got[1].image_bgr.shape == (128, 128, 3)
    assert np.array_equal(got[2].image_bgr, got[1].image_bgr[:, ::-1])
    assert source.read() is None
    assert [p.name for p in source.skipped] == ["d_broken.jpg"]
    source.close()

    looping = ImageFolderSource(folder, loop=True).open()
    names = [f.image_bgr.shape for f in frames(looping, 7)]
    assert len(names) == 7 and names[3] == messi.shape  # wrapped around
    looping.close()


def test_folder_source_errors(tmp_path):
    with pytest.raises(SourceError, match="no .*images"):
        ImageFolderSource(tmp_path).open()
    (tmp_path / "x.png").write_bytes(b"garbage")
    for loop in (True, False):
        # issue 21 item 14: found when the source opens (the camera exits 2 at start-up, as
        # the README says), not at the first read (exit 1)
        with pytest.raises(SourceError, match="none of the images"):
            ImageFolderSource(tmp_path, loop=loop).open()


def test_folder_source_skips_unusable_files_with_a_reason(tmp_path, caplog):
    """Issue 21 items 1 and 11: a small JPEG declaring 12000x9000 behind a stray byte, a
    FIFO and a symbolic link to /dev/zero in a folder are skipped (one warning each, naming
    the file and why), the other images are delivered."""
    import os
    from jpeg_bombs import bomb
    good = np.full((48, 64, 3), 200, np.uint8)
    (tmp_path / "a_big.jpg").write_bytes(bomb("stray byte", 12000, 9000))
    os.mkfifo(tmp_path / "b_pipe.jpg")
    (tmp_path / "c_zero.jpg").symlink_to("/dev/zero")
    cv2.imwrite(str(tmp_path / "d_good.png"), good)
    source = ImageFolderSource(tmp_path, loop=True)
    source.max_pixels = 1_000_000
    with caplog.at_level("WARNING", logger="facerec_camera"):
        source.open()
        shapes = [source.read().image_bgr.shape for _ in range(3)]
    assert shapes == [(48, 64, 3)] * 3
    text = caplog.text
    assert "a_big.jpg: image of 12000x9000 = 108000000 pixels exceeds max_pixels=1000000" \
        in text
    assert text.count("a_big.jpg") == 1  # once, not once per loop
    # list_images keeps regular files only: the FIFO and the link to a device never get in
    assert "b_pipe" not in text and "c_zero" not in text
    assert [p.name for p in source.files] == ["a_big.jpg", "d_good.png"]


def test_unusable_sources_are_named_for_what_they_are(tmp_path):
    """Issue 21 item 14: FIFO and http sources were reported as "no such file or
    directory"."""
    import os
    fifo = tmp_path / "stream.mjpeg"
    os.mkfifo(fifo)
    with pytest.raises(SourceError, match="is a FIFO, not a file, folder or camera"):
        open_source(str(fifo))
    with pytest.raises(SourceError, match="is a URL: network streams are not a source"):
        open_source("http://camera.local/stream.mjpg")
    with pytest.raises(SourceError, match="no user 'nouser-facerec'"):
        open_source("~nouser-facerec/video.mp4")


def test_video_file_source_reads_all_frames_then_ends(video):
    source = VideoFileSource(video, loop=False).open()
    got = frames(source, 100)
    assert len(got) == 20
    assert all(f.image_bgr.shape == (120, 160, 3) for f in got)
    assert not np.array_equal(got[0].image_bgr, got[-1].image_bgr)  # it pans
    assert source.read() is None
    source.close()

    looping = VideoFileSource(video, loop=True).open()
    got = frames(looping, 45)
    assert len(got) == 45
    assert np.array_equal(got[0].image_bgr, got[20].image_bgr)
    looping.close()


def test_video_file_source_rejects_non_video(tmp_path):
    bogus = tmp_path / "bogus.avi"
    bogus.write_text("this is not a video")
    with pytest.raises(SourceError, match="bogus.avi"):
        VideoFileSource(bogus).open()
    with pytest.raises(SourceError, match="(?i)no such file"):
        VideoFileSource(tmp_path / "missing.avi").open()


def test_open_source_specs(tmp_path, folder, video):
    assert isinstance(open_source("pattern"), TestPatternSource)
    assert isinstance(open_source(" TEST ", width=64, height=48), TestPatternSource)
    camera = open_source("0", width=320, height=240, fps=10)
    assert isinstance(camera, OpenCVCameraSource) and camera.device == 0 and camera.live
    assert (camera.width, camera.height, camera.fps) == (320, 240, 10.0)
    assert open_source(3).device == 3
    assert isinstance(open_source("picamera"), PiCameraSource)
    assert isinstance(open_source(str(folder)), ImageFolderSource)
    single = open_source(str(folder / "a_messi.jpg"))
    assert isinstance(single, ImageFolderSource)
    assert isinstance(open_source(str(video), loop=True), VideoFileSource)
    assert open_source(str(video), loop=True).loop

    for spec, message in [("", "empty"), ("   ", "empty"), ("bogus", "unknown source"),
                          ("/dev/video987", "no such camera device"),
                          (str(tmp_path / "missing.mp4"), "no such file"),
                          ("missing.avi", "no such file"), (None, "invalid source"),
                          (True, "invalid source")]:
        with pytest.raises(SourceError, match=message):
            open_source(spec)


def test_missing_camera_and_picamera_give_clear_errors():
    with pytest.raises(SourceError, match="could not open camera 97"):
        OpenCVCameraSource(97).open()
    try:
        import picamera2  # noqa: F401
    except ImportError:
        with pytest.raises(SourceError, match="pip install picamera2"):
            PiCameraSource().open()
    else:  # pragma: no cover - only on a Raspberry Pi
        pytest.skip("picamera2 is installed here")


# --- encoder ---------------------------------------------------------------------------------

def test_encoder_quality_and_resize(astronaut):
    high = FrameEncoder(jpeg_quality=95).encode_image(astronaut)
    low = FrameEncoder(jpeg_quality=20).encode_image(astronaut)
    assert is_jpeg(high) and is_jpeg(low)
    assert len(low) < 0.5 * len(high)
    assert decode(high).shape == astronaut.shape

    half = FrameEncoder(resize=0.5).encode(Frame(astronaut, None, 0.0))
    assert decode(half).shape == (256, 256, 3)
    odd = FrameEncoder(resize=0.3).encode_image(astronaut)
    assert decode(odd).shape == (154, 154, 3)
    fixed = FrameEncoder(resize=(200, 100)).encode_image(astronaut)
    assert decode(fixed).shape == (100, 200, 3)
    assert FrameEncoder(resize=1.0).resize is None
    assert FrameEncoder(resize=0.25).output_size(640, 480) == (160, 120)


def test_encoder_passes_camera_jpeg_through_unless_resizing(astronaut):
    camera_jpeg = FrameEncoder(jpeg_quality=70).encode_image(astronaut)
    frame = Frame(None, camera_jpeg, time.time())
    encoder = FrameEncoder(jpeg_quality=10)
    assert encoder.encode(frame) is camera_jpeg
    assert encoder.passthrough_count == 1 and encoder.encoded_count == 0
    for scale, size in [(0.5, 256), (0.2, 102), (0.7, 358)]:  # reduced decode paths too
        resized = decode(FrameEncoder(resize=scale).encode(frame))
        assert resized.shape == (size, size, 3)
    with pytest.raises(EncodeError):
        FrameEncoder(resize=0.5).encode(Frame(None, b"\xff\xd8\xff junk", 0.0))


@pytest.mark.parametrize("kwargs", [
    {"jpeg_quality": 0}, {"jpeg_quality": 101}, {"jpeg_quality": 80.0}, {"jpeg_quality": True},
    {"jpeg_quality": "80"}, {"resize": 0}, {"resize": 0.0}, {"resize": -0.5}, {"resize": 1.5},
    {"resize": (0, 10)}, {"resize": (10,)}, {"resize": "640x480"}, {"resize": True}])
def test_encoder_rejects_bad_settings(kwargs):
    with pytest.raises(EncodeError):
        FrameEncoder(**kwargs)


def test_huffman_tables_inserted_into_mjpeg_without_them(astronaut):
    full = FrameEncoder(jpeg_quality=75).encode_image(astronaut[:64, :64])
    # strip the DHT segments, as many UVC cameras send them
    stripped, pos = bytearray(full[:2]), 2
    while full[pos + 1] != 0xDA:
        length = int.from_bytes(full[pos + 2:pos + 4], "big")
        if full[pos + 1] != 0xC4:
            stripped += full[pos:pos + 2 + length]
        pos += 2 + length
    stripped += full[pos:]
    stripped = bytes(stripped)
    assert b"\xff\xc4" not in stripped[:pos]
    fixed = ensure_huffman_tables(stripped)
    assert fixed == full  # libjpeg writes exactly the standard tables right before SOS
    assert ensure_huffman_tables(full) is full


# --- rate keeper -----------------------------------------------------------------------------

class FakeClock:
    def __init__(self, start=1000.0):
        self.now = start
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds + 0.0007  # sleep always overshoots a little


def test_rate_keeper_has_no_drift():
    clock = FakeClock()
    rate = RateKeeper(30.0, clock=clock, sleep=clock.sleep)
    rng = np.random.default_rng(1)
    dues = []
    for _ in range(3000):
        dues.append(rate.wait())
        clock.now += float(rng.uniform(0.0, 0.025))  # work: up to 75 % of the period
    period = 1 / 30.0
    expected = 1000.0 + period * np.arange(3000)
    assert np.allclose(dues, expected, atol=1e-9, rtol=0)  # on the grid, no accumulation
    assert rate.skipped == 0 and rate.ticks == 3000
    # wall (fake) time after the last tick = its deadline + overshoot + work: nothing piled up
    assert 2999 * period < clock.now - 1000.0 < 2999 * period + 0.0007 + 0.025


def test_rate_keeper_skips_instead_of_bursting():
    clock = FakeClock(0.0)
    rate = RateKeeper(10.0, clock=clock, sleep=clock.sleep)
    assert rate.wait() == 0.0
    clock.now = 0.35  # the work took 3.5 periods
    due = rate.wait()  # late: runs at once, for the latest missed deadline
    assert due == pytest.approx(0.3) and rate.skipped == 2 and clock.sleeps == []
    nxt = rate.wait()  # the next tick waits for 0.4 rather than firing 0.1, 0.2 back to back
    assert nxt == pytest.approx(0.4) and clock.sleeps == [pytest.approx(0.05)]
    rate.set_rate(5.0)
    assert rate.wait() == pytest.approx(0.6)
    rate.reset()
    clock.now = 7.0
    assert rate.wait() == 7.0
    for bad in (0, -1.0, float("nan"), float("inf"), True, "10"):
        with pytest.raises(ValueError):
            RateKeeper(bad)


# --- capture loop ----------------------------------------------------------------------------

class FlakyCamera(TestPatternSource):
    """Stands in for a USB camera that is unplugged after ``fail_after`` frames and only comes
    back after ``failed_opens`` further open attempts (hardware this machine lacks)."""

    live = True
    description = "flaky camera"

    def __init__(self, fail_after, failed_opens):
        super().__init__(32, 32)
        self.fail_after, self.failed_opens, self.opens = fail_after, failed_opens, 0

    def _open(self):
        self.opens += 1
        if 1 < self.opens <= 1 + self.failed_opens:
            raise SourceError("camera not found")
        super()._open()

    def _read(self):
        if self.opens == 1 and self.count >= self.fail_after:
            raise SourceError("flaky camera stopped delivering frames")
        return super()._read()


def run_loop(source, fps, until, timeout=10.0, **kwargs):
    delivered, finished = [], []
    loop = CaptureLoop(source.open(), FrameEncoder(), fps,
                       lambda data, frame: delivered.append((time.monotonic(), data)),
                       on_finished=finished.append, **kwargs)
    loop.start()
    deadline = time.monotonic() + timeout
    while not until(loop, delivered) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert loop.stop(5.0)
    return loop, delivered, finished


def test_capture_loop_reopens_a_lost_camera_with_backoff():
    camera = FlakyCamera(fail_after=3, failed_opens=2)
    loop, delivered, finished = run_loop(
        camera, 100.0, lambda lp, d: len(d) >= 8, backoff_initial=0.02, backoff_max=0.05)
    assert len(delivered) >= 8
    assert loop.stats.lost == 1 and loop.stats.reopens == 1 and camera.opens == 4
    assert finished == [0] and loop.exit_code == 0
    assert all(is_jpeg(data) for _, data in delivered)


def test_capture_loop_ends_finite_source_and_holds_rate(video):
    loop, delivered, finished = run_loop(VideoFileSource(video, loop=False), 50.0,
                                         lambda lp, d: lp.finished.is_set())
    assert finished == [0] and len(delivered) == 20 and loop.stats.frames == 20
    times = [t for t, _ in delivered]
    assert (times[-1] - times[0]) == pytest.approx(19 / 50.0, rel=0.25)
    assert loop.stats.cpu_seconds > 0


def test_capture_loop_stop_interrupts_wait_and_survives_deliver_errors():
    calls = []

    def deliver(data, frame):
        calls.append(1)
        raise RuntimeError("transport down")

    loop = CaptureLoop(TestPatternSource(32, 32).open(), FrameEncoder(), 0.5, deliver)
    loop.start()
    while not calls:
        time.sleep(0.01)
    started = time.monotonic()
    assert loop.stop(5.0)  # waiting ~2 s for the next tick: must end at once
    assert time.monotonic() - started < 0.5
    assert loop.stats.deliver_errors == 1 and loop.stats.frames == 0
    assert not any(t.name == "facerec-capture" for t in threading.enumerate())


# --- USB camera logic, with a stand-in for the camera hardware this machine lacks ------------

class FakeV4L2Capture:
    """Mimics OpenCV's V4L2 backend (cap_v4l.cpp) for a UVC camera: MJPEG at ``modes`` sizes;
    with CONVERT_RGB=0 ``read()`` returns the raw buffer as a 1xN uint8 Mat."""

    def __init__(self, image, modes=((640, 480), (320, 240)), mjpeg=True, unplug_after=None,
                 raw_payload=None):
        self.image, self.modes, self.mjpeg = image, modes, mjpeg
        self.unplug_after, self.raw_payload = unplug_after, raw_payload
        self.props = {cv2.CAP_PROP_FOURCC: float(cv2.VideoWriter_fourcc(*"YUYV")),
                      cv2.CAP_PROP_FRAME_WIDTH: 640.0, cv2.CAP_PROP_FRAME_HEIGHT: 480.0,
                      cv2.CAP_PROP_CONVERT_RGB: 1.0}
        self.reads = 0
        self.released = False

    def isOpened(self):
        return True

    def release(self):
        self.released = True

    def get(self, prop):
        return self.props.get(prop, 0.0)

    def set(self, prop, value):
        if prop == cv2.CAP_PROP_FOURCC:
            if not self.mjpeg:
                return False
            self.props[prop] = float(value)
        elif prop in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT):
            self.props[prop] = float(value)
            w, h = self.props[cv2.CAP_PROP_FRAME_WIDTH], self.props[cv2.CAP_PROP_FRAME_HEIGHT]
            if (w, h) not in self.modes:  # the driver snaps to the nearest mode it has
                w, h = min(self.modes, key=lambda m: abs(m[0] - w) + abs(m[1] - h))
            self.props[cv2.CAP_PROP_FRAME_WIDTH], self.props[cv2.CAP_PROP_FRAME_HEIGHT] = w, h
        elif prop == cv2.CAP_PROP_CONVERT_RGB:
            self.props[prop] = float(value)
        else:
            return False
        return True

    def read(self):
        self.reads += 1
        if self.unplug_after is not None and self.reads > self.unplug_after:
            return False, None
        size = (int(self.props[cv2.CAP_PROP_FRAME_WIDTH]),
                int(self.props[cv2.CAP_PROP_FRAME_HEIGHT]))
        image = cv2.resize(self.image, size)
        if self.props[cv2.CAP_PROP_CONVERT_RGB]:
            return True, image
        payload = self.raw_payload or cv2.imencode(".jpg", image)[1].tobytes()
        return True, np.frombuffer(payload, np.uint8).reshape(1, -1).copy()


def fake_camera(fake, **kwargs):
    source = OpenCVCameraSource(0, **kwargs)
    source.capture_factory = lambda device, backend: fake
    return source


def test_usb_camera_mjpeg_passthrough_and_fallbacks(astronaut):
    fake = FakeV4L2Capture(astronaut)
    with fake_camera(fake, width=320, height=240) as source:
        assert source.raw_mjpeg and source.actual_fourcc == "MJPG"
        frame = source.read()
        assert frame.image_bgr is None and is_jpeg(frame.jpeg)
        assert decode(frame.jpeg).shape == (240, 320, 3)
        assert FrameEncoder(jpeg_quality=5).encode(frame) is frame.jpeg  # no re-encode
    assert fake.released

    # the camera cannot do the requested size: decoded frames (re-encoded at our quality)
    with fake_camera(FakeV4L2Capture(astronaut), width=800, height=600) as source:
        assert not source.raw_mjpeg and source.actual_size == (640, 480)
        assert source.read().image_bgr.shape == (480, 640, 3)
    # no MJPEG support, or pass-through turned off: decoded frames
    with fake_camera(FakeV4L2Capture(astronaut, mjpeg=False), width=320, height=240) as src:
        assert not src.raw_mjpeg and src.read().image_bgr is not None
    with fake_camera(FakeV4L2Capture(astronaut), width=320, height=240,
                     passthrough=False) as source:
        assert not source.raw_mjpeg and source.read().image_bgr.shape == (240, 320, 3)
    # a raw buffer that is not a JPEG: switch back to converted frames for good
    odd = FakeV4L2Capture(astronaut, raw_payload=b"\x00\x01not-jpeg" * 10)
    with fake_camera(odd, width=320, height=240) as source:
        assert source.read().image_bgr.shape == (240, 320, 3)
        assert not source.raw_mjpeg and odd.props[cv2.CAP_PROP_CONVERT_RGB] == 1


def test_usb_camera_unplugged_raises_source_error(astronaut):
    with fake_camera(FakeV4L2Capture(astronaut, unplug_after=2), width=320,
                     height=240) as source:
        assert len(frames(source, 2)) == 2
        with pytest.raises(SourceError, match="camera 0 stopped delivering frames"):
            source.read()
