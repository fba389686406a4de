"""Face tracks on real faces with the real dlib models (core.tracking, FacePipeline.follow).

The videos are rendered by facerec_server.tools.track_scenes from registry photos: the
astronaut (enrolled as 'eileen') and messi5 (never enrolled), moved along key frames at 10
frames per second in a 480x360 room; the scene's ground truth says where each face is and how
much of it is hidden. HOG runs at upsample 0 (faces are ~100 px).
"""
import math

import cv2
import numpy as np
import pytest

from facerec_server.core import tracking
from facerec_server.core.match import Matcher
from facerec_server.core.pipeline import FaceConfig, FacePipeline
from facerec_server.core.tracking import (TRACK_CONFIRMED, TRACK_TENTATIVE, FaceTracker,
                                          TrackerSet, TrackIds, TrackingConfig)
from facerec_server.tools.track_scenes import Actor, Occluder, Scene
from boxes import iou

FPS = 10.0


@pytest.fixture(scope="module")
def pipeline(astronaut):
    pipe = FacePipeline(FaceConfig())
    pipe.load()
    sample = pipe.describe(astronaut)[0]
    pipe.matcher.set_gallery(["eileen"], sample.descriptor[None, :])
    return pipe


def _scene(actors, occluders=(), seconds=4.0):
    return Scene(480, 360, FPS, seconds, list(actors), list(occluders))


def _run(scene, pipeline, config=None, frames=None, ended=None, corrupt=None):
    """Track every frame; returns [(frame index, [FaceResult], TrackedFrame reason)]."""
    tracker = FaceTracker(config or TrackingConfig(), on_end=ended)
    out = []
    for index in range(scene.frames if frames is None else frames):
        image = scene.render(index)
        if corrupt is not None:
            image = corrupt(index, image)
        stamp = scene.time(index)
        plan = tracker.plan(stamp)
        frame = pipeline.follow(image, plan)
        out.append((index, tracker.update(frame, stamp, pipeline.matcher), frame))
    return out, tracker


def _ids_of(scene, results, label, min_visible=0.7):
    """Track ids given to ``label``'s face on the frames where it is mostly visible."""
    ids = []
    for index, faces, _ in results:
        for truth in scene.truth(index):
            if truth.label == label and truth.hidden < 1 - min_visible and truth.inside:
                found = [f for f in faces if iou(f.box, truth.box) > 0.4]
                ids.append(found[0].track_id if found else None)
    return ids


def test_crossing_paths_keep_their_ids(pipeline):
    """Eileen walks right in front of messi, who walks left: his face is hidden behind her for
    a few frames, both boxes overlap on the way; each keeps one id, and the names."""
    messi = Actor.of("messi", "messi", [(0.0, 400, 180, 100), (4.0, 80, 185, 100)])
    eileen = Actor.of("astronaut", "eileen", [(0.0, 80, 175, 100), (4.0, 400, 180, 104)],
                      mirror=True)
    scene = _scene([messi, eileen])
    hidden = [t.hidden for i in range(scene.frames) for t in scene.truth(i)
              if t.label == "messi"]
    assert max(hidden) > 0.95  # the crossing really hides him
    results, _ = _run(scene, pipeline)
    eileen_ids, messi_ids = _ids_of(scene, results, "eileen"), _ids_of(scene, results, "messi")
    assert len(eileen_ids) > 25 and len(messi_ids) >= 15
    assert None not in eileen_ids and messi_ids.count(None) <= 2, (eileen_ids, messi_ids)
    assert len(set(eileen_ids)) == 1 and len(set(messi_ids) - {None}) == 1
    assert set(eileen_ids) != set(messi_ids) - {None}
    names = {f.track_id: f.name for _, faces, _ in results for f in faces}
    assert names[eileen_ids[0]] == "eileen" and names[messi_ids[0]] == ""
    order = [[t.label for t in sorted(scene.truth(i), key=lambda t: t.box[0])]
             for i in (0, scene.frames - 1)]
    assert order == [["eileen", "messi"], ["messi", "eileen"]]  # they did cross


