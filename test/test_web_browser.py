"""The web pages in a real headless Chromium, against real nodes over real DDS.

One browser session for the module (the tests run in order and build on each other), a
fake camera playing real faces (scikit-image's astronaut, moved, scaled and mirrored), a
facerec_bridge serving the pages, and a real facerec_camera + facerec_server pair whose
topic the Cameras page must list next to the browser. Screenshots go to docs/screenshots/
(the README shows them)."""
import sqlite3
import time

import cv2
import pytest

import webutil
from facerec_server.core.enroll import Enroller
from facerec_server.core.gallery import Gallery
from facerec_server.core.pipeline import FaceConfig, FacePipeline
from rosutil import start_node
from test_bridge_node import _free_port, _wait_port

pytestmark = pytest.mark.skipif(webutil.missing() is not None, reason=str(webutil.missing()))

TOKEN = "browser-token-0123456789abcdef"
CAMERA_TOPIC = "/camera/image/compressed"


def _people(gallery_path) -> list:
    """Known people's names in the gallery file, read by SQLite directly (not through the code
    under test). The server also keeps anonymous identities of the unknown faces its camera
    shows (issue 16): those are not listed."""
    with sqlite3.connect(f"file:{gallery_path}?mode=ro", uri=True) as db:
        return [row[0] for row in db.execute(
            "SELECT name FROM people WHERE anonymous = 0 ORDER BY name")]


@pytest.fixture(scope="module")
def site(tmp_path_factory, astronaut, messi):
    import trustme
    tmp = tmp_path_factory.mktemp("web_browser")
    gallery_path = tmp / "gallery.db"
    with Gallery(str(gallery_path)) as gallery:
        result = Enroller(gallery, FacePipeline(FaceConfig(upsample=0))).enroll_images(
            "eileen", [astronaut], source="test")
        assert result.success, result.message
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    server_cert.cert_chain_pems[0].write_to_path(str(tmp / "server.pem"))
    server_cert.private_key_pem.write_to_path(str(tmp / "server.key"))
    (tmp / "tokens").write_text(f"browser:{TOKEN}\n")
    frames = tmp / "frames"  # the ROS camera: a stranger (messi5, enlarged)
    frames.mkdir()
    for index, scale in enumerate((2.5, 2.3)):
        cv2.imwrite(str(frames / f"{index}.jpg"), cv2.resize(messi, None, fx=scale, fy=scale))
    port = _free_port()
    procs = [
        start_node("facerec_server.server_node", tmp, "server", "facerec_server", {
            "gallery.path": str(gallery_path), "workers": 1, "diagnostics_period": 0.5}),
        start_node("facerec_camera.camera_node", tmp, "camera", "facerec_camera", {
            "source": str(frames), "fps": 2.0}),
        start_node("facerec_server.bridge_node", tmp, "bridge", "facerec_bridge", {
            "bridge.host": "127.0.0.1", "bridge.port": port,
            "bridge.certfile": str(tmp / "server.pem"),
            "bridge.keyfile": str(tmp / "server.key"), "bridge.tokens_file": str(tmp / "tokens"),
            "gallery.path": str(gallery_path), "workers": 1, "diagnostics_period": 0.5}),
    ]
    browser = None
    try:
        _wait_port(port, procs[2])
        camera = webutil.write_y4m(tmp / "camera.y4m", webutil.portrait_frames(astronaut))
        browser = webutil.Browser(camera, server_cert.cert_chain_pems[0].bytes())
        yield {"url": f"https://127.0.0.1:{port}", "browser": browser, "procs": procs,
               "gallery": gallery_path}
    finally:
        if browser is not None:
            browser.close()
        codes = {proc.name: proc.stop() for proc in reversed(procs)}
        failed = {name: code for name, code in codes.items() if code != 0}
        assert not failed, "\n".join(f"{p.name}:\n{p.output()[-3000:]}" for p in procs
                                     if p.name in failed)


def _page(site, name):
    browser = site["browser"]
    browser.js("location.hash = arguments[0];", name)
    browser.wait(lambda: browser.js("return document.getElementById('page-' + arguments[0])"
                                    ".classList.contains('active');", name), 10,
                 f"the {name} page")
    return browser


def _names(browser):
    return browser.js("return [...document.querySelectorAll('#live-names li')]"
                      ".map(e => e.textContent);")


