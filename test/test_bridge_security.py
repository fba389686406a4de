"""Bridge hardening (issue 21 items 4, 5, 11, 14 and 15): configuration errors, the client's
name bound to its credential, back-off after failed logins, the message-rate bucket across
reconnects, idle connections that never start TLS. Real TLS on loopback addresses."""
import asyncio
import json
import os
import socket
import sys
import threading
import time

import pytest
from websockets.exceptions import InvalidStatus

from facerec_server.bridge import BridgeConfigError, BridgeServer
from facerec_server.bridge.config import MIN_TOKEN_LENGTH, load_tokens
from rosutil import Proc, write_params
from test_bridge import (RED, TOKEN, Bridge, announce, closed_code, config, light_processor,
                         open_client, recv_json, results_for, run)
from test_bridge_node import _free_port, _wait_port

INTRUDER = "intruder-token-0123456789"


def _tokens(tmp_path, text: str) -> str:
    path = tmp_path / "tokens"
    path.write_text(text)
    return str(path)


def _refused(cfg, match: str) -> str:
    """The BridgeConfigError message for ``cfg``: one line that matches ``match``."""
    with pytest.raises(BridgeConfigError, match=match) as info:
        BridgeServer(cfg, light_processor())
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# --- configuration: one-line messages naming the value (items 11, 14, 15) ------------------

def test_bad_files_and_values_are_refused_with_one_line(tls, tmp_path):
    paths = tls["paths"]
    message = _refused(config(tls, certfile=paths["server.key"]), "private key")
    assert paths["server.key"] in message and "certfile" in message
    _refused(config(tls, keyfile=paths["server.pem"]), "keyfile.*not a private key")
    other = tmp_path / "other.key"
    other.write_bytes(tls["rogue_ca"].issue_cert("x").private_key_pem.bytes())
    _refused(config(tls, keyfile=str(other)), "does not belong to the certificate")
    garbage = tmp_path / "ca.der"
    garbage.write_bytes(os.urandom(600))
    message = _refused(config(tls, auth="mtls", ca_file=str(garbage)), "ca_file")
    assert str(garbage) in message and "PEM" in message
    for field, value in (("port", 70000), ("port", -1), ("max_frame_size", 0),
                         ("max_clients", 0), ("max_clients", 100000), ("max_pending", 0)):
        message = _refused(config(tls, **{field: value}), field)
        assert str(value) in message
    big = tmp_path / "big-tokens"
    big.write_bytes(b"#" * (2 * 1024 * 1024))
    _refused(config(tls, tokens_file=str(big)), "bytes")
    _refused(config(tls, tokens_file=str(tmp_path)), "not a regular file")


def test_fifo_files_do_not_hang_the_bridge(tls, tmp_path):
    """A FIFO as tokens file or certificate blocked the start-up forever (item 11)."""
    for field in ("tokens_file", "certfile", "keyfile"):
        fifo = tmp_path / f"{field}.fifo"
        os.mkfifo(fifo)
        outcome = {}

        def start(field=field, fifo=fifo):
            try:
                BridgeServer(config(tls, **{field: str(fifo)}), light_processor())
            except BridgeConfigError as exc:
                outcome["error"] = str(exc)
        thread = threading.Thread(target=start, daemon=True)
        thread.start()
        thread.join(10)
        if thread.is_alive():  # unblock the reader so the thread can end
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            thread.join(5)
            pytest.fail(f"{field} as a FIFO blocked the bridge's start-up")
        assert "not a regular file" in outcome.get("error", ""), outcome


def test_tokens_file_rules(tmp_path):
    with pytest.raises(BridgeConfigError, match=f"at least {MIN_TOKEN_LENGTH}") as info:
        load_tokens(_tokens(tmp_path, "# comment\ndoor:abc\n"))
    assert "line 2" in str(info.value) and "abc" not in str(info.value)  # never the token
    with pytest.raises(BridgeConfigError, match="same ROS name"):
        load_tokens(_tokens(tmp_path, f"pi-door:{TOKEN}\npi_door:{INTRUDER}\n"))
    tokens = load_tokens(_tokens(tmp_path, f"pi-door:{TOKEN}\n{INTRUDER}\n"))
    assert tokens == [("pi-door", TOKEN), ("token2", INTRUDER)]