def test_three_frame_occlusion_keeps_the_id(pipeline):
    """A board hides eileen's face on exactly frames 10, 11 and 12 (0.3 s)."""
    eileen = Actor.of("astronaut", "eileen", [(0.0, 150, 170, 100), (2.5, 330, 180, 104)])
    board = Occluder((0, 60, 480, 300), 1.0, 1.2)
    scene = _scene([eileen], [board], seconds=2.5)
    results, _ = _run(scene, pipeline)
    hidden = [i for i, faces, _ in results if not faces]
    assert hidden == [10, 11, 12]
    assert pipeline.process(scene.render(11)).faces == []  # really nothing to see there
    ids = {f.track_id for _, faces, _ in results for f in faces}
    assert len(ids) == 1 and 0 not in ids
    after = results[13][1][0]
    assert after.name == "eileen" and after.track_state == TRACK_CONFIRMED


def test_leaving_and_returning_after_the_timeout_gives_a_new_id_and_the_same_name(pipeline):
    config = TrackingConfig(lost_timeout=1.0)
    eileen = Actor.of("astronaut", "eileen", [(0.0, 240, 170, 100), (1.2, 240, 175, 100),
                                              (1.9, 560, 180, 100)])
    back = Actor.of("astronaut", "eileen", [(3.5, 560, 180, 100), (4.2, 300, 175, 100),
                                            (5.5, 280, 170, 102)])
    scene = _scene([eileen, back], seconds=5.5)
    ended = []
    results, tracker = _run(scene, pipeline, config, ended=ended.append)
    seen = [(i, f.track_id, f.name, f.track_state) for i, faces, _ in results for f in faces]
    first = {tid for i, tid, _, _ in seen if scene.time(i) < 2.0}
    second = {tid for i, tid, _, _ in seen if scene.time(i) > 3.0}
    assert len(first) == 1 and len(second) == 1 and first != second
    assert {name for i, _, name, state in seen if state == TRACK_CONFIRMED} == {"eileen"}
    assert [t.state for t in tracker.tracks] == [TRACK_CONFIRMED]
    assert tracker.tracks[0].name == "eileen"
    # the first track ended (lost for lost_timeout): the callback got it with its evidence
    assert [t.id for t in ended] == list(first)
    assert ended[0].name == "eileen" and ended[0].state == TRACK_CONFIRMED
    assert 3 <= len(ended[0].descriptors) <= config.vote_window


def test_returning_within_the_timeout_keeps_the_id(pipeline):
    eileen = Actor.of("astronaut", "eileen", [(0.0, 240, 170, 100), (1.0, 240, 175, 100),
                                              (1.6, 560, 180, 100)])
    back = Actor.of("astronaut", "eileen", [(2.4, 560, 180, 100), (3.0, 300, 175, 100),
                                            (3.5, 290, 172, 100)])
    scene = _scene([eileen, back], seconds=3.5)
    results, _ = _run(scene, pipeline, TrackingConfig(lost_timeout=2.0))
    ids = {f.track_id for _, faces, _ in results for f in faces}
    assert len(ids) == 1


def test_a_single_bad_frame_does_not_flip_a_confirmed_name(pipeline):
    """Frame 10's face comes out colour-inverted (a glitch): the detector still finds it but
    its descriptor is far from eileen's. Every frame is described here, so the bad descriptor
    does take part in the vote; the confirmed name holds."""
    eileen = Actor.of("astronaut", "eileen", [(0.0, 220, 170, 100), (2.0, 260, 175, 102)])
    scene = _scene([eileen], seconds=2.0)

    def corrupt(index, image):
        if index == 10:
            left, top, right, bottom = scene.truth(index)[0].box
            image[top:bottom, left:right] = 255 - image[top:bottom, left:right]
        return image

    bad = pipeline.process(corrupt(10, scene.render(10))).faces
    assert len(bad) == 1 and bad[0].name == "" and bad[0].distance > 0.6  # per frame: unknown
    results, tracker = _run(scene, pipeline, TrackingConfig(describe_every=1), corrupt=corrupt)
    faces = [faces[0] for _, faces, _ in results]
    assert all(len(f) == 1 for _, f, _ in results)
    assert faces[10].descriptor is not None  # described, and voted
    assert [f.name for f in faces[3:]] == ["eileen"] * (len(faces) - 3)
    assert all(f.track_state == TRACK_CONFIRMED for f in faces[3:])
    assert len({f.track_id for f in faces}) == 1
    track = tracker.tracks[0]
    assert track.votes.get("", 0) > 0 and track.votes["eileen"] > track.votes[""]