def test_a_wrong_or_missing_token_gets_no_page(site):
    browser = site["browser"]
    driver = browser.driver
    for path in ("/", "/static/app.js", "/api/people"):
        driver.get(site["url"] + path)
        assert browser.js("return !!document.getElementById('login');"), path
        assert not browser.js("return !!document.getElementById('nav');"), path
        assert "eileen" not in driver.page_source
    browser.screenshot("login")
    driver.find_element("id", "token").send_keys("wrong-token-0123456789")
    driver.find_element("id", "login-button").click()
    browser.wait(lambda: browser.text("login-error") == "Wrong token.", 10, "'Wrong token.'")
    assert not browser.js("return !!document.getElementById('nav');")
    assert driver.get_cookies() == []


def test_live_page_shows_the_enrolled_name(site):
    browser = site["browser"]
    driver = browser.driver
    driver.get(site["url"] + "/")
    driver.find_element("id", "token").send_keys(TOKEN)
    driver.find_element("id", "login-button").click()
    browser.wait(lambda: browser.js("return !!document.getElementById('nav');"), 15,
                 "the application after logging in")
    cookie = driver.get_cookies()[0]
    assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert TOKEN not in driver.current_url and not browser.js("return document.cookie;")
    _page(site, "live")
    browser.wait(lambda: "eileen" in _names(browser), 90, "'eileen' on the Live page")
    assert browser.text("who").startswith("browser")
    assert browser.text("live-status") == "streaming"
    browser.wait(lambda: browser.text("live-fps") not in ("-", "0.0"), 15, "results per second")
    browser.screenshot("live")


def _strangers(gallery_path) -> list:
    """Anonymous identities in the gallery file, read by SQLite directly."""
    with sqlite3.connect(f"file:{gallery_path}?mode=ro", uri=True) as db:
        return [row[0] for row in db.execute(
            "SELECT name FROM people WHERE anonymous = 1 ORDER BY id")]


def _card(browser, name) -> str:
    """The text of the "Not introduced yet" card of ``name`` ('' when there is none)."""
    return browser.js("const card = [...document.querySelectorAll('#anonymous-list .anonymous')]"
                      ".find(c => c.dataset.name === arguments[0]);"
                      "return card ? card.textContent : '';", name)


def test_people_page_names_a_stranger(site, messi):
    # the stranger on the ROS camera: the server gives it an anonymous identity (its tracks)
    seen = _wait_for(lambda: _strangers(site["gallery"]), 90,
                     "the server's anonymous identity of the ROS camera's stranger")
    # a stranger with stored face chips (real descriptors and chips of messi5), as a gallery
    # shared with other servers may hold
    with Gallery(str(site["gallery"])) as gallery:
        enroller = Enroller(gallery, FacePipeline(FaceConfig(upsample=1)))
        big = cv2.resize(messi, None, fx=2.0, fy=2.0)
        samples = [enroller.sample_from_image(image)[0] for image in (big, cv2.flip(big, 1))]
        assert all(sample is not None and sample.chip for sample in samples)
        stranger = gallery.add_anonymous(samples, source="test")
    browser = _page(site, "people")
    refresh = browser.driver.find_element("id", "people-refresh")

    def listed():
        refresh.click()
        return browser.wait(lambda: _card(browser, stranger), 5, f"{stranger}'s card")
    browser.wait(listed, 20, f"{stranger} under 'Not introduced yet'")
    assert browser.js("return !document.getElementById('anonymous-section').hidden;")
    browser.wait(lambda: browser.js(
        "const card = [...document.querySelectorAll('#anonymous-list .anonymous')]"
        ".find(c => c.dataset.name === arguments[0]);"
        "const imgs = [...card.querySelectorAll('img.chip')];"
        "return imgs.length === 2 && imgs.every(i => i.complete && i.naturalWidth === 150);",
        stranger), 20, f"{stranger}'s two face chips")
    assert "2 samples" in _card(browser, stranger)
    # the server's own identity is listed with the input it was seen on (its sightings)
    browser.wait(lambda: refresh.click() or "/camera/image/compressed" in _card(browser, seen[0]),
                 30, f"{seen[0]} seen on the ROS camera's topic")
    browser.screenshot("people")
    # name it "bob" on the page: it is a known person with its chips, no longer a stranger
    card = f'#anonymous-list .anonymous[data-name="{stranger}"]'
    browser.driver.find_element("css selector", f"{card} .name-input").send_keys("bob")
    browser.driver.find_element("css selector", f"{card} .name-button").click()
    browser.wait(lambda: browser.text("people-status") == f"{stranger} is 'bob' now (2 samples)",
                 15, "the naming message")
    browser.wait(lambda: browser.js(
        "const imgs = [...document.querySelectorAll('.person[data-name=\"bob\"] img.chip')];"
        "return imgs.length === 2 && imgs.every(i => i.complete && i.naturalWidth === 150);"),
        15, "bob among the known people with his chips")
    assert not _card(browser, stranger)
    assert "bob" in _people(site["gallery"]) and stranger not in _strangers(site["gallery"])


