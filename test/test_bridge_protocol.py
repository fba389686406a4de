"""The iot-facerecognition protocol: parsing, encoding, settings (pure, no I/O)."""
import json

import numpy as np
import pytest

from facerec_server.bridge import protocol
from facerec_server.bridge.protocol import (
    CLIENT_COMMANDS, ClientSettings, Command, FaceTag, ObjectTag, ProtocolError, encode,
    encode_legacy, parse_text)
from facerec_server.core.types import FaceResult, ObjectResult


def test_command_numbers_are_the_original_ones():
    assert [(c.name, int(c)) for c in Command] == [
        ("SETTING_NAME", 1), ("MESSAGE", 2), ("MESSAGE_TAG_FACE", 3), ("MESSAGE_TAG_OBJECT", 4),
        ("SETTING_OBJDETECTIONENABLED", 5), ("SETTING_LABELCOUNT", 6),
        ("SETTING_DETERMINISTICOBJECTDETECTION", 7), ("SETTING_FACERECOGNITIONENABLED", 8),
        ("INIT_REQUEST", 9)]


@pytest.mark.parametrize("text, command, context", [
    ('{"command": 1, "context": "cam-1"}', Command.SETTING_NAME, "cam-1"),
    ('{"command": 1, "context": ""}', Command.SETTING_NAME, "noname"),
    ('{"command": 2, "context": "hello"}', Command.MESSAGE, "hello"),
    ('{"command": 5, "context": false}', Command.SETTING_OBJDETECTIONENABLED, False),
    ('{"command": 5, "context": 1}', Command.SETTING_OBJDETECTIONENABLED, True),
    ('{"command": 6, "context": 3}', Command.SETTING_LABELCOUNT, 3),
    ('{"command": 6, "context": "7"}', Command.SETTING_LABELCOUNT, 7),
    ('{"command": 7, "context": "true"}', Command.SETTING_DETERMINISTICOBJECTDETECTION, True),
    ('{"command": 8, "context": false}', Command.SETTING_FACERECOGNITIONENABLED, False),
])
def test_json_client_commands(text, command, context):
    message = parse_text(text, CLIENT_COMMANDS)
    assert (message.command, message.context, message.legacy) == (command, context, False)


@pytest.mark.parametrize("text, command, context", [
    ("\x01:robot", Command.SETTING_NAME, "robot"),
    ("\x02:a:b", Command.MESSAGE, "a:b"),  # only the first colon separates
    ("\x05:0", Command.SETTING_OBJDETECTIONENABLED, False),
    ("\x06:10", Command.SETTING_LABELCOUNT, 10),
])
def test_legacy_client_commands(text, command, context):
    message = parse_text(text, CLIENT_COMMANDS)
    assert (message.command, message.context, message.legacy) == (command, context, True)
    assert parse_text(encode_legacy(command, context)).context == context


@pytest.mark.parametrize("text, kind", [
    ("not json", "malformed"),
    ("{\"command\": ", "malformed"),
    ("[1, 2]", "malformed"),
    ('{"context": 1}', "malformed"),
    ('{"command": "1"}', "malformed"),
    ('{"command": true}', "malformed"),
    ('{"command": 42}', "unknown_command"),
    ('{"command": 3, "context": []}', "unknown_command"),  # server->client only
    ('{"command": 9}', "unknown_command"),
    ("\x2a:x", "unknown_command"),
    ('{"command": 6, "context": -1}', "bad_context"),
    ('{"command": 6, "context": true}', "bad_context"),
    ('{"command": 6, "context": "many"}', "bad_context"),
    ('{"command": 5, "context": "maybe"}', "bad_context"),
    ('{"command": 1, "context": {"a": 1}}', "bad_context"),
    ("[" * 100000, "malformed"),
    # issue 21 item 6: digits int() does not take, or too many of them
    ('{"command": 6, "context": "\u00b2"}', "bad_context"),
    ("\x06:\u00b2", "bad_context"),
    ('{"command": 6, "context": "\u0663"}', "bad_context"),  # Arabic-Indic 3: not ASCII
    ("\x06:" + "9" * 5000, "bad_context"),
    ('{"command": 6, "context": "%s"}' % ("9" * 5000), "bad_context"),
    ('{"command": 6, "context": %s}' % ("9" * 5000), "bad_context"),
    ('{"command": %s, "context": 1}' % ("9" * 5000), "malformed"),
    ('{"command": 6, "context": 1e999}', "bad_context"),
])
def test_rejected_client_messages(text, kind):
    with pytest.raises(ProtocolError) as info:
        parse_text(text, CLIENT_COMMANDS)
    assert info.value.kind == kind and info.value.reason