def test_unresolvable_host_and_port_in_use_are_one_line_messages(tls):
    async def scenario():
        with pytest.raises(BridgeConfigError, match="host 'no-such-host.invalid'") as info:
            await BridgeServer(config(tls, host="no-such-host.invalid"),
                               light_processor()).start()
        assert "\n" not in str(info.value)
        async with Bridge(config(tls), light_processor()) as first:
            with pytest.raises(BridgeConfigError, match=f"port {first.server.port}.*in use"):
                await BridgeServer(config(tls, port=first.server.port),
                                   light_processor()).start()
    run(scenario())


# --- item 5: the credential decides the ROS-visible name -----------------------------------

def test_the_credential_decides_the_client_name(tls, tmp_path):
    tokens = _tokens(tmp_path, f"robot1:{TOKEN}\nintruder:{INTRUDER}\n")

    async def scenario():
        async with Bridge(config(tls, tokens_file=tokens), light_processor()) as bridge:
            async with open_client(tls, bridge, token=INTRUDER) as ws:
                echoes = await announce(ws, "robot1", faces=False)
                assert echoes[0] == {"command": 1, "context": "intruder"}
                await ws.send(json.dumps({"command": 1, "context": "pi-door"}))
                assert await recv_json(ws) == {"command": 1, "context": "intruder"}
                await results_for(ws, RED, 1)
                assert list(bridge.server.clients()) == ["intruder"]
                # two connections with one credential: unique names from the same root
                async with open_client(tls, bridge, token=INTRUDER) as second:
                    echoes = await announce(second, "robot1", faces=False)
                    assert echoes[0] == {"command": 1, "context": "intruder(1)"}
                stats = bridge.server.stats()["clients"]["intruder"]
                assert stats["names_refused"] == 2
            assert {name for name, _, _ in bridge.frames} == {"intruder"}
            assert all(name.startswith("intruder") for name, _ in bridge.client_events)
    run(scenario())


def test_the_certificate_decides_the_client_name(tls):
    cfg = config(tls, auth="mtls", tokens_file=None, ca_file=tls["paths"]["client-ca.pem"])

    async def scenario():
        async with Bridge(cfg, light_processor()) as bridge:
            context = tls["client_context"](tls["client_ca"])  # CN cam-mtls
            async with open_client(tls, bridge, token=None, context=context) as ws:
                echoes = await announce(ws, "someone-else", faces=False)
                assert echoes[0] == {"command": 1, "context": "cam-mtls"}
                assert list(bridge.server.clients()) == ["cam-mtls"]
    run(scenario())


# --- item 15: back-off after failed logins, the rate bucket across reconnects ----------------

def test_failed_logins_back_off_per_source_address(tls):
    async def attempt(bridge, token, source="127.0.0.1"):
        """'ok', the close code, or the HTTP status of a refused upgrade."""
        try:
            async with open_client(tls, bridge, token=token, local_addr=(source, 0)) as ws:
                first = await asyncio.wait_for(ws.recv(), 10)
                if json.loads(first) == {"command": 9}:
                    try:
                        await asyncio.wait_for(ws.recv(), 0.3)
                    except asyncio.TimeoutError:
                        return "ok"
                return await closed_code(ws)
        except InvalidStatus as exc:
            return exc.response.status_code
        except Exception:  # noqa: BLE001 - closed while reading the INIT_REQUEST
            return 1008

    async def scenario():
        async with Bridge(config(tls), light_processor()) as bridge:
            outcomes = [await attempt(bridge, "wrong-token-0123456789") for _ in range(5)]
            assert outcomes == [1008] * 5
            started = time.monotonic()
            assert await attempt(bridge, "wrong-token-0123456789") == 429
            assert await attempt(bridge, TOKEN) == 429  # not even checked while backing off
            assert await attempt(bridge, TOKEN, source="127.0.0.2") == "ok"  # another address
            while await attempt(bridge, TOKEN) == 429:
                await asyncio.sleep(0.2)
                assert time.monotonic() - started < 10, "back-off did not end"
            stats = bridge.server.stats()["global"]
            assert stats["rejected_auth"] == 5 and stats["rejected_backoff"] >= 2
            # a success forgets the failures: the next wrong token is closed, not backed off
            assert await attempt(bridge, "wrong-token-0123456789") == 1008
    run(scenario())