def test_budget_runs_the_full_detector_and_the_network_on_few_frames(pipeline):
    eileen = Actor.of("astronaut", "eileen", [(0.0, 200, 170, 100), (3.0, 280, 180, 110)])
    scene = _scene([eileen], seconds=3.0)
    config = TrackingConfig(detect_every=10, describe_every=10, confirm_votes=3)
    results, _ = _run(scene, pipeline, config)
    full = [i for i, _, frame in results if frame.full_detection]
    described = sum(frame.described for _, _, frame in results)
    assert full[0] == 0 and len(full) <= 1 + scene.frames // 10 + 2, full
    assert 3 <= described <= 3 + scene.frames // 10 + 3, described
    states = [faces[0].track_state for _, faces, _ in results]
    assert states[:2] == [TRACK_TENTATIVE] * 2 and set(states[3:]) == {TRACK_CONFIRMED}
    assert {faces[0].name for _, faces, _ in results} == {"eileen"}


def test_step_on_plain_frames_and_describe_all(pipeline, astronaut):
    tracker = FaceTracker()
    image = np.ascontiguousarray(astronaut[:, ::-1])
    first = tracker.step(image, pipeline, 0.0).faces
    second = tracker.step(image, pipeline, 0.1).faces
    assert first[0].track_id == second[0].track_id != 0
    plan = tracker.plan(0.2, describe_all=True)
    assert plan.describe_all and all(h.describe for h in plan.hints)


def test_a_gap_in_the_frames_searches_the_whole_frame_again(pipeline, astronaut):
    """The same picture after a pause longer than lost_timeout: the old track has ended and
    nothing moved, but the face is found again (with a new id)."""
    tracker = FaceTracker(TrackingConfig(lost_timeout=1.0))
    first = tracker.step(astronaut, pipeline, 0.0).faces
    again = tracker.step(astronaut, pipeline, 5.0)
    assert again.full_detection and len(again.faces) == 1
    assert again.faces[0].track_id != first[0].track_id


def test_tracks_end_when_the_clock_goes_back(pipeline, astronaut):
    ended = []
    tracker = FaceTracker(on_end=ended.append)
    tracker.step(astronaut, pipeline, 10.0)
    tracker.step(astronaut, pipeline, 5.0)  # a replayed recording
    assert len(ended) == 1 and len(tracker.tracks) == 1
    assert tracker.tracks[0].id != ended[0].id


def test_uneven_frame_stamps_keep_every_face_found(pipeline):
    """Frames arriving 15 ms to 0.5 s apart (a server behind a bursty network or busy
    workers sees that): the prediction must not turn a few pixels of box jitter between two
    close frames into hundreds of px/s, or the region search looks in the wrong place and
    the frame comes back with a face missing."""
    eileen = Actor.of("astronaut", "eileen", [(0.0, 100, 170, 96), (1.5, 160, 175, 100)],
                      mirror=True)
    messi = Actor.of("messi", "messi", [(0.0, 410, 180, 96), (1.5, 400, 178, 96)])
    scene = Scene(480, 360, FPS, 1.5, [eileen, messi])
    gaps = [0.015, 0.02, 0.5, 0.015, 0.3, 0.015, 0.02, 0.5, 0.03, 0.015, 0.5, 0.05, 0.015,
            0.3]
    tracker = FaceTracker(TrackingConfig())
    stamp, found, regions = 100.0, [], 0
    for index in range(scene.frames):
        stamp += gaps[index - 1] if index else 0.0
        plan = tracker.plan(stamp)
        frame = pipeline.follow(scene.render(index), plan)
        regions += not frame.full_detection
        found.append(sorted((f.box[0], f.track_id)
                            for f in tracker.update(frame, stamp, pipeline.matcher)))
    assert regions >= 10  # the frames really went through the region search
    assert [len(faces) for faces in found] == [2] * scene.frames, found
    assert len({faces[0][1] for faces in found}) == 1  # eileen, on the left
    assert len({faces[1][1] for faces in found}) == 1