def test_invalid_utf8_bytes():
    with pytest.raises(ProtocolError, match="UTF-8"):
        parse_text(b"\xff\xfe{", CLIENT_COMMANDS)


def test_server_messages_round_trip():
    assert encode(Command.INIT_REQUEST) == '{"command":9}'
    assert parse_text(encode(Command.INIT_REQUEST)).context is None
    faces = [FaceResult(box=(10, 20, 110, 140), detection_score=1.0,
                        landmarks=np.zeros((5, 2), np.float32), name="astronaut"),
             FaceResult(box=(0, 0, 5, 6), detection_score=1.0,
                        landmarks=np.zeros((5, 2), np.float32))]
    text = encode(Command.MESSAGE_TAG_FACE, protocol.face_tags(faces))
    assert json.loads(text) == {"command": 3, "context": [
        {"tag": "astronaut", "x": 10, "y": 20, "width": 100, "height": 120},
        {"tag": "", "x": 0, "y": 0, "width": 5, "height": 6}]}
    assert parse_text(text).context == [FaceTag("astronaut", 10, 20, 100, 120),
                                        FaceTag("", 0, 0, 5, 6)]
    objects = [ObjectResult("cat", 0.2), ObjectResult("dog", 0.7),
               ObjectResult("nan", float("nan"))]
    text = encode(Command.MESSAGE_TAG_OBJECT, protocol.object_tags(objects, 2))
    assert json.loads(text) == {"command": 4, "context": [
        {"label": "dog", "prediction": 0.7}, {"label": "cat", "prediction": 0.2}]}
    assert parse_text(text).context == [ObjectTag("dog", 0.7), ObjectTag("cat", 0.2)]


def test_results_are_json_only():
    """The '<chr(n)>:<context>' form is for client commands; results never use it."""
    for text in ("\x03:1,2,11,22,bob#0,0,4,4,", "\x04:cat#dog"):
        with pytest.raises(ProtocolError) as info:
            parse_text(text)
        assert info.value.kind == "bad_context"
    assert not hasattr(protocol, "encode_reply")


def test_client_settings_apply_echo_and_announce():
    settings = ClientSettings()
    assert (settings.faces_enabled, settings.objects_enabled, settings.label_count,
            settings.deterministic) == (True, True, 5, False)  # the original defaults
    for text in ('{"command":1,"context":"x"}', '{"command":6,"context":2}',
                 '{"command":5,"context":false}', '{"command":7,"context":true}',
                 '{"command":8,"context":false}'):
        message = parse_text(text, CLIENT_COMMANDS)
        assert settings.apply(message)
        assert settings.value_of(message.command) == message.context
    assert settings == ClientSettings("x", False, False, 2, True)
    assert not settings.apply(parse_text('{"command":2,"context":"hi"}'))
    announced = ClientSettings()
    for text in settings.to_messages():
        announced.apply(parse_text(text, CLIENT_COMMANDS))
    assert announced == settings


def test_names_are_cleaned_and_sanitised():
    assert protocol.clean_name("  cam\x00\n 1 ") == "cam 1"
    assert len(protocol.clean_name("x" * 500)) == protocol.MAX_NAME_LENGTH
    assert protocol.sanitize_name("Front Door/Cam #2") == "front_door_cam_2"
    assert protocol.sanitize_name("2nd") == "c_2nd"
    assert protocol.sanitize_name("___") == "noname"
    assert protocol.sanitize_name("cam(1)") == "cam_1"


def test_redact_masks_tokens():
    text = "> GET /?token=abc123&x=1 HTTP/1.1\nAuthorization: Bearer abc123\nHost: h"
    assert "abc123" not in protocol.redact(text)
    assert "Authorization: Bearer ***" in protocol.redact(text)
    assert "token=***&x=1" in protocol.redact(text)