def test_message_rate_bucket_does_not_refill_on_reconnect(tls):
    cfg = config(tls, max_message_rate=2, rate_burst=30)

    async def scenario():
        async with Bridge(cfg, light_processor()) as bridge:
            async with open_client(tls, bridge) as bystander:
                await announce(bystander, "bystander", faces=False)  # 5 messages
                async with open_client(tls, bridge) as flooder:
                    for _ in range(40):
                        await flooder.send('{"command": 2, "context": "spam"}')
                    assert await closed_code(flooder) == 1008
                async with open_client(tls, bridge) as again:  # same credential and address
                    for _ in range(20):  # a fresh bucket would allow 30
                        await again.send('{"command": 2, "context": "spam"}')
                    assert await closed_code(again) == 1008
                # a connection that did not flood keeps its own allowance
                assert (await results_for(bystander, RED, 1))[0]["command"] == 4
            assert bridge.server.stats()["global"]["closed_rate"] == 2
    run(scenario())


# --- item 4: idle connections that never start TLS ------------------------------------------

def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        return int(next(line for line in handle if line.startswith("VmRSS")).split()[1])


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_idle_connections_at_a_low_file_limit(tls, tmp_path):
    """600 TCP connections that never start TLS against the real node run with
    `ulimit -n 256`: memory stays bounded, the log is not flooded, and a legitimate client
    still connects while they are open."""
    port = _free_port()
    params = write_params(tmp_path / "bridge.yaml", "facerec_bridge", {
        "bridge.host": "127.0.0.1", "bridge.port": port, "bridge.auth": "token",
        "bridge.certfile": tls["paths"]["server.pem"],
        "bridge.keyfile": tls["paths"]["server.key"],
        "bridge.tokens_file": tls["paths"]["tokens"], "gallery.path": str(tmp_path / "g.db"),
        "workers": 1, "object_recognition.enabled": False})
    proc = Proc(["bash", "-c", f"ulimit -n 256 && exec {sys.executable} -m "
                 f"facerec_server.bridge_node --ros-args --params-file {params}"],
                tmp_path, "bridge")
    idle = []
    try:
        _wait_port(port, proc)
        pid = proc.popen.pid

        async def legitimate():
            async with open_client(tls, _Url(port), open_timeout=5) as ws:
                return await recv_json(ws, timeout=5)
        assert run(legitimate()) == {"command": 9}
        before = _rss_kb(pid)
        for round_ in range(2):
            for _ in range(600):
                try:
                    idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
                except OSError:  # the backlog is full: the bridge is not accepting
                    break
            assert len(idle) >= 300, f"only {len(idle)} connections were accepted"
            # a legitimate client gets through while the idle connections are open
            assert run(legitimate()) == {"command": 9}
            for sock in idle:
                sock.close()
            idle.clear()
            deadline = time.monotonic() + 20
            while _open_fds(pid) > 120 and time.monotonic() < deadline:
                time.sleep(0.2)
        grown = (_rss_kb(pid) - before) / 1024
        output = proc.output()
        print(f"RSS grew {grown:.1f} MB over 2 x 600 idle connections; "
              f"{output.count('Too many open files')} 'Too many open files' lines")
        assert grown < 40, f"RSS grew {grown:.1f} MB"
        assert output.count("Too many open files") <= 2, output[-3000:]
        assert "Traceback" not in output, output[-3000:]
    finally:
        for sock in idle:
            sock.close()
        assert proc.stop() == 0, proc.output()[-3000:]


class _Url:
    """What open_client needs of a Bridge: its URL."""

    def __init__(self, port: int):
        self.url = f"wss://127.0.0.1:{port}"


@pytest.mark.parametrize("args, expected", [
    (["--out-dir", "{file}"], "is not a directory"),
    (["--out-dir", "{dir}", "--days", "-1"], "--days must be at least 1, got -1"),
    (["--out-dir", "{dir}", "--days", "0"], "--days must be at least 1, got 0"),
])
def test_certs_tool_refuses_bad_arguments_with_one_line(tmp_path, args, expected):
    """Issue 21 item 14: `facerec-bridge-certs --out-dir <a file>` and `--days -1` gave
    raw tracebacks (FileExistsError, cryptography's ValueError)."""
    import subprocess
    (tmp_path / "a_file").write_text("x")
    args = [a.format(file=tmp_path / "a_file", dir=tmp_path / "certs") for a in args]
    result = subprocess.run([sys.executable, "-m", "facerec_server.bridge.certs"] + args,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "certs").exists()