def test_velocity_is_a_slope_over_a_span_not_two_close_frames():
    tracker = FaceTracker(TrackingConfig())
    matcher = Matcher(0.6)
    track_id = 0
    # a still face whose box jitters by 6 px, 15 ms apart: no speed to speak of
    for k, x in enumerate([100, 106, 100]):
        obs = _observation(None)
        obs.box = obs.unclipped = (x, 50, x + 100, 150)
        obs.track_id = track_id
        track_id = tracker.update(_frame(obs), 1.0 + 0.015 * k, matcher)[0].track_id
    track = tracker.track(track_id)
    assert track.velocity == (0.0, 0.0)
    assert abs(track.predicted(1.5)[0] - 100) <= 6
    # a face walking 40 px/s at 10 frames per second, with the same jitter
    for k in range(1, 8):
        x = 100 + 4 * k + (3 if k % 2 else -3)
        obs = _observation(None)
        obs.box = obs.unclipped = (x, 50, x + 100, 150)
        obs.track_id = track_id
        tracker.update(_frame(obs), 1.03 + 0.1 * k, matcher)
    assert 25 < track.velocity[0] < 55 and abs(track.velocity[1]) < 1e-6


# --- the vote (real Matcher, synthetic descriptors) -------------------------------------------

def _unit(index, length=1.0):
    vector = np.zeros(128, np.float32)
    vector[index] = length
    return vector


def _observation(descriptor, width=100):
    return tracking.Observation(box=(0, 0, width, width), unclipped=(0, 0, width, width),
                                detection_score=1.0, landmarks=np.zeros((5, 2), np.float32),
                                descriptor=descriptor)


def _frame(*observations):
    return tracking.TrackedFrame(list(observations), True, "periodic", None)


def test_vote_confirms_holds_and_follows_the_gallery():
    matcher = Matcher(0.6)
    matcher.set_gallery(["ada", "bob"], [_unit(0), _unit(1)])
    tracker = FaceTracker(TrackingConfig(confirm_votes=3, vote_window=6))
    near_ada, near_bob = _unit(0) + _unit(5, 0.2), _unit(1) + _unit(5, 0.1)
    faces = tracker.update(_frame(_observation(near_ada)), 0.0, matcher)
    track_id = faces[0].track_id
    states = [faces[0].track_state]
    for k in range(1, 3):
        obs = _observation(near_ada)
        obs.track_id = track_id
        faces = tracker.update(_frame(obs), 0.1 * k, matcher)
        states.append(faces[0].track_state)
    assert states == [TRACK_TENTATIVE, TRACK_TENTATIVE, TRACK_CONFIRMED]
    assert faces[0].name == "ada" and faces[0].confidence == pytest.approx(1 - 0.2 / 1.2)
    for k in range(3, 6):  # three bob frames: bob leads, with less than 60 % of the weight
        obs = _observation(near_bob)
        obs.track_id = track_id
        faces = tracker.update(_frame(obs), 0.1 * k, matcher)
        assert faces[0].name == "ada"
    track = tracker.track(track_id)
    assert 0.5 < track.votes["bob"] / sum(track.votes.values()) < 0.6
    assert faces[0].distance == pytest.approx(math.hypot(1, 1, 0.1), rel=1e-5)  # to ada
    obs = _observation(near_bob)
    obs.track_id = track_id
    faces = tracker.update(_frame(obs), 0.6, matcher)
    assert faces[0].name == "bob" and faces[0].track_state == TRACK_CONFIRMED  # 4 of 6
    matcher.set_gallery(["ada"], [_unit(0)])  # bob forgotten: the stored votes follow
    obs = _observation(None)
    obs.track_id = track_id
    faces = tracker.update(_frame(obs), 0.7, matcher)
    assert faces[0].name == "" and faces[0].confidence == 0.0


