"""The echo example against Python's `websockets` client (sync API).

run.sh starts two echo servers and passes their URLs: ECHO_URL (default limits) and
ECHO_SMALL_URL (started with --max-message-size 1024).
"""

import inspect
import os
import random
import socket
import struct

import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from websockets.sync.client import connect

URL = os.environ.get("ECHO_URL", "")
SMALL_URL = os.environ.get("ECHO_SMALL_URL", "")
SMALL_LIMIT = 1024

pytestmark = pytest.mark.skipif(not URL or not SMALL_URL, reason="run through tests/peers/run.sh")


def open_ws(url=None, **kw):
    kw.setdefault("max_size", None)
    if "proxy" in inspect.signature(connect).parameters:
        kw["proxy"] = None  # loopback: never through a proxy from the environment
    return connect(url or URL + "/py", open_timeout=5, close_timeout=5, **kw)


def masked_frame(b0: int, payload: bytes) -> bytes:
    assert len(payload) < 126
    mask = bytes([0x12, 0x34, 0x56, 0x78])
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([b0, 0x80 | len(payload)]) + mask + body


def test_text_echo():
    with open_ws() as ws:
        for msg in ["hello", "", "héllo wörld ✓ 🚀", "x" * 70_000]:
            ws.send(msg)
            got = ws.recv(timeout=5)
            assert isinstance(got, str)
            assert got == msg


def test_binary_echo():
    with open_ws() as ws:
        for msg in [b"\x00\x01\x02\xff", b"", bytes(range(256)) * 300]:
            ws.send(msg)
            got = ws.recv(timeout=5)
            assert isinstance(got, bytes)
            assert got == msg


def test_one_mebibyte_messages():
    rnd = random.Random(42)
    data = rnd.randbytes(1 << 20)
    text = "".join(rnd.choice("abcdefghij κλμ ✓") for _ in range(1 << 19))
    with open_ws() as ws:
        ws.send(data)
        assert ws.recv(timeout=10) == data
        ws.send(text)
        assert ws.recv(timeout=10) == text
        # Sent fragmented (64 KiB frames) and reassembled by the server.
        ws.send([data[i : i + 65536] for i in range(0, len(data), 65536)])
        assert ws.recv(timeout=10) == data


def test_ping_pong():
    with open_ws() as ws:
        pong = ws.ping(b"are you there")
        assert pong.wait(5), "no pong"
        # Messages still flow after control frames.
        ws.send("after ping")
        assert ws.recv(timeout=5) == "after ping"


def test_client_close_with_code_and_reason_is_echoed():
    with open_ws() as ws:
        ws.send("before close")
        assert ws.recv(timeout=5) == "before close"
        ws.close(4000, "python done")
        # The server answers with the same code and reason.
        assert ws.close_code == 4000
        assert ws.close_reason == "python done"
        with pytest.raises(ConnectionClosed) as err:
            ws.recv(timeout=5)
    assert err.value.sent.code == 4000 and err.value.sent.reason == "python done"
    assert err.value.rcvd.code == 4000 and err.value.rcvd.reason == "python done"


def test_normal_close():
    with open_ws() as ws:
        ws.close()
        assert ws.close_code == 1000
        with pytest.raises(ConnectionClosedOK):
            ws.recv(timeout=5)


def test_too_big_message_is_closed_with_1009():
    with open_ws(SMALL_URL + "/py") as ws:
        ws.send(b"x" * SMALL_LIMIT)
        assert ws.recv(timeout=5) == b"x" * SMALL_LIMIT
        ws.send(b"x" * (SMALL_LIMIT + 1))
        with pytest.raises(ConnectionClosedError) as err:
            ws.recv(timeout=5)
    assert err.value.rcvd is not None
    assert err.value.rcvd.code == 1009
    assert err.value.rcvd.reason == f"max length: {SMALL_LIMIT}"


def test_too_big_fragmented_message_is_closed_with_1009():
    with open_ws(SMALL_URL + "/py") as ws:
        # The server closes as soon as the second fragment's header shows the message is too
        # big, which may be before this client has finished sending it: then send() itself
        # reports the close.
        with pytest.raises(ConnectionClosedError) as err:
            ws.send(["a" * 600, "b" * 600])
            ws.recv(timeout=5)
    assert err.value.rcvd is not None
    assert err.value.rcvd.code == 1009
    assert err.value.rcvd.reason == f"max length: {SMALL_LIMIT}"


@pytest.mark.parametrize(
    "frame,reason",
    [
        (masked_frame(0xC1, b"rsv1"), "invalid extension"),  # FIN + RSV1 + text
        (masked_frame(0x83, b"op3"), "invalid opcode"),  # reserved opcode
        (masked_frame(0x09, b"frag"), "fragmented control frame"),  # ping without FIN
    ],
)
def test_protocol_error_is_closed_with_1002(frame, reason):
    # Without permessage-deflate, which would make RSV1 legal.
    with open_ws(compression=None) as ws:
        # websockets never sends a bad frame: write one on its socket.
        ws.socket.sendall(frame)
        with pytest.raises(ConnectionClosedError) as err:
            ws.recv(timeout=5)
    assert err.value.rcvd is not None
    assert err.value.rcvd.code == 1002
    assert err.value.rcvd.reason == reason


def test_invalid_utf8_is_closed_with_1007():
    with open_ws() as ws:
        ws.socket.sendall(masked_frame(0x81, b"ok\xff\xfe"))
        with pytest.raises(ConnectionClosedError) as err:
            ws.recv(timeout=5)
    assert err.value.rcvd.code == 1007


def test_non_upgrade_request_gets_400():
    host, port = URL.removeprefix("ws://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"GET /py HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"missing 'Upgrade: websocket' header" in body


def test_many_messages_in_order():
    with open_ws() as ws:
        for i in range(500):
            ws.send(struct.pack(">I", i))
        for i in range(500):
            assert ws.recv(timeout=5) == struct.pack(">I", i)