def _wait_for(predicate, timeout, what, period=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(period)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_people_page_shows_chips_and_forgets(site):
    browser = _page(site, "people")
    browser.wait(lambda: browser.js(
        "const imgs = [...document.querySelectorAll('.person[data-name=\"eileen\"] img.chip')];"
        "return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth === 150);"), 20,
        "eileen's face chip")
    # rename (the gallery's rename, issue 16), then forget under the new name
    assert not browser.js("return document.querySelector('.person[data-name=\"eileen\"] "
                          "button.rename').disabled;")
    field = browser.driver.find_element("css selector",
                                        '.person[data-name="eileen"] .rename-input')
    field.send_keys("Eileen C")
    browser.driver.find_element("css selector", '.person[data-name="eileen"] .rename').click()
    browser.wait(lambda: browser.js(
        "return !!document.querySelector('.person[data-name=\"Eileen C\"]');"), 15,
        "the renamed person")
    assert "Eileen C" in _people(site["gallery"]) and "eileen" not in _people(site["gallery"])
    forget = browser.driver.find_element("css selector", '.person[data-name="Eileen C"] .forget')
    forget.click()
    assert "Really forget Eileen C?" in forget.text and "Eileen C" in _people(site["gallery"])
    forget.click()
    browser.wait(lambda: "forgot 'Eileen C'" in browser.text("people-status"), 15,
                 "the forget message")
    assert not browser.js("return !!document.querySelector('.person[data-name=\"Eileen C\"]');")
    assert "Eileen C" not in _people(site["gallery"])


def test_enroll_adds_alice_from_the_camera_and_live_shows_alice(site):
    browser = _page(site, "enroll")
    driver = browser.driver
    driver.find_element("id", "enroll-name").send_keys("alice")
    samples = driver.find_element("id", "enroll-samples")
    samples.clear()
    samples.send_keys("3")
    driver.find_element("id", "enroll-start").click()
    message = browser.wait(lambda: "enrolled" in browser.text("enroll-result")
                           and browser.text("enroll-result"), 60, "the enrollment result")
    assert "for 'alice'" in message, message
    log = browser.js("return [...document.querySelectorAll('#enroll-log li')]"
                     ".map(e => e.textContent);")
    assert sum("added" in line for line in log) == 3, log
    browser.screenshot("enroll")
    assert _people(site["gallery"]) == ["alice", "bob"]  # bob: named on the People page
    browser = _page(site, "live")
    browser.wait(lambda: "alice" in _names(browser), 60, "'alice' on the Live page")


def test_cameras_lists_the_ros_topic_next_to_the_browser_client(site):
    browser = _page(site, "cameras")

    def card(kind, name):
        return browser.js(
            "return [...document.querySelectorAll('.card.camera')].some(c =>"
            " c.querySelector('.kind').classList.contains(arguments[0]) &&"
            " c.querySelector('.camera-name').textContent === arguments[1] &&"
            " c.querySelector('img').complete && c.querySelector('img').naturalWidth > 0);",
            kind, name)
    browser.wait(lambda: card("client", "browser"), 30, "the browser client with a frame")
    browser.wait(lambda: card("ros", CAMERA_TOPIC), 60, f"{CAMERA_TOPIC} with a frame")
    browser.screenshot("cameras")


def test_statistics_draws_non_empty_charts(site):
    browser = _page(site, "statistics")
    ids = ("chart-people", "chart-recognitions", "chart-fps", "chart-latency",
           "chart-bandwidth", "chart-bandwidth-total")

    def drawn():
        return browser.js(
            "return arguments[0].every(id => {"
            " const chart = window.Chart && window.Chart.getChart(id);"
            " if (!chart) return false;"
            " const values = chart.data.datasets.flatMap(d => d.data)"
            "   .filter(v => v !== null && v > 0);"
            " const canvas = document.getElementById(id);"
            " const pixels = canvas.getContext('2d')"
            "   .getImageData(0, 0, canvas.width, canvas.height).data;"
            " let painted = 0;"
            " for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;"
            " return values.length > 0 && painted > 500; });", list(ids))
    browser.wait(drawn, 30, "six charts with data")
    people = browser.js("return window.Chart.getChart('chart-people').data.labels;")
    assert "alice" in people and "eileen" in people, people
    browser.screenshot("statistics", whole_page=True)