def test_vote_weight_grows_with_size_and_certainty():
    assert tracking.vote_weight("a", 0.0, 100, 0.6) == pytest.approx(1.0)
    assert tracking.vote_weight("a", 0.6, 100, 0.6) == pytest.approx(0.5)
    assert tracking.vote_weight("", 0.6, 100, 0.6) == pytest.approx(0.5)
    assert tracking.vote_weight("", 1.5, 100, 0.6) == pytest.approx(1.0)
    assert tracking.vote_weight("a", 0.3, 40, 0.6) == pytest.approx(0.5 * 0.75)
    assert tracking.vote_weight("", math.inf, 100, 0.6) == 1.0  # empty gallery


def test_resolve_trusts_geometry_unless_ambiguous_or_refound():
    ada, bob = _unit(0), _unit(1)

    def hint(track_id, box, missed=0, refs=None):
        return tracking.TrackHint(track_id, box, missed, False, 100.0, None,
                                  None if refs is None else np.stack(refs))

    hints = [hint(1, (0, 0, 100, 100), refs=[ada]), hint(2, (60, 0, 160, 100), refs=[bob])]
    pairs, ambiguous = tracking.associate(hints, [(20, 0, 120, 100)])
    assert pairs == {0: 0} and ambiguous == {0}  # overlaps both tracks
    assert tracking.resolve(hints, [bob], pairs, ambiguous, 0.6) == {0: 1}
    clear = [hint(1, (0, 0, 100, 100), refs=[ada])]
    pairs, ambiguous = tracking.associate(clear, [(5, 0, 105, 100)])
    assert tracking.resolve(clear, [bob], pairs, ambiguous, 0.6) == {0: 0}  # a bad frame
    lost = [hint(1, (0, 0, 100, 100), missed=3, refs=[ada])]
    assert tracking.resolve(lost, [bob], pairs, ambiguous, 0.6) == {}  # refound: must match
    far = [hint(1, (300, 0, 400, 100), missed=2, refs=[ada])]
    pairs, ambiguous = tracking.associate(far, [(5, 0, 105, 100)])
    assert pairs == {} and tracking.resolve(far, [ada + _unit(3, 0.1)], pairs, ambiguous,
                                            0.6) == {0: 0}  # rejoined by appearance


def test_motion_outside_the_tracked_people():
    before = np.full((60, 80), 100, np.uint8)
    after = before.copy()
    after[20:30, 60:70] = 200  # something new at the right
    after[20:30, 5:15] = 200  # and something moving where a tracked person is
    moved, regions = tracking.motion_outside(before, after, [(60, 160, 100, 200)], (480, 640))
    assert moved == pytest.approx(100 / 4800)
    assert len(regions) == 1 and regions[0][0] <= 480 and regions[0][2] >= 560
    assert tracking.motion_outside(None, after, [], (480, 640)) == (0.0, [])
    assert tracking.detection_areas(regions, 640, 480) == \
        [tuple(a) for a in tracking.detection_areas(regions, 640, 480)]
    assert tracking.detection_areas([(0, 0, 600, 400)], 640, 480) is None  # search it all


def test_track_ids_are_uint32_and_never_zero():
    ids = TrackIds(start=2 ** 32 - 2)
    assert [ids.next() for _ in range(3)] == [2 ** 32 - 2, 2 ** 32 - 1, 1]


def test_tracker_set_is_bounded_and_ends_tracks_it_drops():
    ended = []
    trackers = TrackerSet(capacity=2, on_end=lambda key, track: ended.append((key, track.id)))
    matcher = Matcher(0.6)
    for key in ("a", "b"):
        trackers.get(key).update(_frame(_observation(_unit(0))), 0.0, matcher)
    trackers.get("c")  # evicts "a", the least recently used
    assert trackers.keys() == ["b", "c"] and ended == [("a", 1)]
    trackers.drop("b")
    assert ended == [("a", 1), ("b", 2)] and trackers.keys() == ["c"]
    assert trackers.get("d") is not trackers.get("c")


@pytest.mark.parametrize("changes, reason", [
    ({"detect_every": 0}, "detect_every"),
    ({"describe_every": 1.5}, "describe_every"),
    ({"lost_timeout": -1.0}, "lost_timeout"),
    ({"vote_window": 0}, "vote_window"),
    ({"motion_trigger": 2.0}, "motion_trigger"),
    ({"max_tracks": 0}, "max_tracks"),
])
def test_invalid_tracking_config_is_rejected_with_a_reason(changes, reason):
    with pytest.raises(ValueError, match=reason):
        TrackingConfig(**changes).validate()


def test_a_full_window_confirms_when_confirm_votes_exceeds_it():
    matcher = Matcher(0.6)
    matcher.set_gallery(["ada"], [_unit(0)])
    tracker = FaceTracker(TrackingConfig(confirm_votes=50, vote_window=2))
    states = []
    track_id = 0
    for k in range(3):
        obs = _observation(_unit(0))
        obs.track_id = track_id
        face = tracker.update(_frame(obs), 0.1 * k, matcher)[0]
        track_id = face.track_id
        states.append(face.track_state)
    assert states == [TRACK_TENTATIVE, TRACK_CONFIRMED, TRACK_CONFIRMED]


def test_max_tracks_ends_the_longest_unseen_track():
    ended = []
    tracker = FaceTracker(TrackingConfig(max_tracks=1), on_end=ended.append)
    matcher = Matcher(0.6)
    first = tracker.update(_frame(_observation(_unit(0))), 0.0, matcher)[0]
    tracker.update(_frame(), 0.1, matcher)
    second = tracker.update(_frame(_observation(_unit(1))), 0.2, matcher)[0]
    assert [t.id for t in ended] == [first.track_id] and second.track_id != first.track_id
    both = tracker.update(_frame(_observation(_unit(2)), _observation(_unit(3))), 0.3, matcher)
    assert sorted(f.track_state != 0 for f in both) == [False, True]  # no room: untracked


def test_a_wrong_prediction_still_finds_the_face_where_it_was_last_seen(pipeline, messi):
    """A track predicted 80 px away from where its face was last seen (a velocity from
    frames whose stamps do not match the motion, or a person who stopped): the region
    search covers the last box too, and the face keeps its track."""
    seen = (225, 94, 262, 131)  # messi's 37 px face
    predicted = (305, 94, 342, 131)

    def plan(last):
        hint = tracking.TrackHint(7, predicted, 0, False, 37.0, None, None, last)
        return tracking.FramePlan(False, "", [hint], tracking.make_thumbnail(messi), 0.01,
                                  previous_size=messi.shape[:2])
    frame = pipeline.follow(messi, plan(seen))
    assert not frame.full_detection
    assert [o.track_id for o in frame.observations] == [7]
    assert iou(frame.observations[0].box, seen) > 0.5
    assert pipeline.follow(messi, plan(None)).observations == []  # the prediction alone


def test_region_search_scales_a_small_face_up(pipeline, messi):
    """Messi's 37 px face (HOG needs upsample 1 for it on the whole frame) is found in the
    region around its predicted box at upsample 0: the region is scaled to ~85 px faces."""
    box = (225, 94, 262, 131)
    tracker = FaceTracker()
    hint = tracking.TrackHint(7, box, 0, False, 37.0, None, None)
    plan = tracking.FramePlan(False, "", [hint], tracking.make_thumbnail(messi), 0.01,
                              previous_size=messi.shape[:2])
    frame = pipeline.follow(messi, plan)
    assert [o.track_id for o in frame.observations] == [7]
    assert iou(frame.observations[0].box, box) > 0.5
    assert not frame.full_detection and tracker.tracks == []
    assert cv2.countNonZero(frame.thumbnail) > 0
    other = pipeline.follow(cv2.resize(messi, (274, 171)), plan)  # another size
    assert other.full_detection and other.reason == "new view"
