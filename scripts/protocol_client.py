#!/usr/bin/env python3
"""A client of edgecascade's framed link, written from docs/protocol.md alone: Python's
standard library only, with its own COBS, its own varints and zlib.crc32. It shows that a host
or device written in another language can interoperate, and CI checks it (tests/protocol.rs).

    protocol_client.py golden docs/protocol-frames.json
        decodes every golden frame and checks it against its message, and encodes every
        message and checks it against its frame;
    protocol_client.py session HOST:PORT IMAGE [--token T]
        holds a session with a host (`edgecascade host --listen tcp:HOST:PORT`): Auth (with a
        token), Hello -> Welcome, Ping -> Pong, Infer(IMAGE, original encoding) -> Answer, a
        corrupted frame -> Error BadFrame, Ping -> Pong again; prints the outcome as JSON.

Messages are dicts in the JSON shape of docs/protocol-frames.json: {"Ping": {"nonce": 7}}.
"""

import json
import socket
import struct
import sys
import zlib

PROTOCOL_VERSION = 1

# Variant indices, in declaration order (docs/protocol.md, "Messages").
MESSAGES = ["Hello", "Welcome", "Infer", "Answer", "Error", "Ping", "Pong", "Auth"]
ENCODINGS = ["Original", "CropJpeg", "CropRaw"]
ERROR_CODES = ["BadFrame", "BadVersion", "BadRequest", "BadPayload", "TooLarge", "Internal", "Unauthorized", "Busy"]


# --- COBS -----------------------------------------------------------------------------------

def cobs_encode(data: bytes) -> bytes:
    out = bytearray()
    block = bytearray()
    for b in data:
        if b == 0:
            out.append(len(block) + 1)
            out += block
            block = bytearray()
        else:
            block.append(b)
            if len(block) == 254:
                out.append(255)
                out += block
                block = bytearray()
    out.append(len(block) + 1)
    out += block
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(data):
        code = data[i]
        end = i + code
        if code == 0 or end > len(data) or 0 in data[i + 1:end]:
            raise ValueError("invalid COBS")
        out += data[i + 1:end]
        i = end
        # A block shorter than 254 bytes stood for the data up to a 0 (none after the last).
        if code != 255 and i < len(data):
            out.append(0)
    return bytes(out)


# --- postcard values ------------------------------------------------------------------------

def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


class Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("message cut short")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def u8(self) -> int:
        return self.take(1)[0]

    def varint(self) -> int:
        n, shift = 0, 0
        while True:
            b = self.u8()
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7

    def f32(self) -> float:
        return struct.unpack("<f", self.take(4))[0]

    def f64(self) -> float:
        return struct.unpack("<d", self.take(8))[0]

    def bool(self) -> bool:
        b = self.u8()
        if b > 1:
            raise ValueError(f"bool byte {b}")
        return b == 1

    def bytes_(self) -> list:
        return list(self.take(self.varint()))

    def string(self) -> str:
        return self.take(self.varint()).decode("utf-8")

    def option(self, read):
        return read() if self.bool() else None

    def seq(self, read) -> list:
        return [read() for _ in range(self.varint())]

    def enum(self, names):
        return names[self.varint()]


def w_f32(x) -> bytes:
    return struct.pack("<f", x)


def w_f64(x) -> bytes:
    return struct.pack("<d", x)


def w_bytes(b) -> bytes:
    return varint(len(b)) + bytes(b)


def w_str(s: str) -> bytes:
    return w_bytes(s.encode("utf-8"))


def w_option(x, write) -> bytes:
    return b"\x00" if x is None else b"\x01" + write(x)


def w_seq(xs, write) -> bytes:
    return varint(len(xs)) + b"".join(write(x) for x in xs)


def w_enum(name, names) -> bytes:
    return varint(names.index(name))


# --- messages -------------------------------------------------------------------------------

def read_message(r: Reader) -> dict:
    kind = r.enum(MESSAGES)
    if kind == "Hello":
        v = {"version": r.u8(), "device_id": r.string(), "accepts": r.seq(lambda: r.enum(ENCODINGS)),
             "max_frame": r.varint()}
    elif kind == "Welcome":
        v = {"version": r.u8(), "host_id": r.string(), "model": r.string(),
             "input": {"size": r.varint(), "channels": r.u8(), "crop_fraction": r.f64()},
             "classes": r.varint(), "accepts": r.seq(lambda: r.enum(ENCODINGS)), "max_frame": r.varint()}
    elif kind == "Infer":
        v = {"seq": r.varint(), "encoding": r.enum(ENCODINGS), "payload": r.bytes_(),
             "device_probs": r.option(lambda: r.seq(r.f32)), "want_probs": r.bool()}
    elif kind == "Answer":
        v = {"seq": r.varint(), "top": r.seq(lambda: [r.varint(), r.f32()]),
             "probs": r.option(lambda: r.seq(r.f32)), "host_ms": r.f32(), "host_decode_ms": r.f32(),
             "host_infer_ms": r.f32(), "host_mj": r.option(r.f32)}
    elif kind == "Error":
        v = {"seq": r.option(r.varint), "code": r.enum(ERROR_CODES), "message": r.string()}
    elif kind in ("Ping", "Pong"):
        v = {"nonce": r.varint()}
    else:  # Auth
        v = {"token": r.string()}
    return {kind: v}


def write_message(msg: dict) -> bytes:
    (kind, v), = msg.items()
    out = w_enum(kind, MESSAGES)
    encs = lambda xs: w_seq(xs, lambda e: w_enum(e, ENCODINGS))  # noqa: E731
    if kind == "Hello":
        out += bytes([v["version"]]) + w_str(v["device_id"]) + encs(v["accepts"]) + varint(v["max_frame"])
    elif kind == "Welcome":
        i = v["input"]
        out += (bytes([v["version"]]) + w_str(v["host_id"]) + w_str(v["model"]) + varint(i["size"])
                + bytes([i["channels"]]) + w_f64(i["crop_fraction"]) + varint(v["classes"]) + encs(v["accepts"])
                + varint(v["max_frame"]))
    elif kind == "Infer":
        out += (varint(v["seq"]) + w_enum(v["encoding"], ENCODINGS) + w_bytes(v["payload"])
                + w_option(v["device_probs"], lambda p: w_seq(p, w_f32)) + bytes([int(v["want_probs"])]))
    elif kind == "Answer":
        out += (varint(v["seq"]) + w_seq(v["top"], lambda t: varint(t[0]) + w_f32(t[1]))
                + w_option(v["probs"], lambda p: w_seq(p, w_f32)) + w_f32(v["host_ms"]) + w_f32(v["host_decode_ms"])
                + w_f32(v["host_infer_ms"]) + w_option(v["host_mj"], w_f32))
    elif kind == "Error":
        out += w_option(v["seq"], varint) + w_enum(v["code"], ERROR_CODES) + w_str(v["message"])
    elif kind in ("Ping", "Pong"):
        out += varint(v["nonce"])
    else:
        out += w_str(v["token"])
    return out


# --- frames ---------------------------------------------------------------------------------

def encode_frame(msg: dict) -> bytes:
    body = bytes([PROTOCOL_VERSION]) + write_message(msg)
    return cobs_encode(body + struct.pack("<I", zlib.crc32(body))) + b"\x00"


def decode_frame(frame: bytes) -> dict:
    """One frame without its trailing 0."""
    raw = cobs_decode(frame)
    if len(raw) < 5:
        raise ValueError("frame too short")
    body, crc = raw[:-4], struct.unpack("<I", raw[-4:])[0]
    if zlib.crc32(body) != crc:
        raise ValueError("CRC mismatch")
    if body[0] != PROTOCOL_VERSION:
        raise ValueError(f"protocol version {body[0]}")
    r = Reader(body[1:])
    msg = read_message(r)
    if r.pos != len(r.data):
        raise ValueError("bytes left after the message")
    return msg


def golden(path: str) -> None:
    cases = json.load(open(path))
    for c in cases:
        frame = bytes.fromhex(c["frame"])
        assert frame[-1] == 0 and 0 not in frame[:-1], c["name"]
        got = decode_frame(frame[:-1])
        assert got == c["message"], f"{c['name']}: decoded {got}, want {c['message']}"
        assert encode_frame(c["message"]) == frame, f"{c['name']}: encoded differently"
    print(f"{len(cases)} golden frames decoded and encoded alike")


class Link:
    def __init__(self, addr: str):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.buf = b""

    def send(self, msg: dict) -> None:
        self.sock.sendall(encode_frame(msg))

    def recv(self) -> dict:
        while b"\x00" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the host closed the link")
            self.buf += chunk
        frame, self.buf = self.buf.split(b"\x00", 1)
        return decode_frame(frame) if frame else self.recv()


def session(addr: str, image: str, token=None) -> None:
    link = Link(addr)
    if token:
        link.send({"Auth": {"token": token}})
    link.send({"Hello": {"version": PROTOCOL_VERSION, "device_id": "protocol_client.py",
                         "accepts": ["Original"], "max_frame": 1 << 20}})
    welcome = link.recv()
    assert "Welcome" in welcome, welcome
    w = welcome["Welcome"]
    assert "Original" in w["accepts"], w
    link.send({"Ping": {"nonce": 424242}})
    assert link.recv() == {"Pong": {"nonce": 424242}}
    payload = list(open(image, "rb").read())
    link.send({"Infer": {"seq": 1, "encoding": "Original", "payload": payload, "device_probs": None,
                         "want_probs": False}})
    answer = link.recv()
    assert "Answer" in answer and answer["Answer"]["seq"] == 1, answer
    a = answer["Answer"]
    probs = [p for _, p in a["top"]]
    assert len(a["top"]) == 5 and probs == sorted(probs, reverse=True), a
    # A frame whose CRC is wrong: the host names it and the link goes on.
    body = bytes([PROTOCOL_VERSION]) + write_message({"Ping": {"nonce": 1}})
    link.sock.sendall(cobs_encode(body + struct.pack("<I", zlib.crc32(body) ^ 1)) + b"\x00")
    err = link.recv()
    assert "Error" in err, err
    link.send({"Ping": {"nonce": 2}})
    assert link.recv() == {"Pong": {"nonce": 2}}
    print(json.dumps({"model": w["model"], "classes": w["classes"], "input": w["input"], "top": a["top"],
                      "host_ms": a["host_ms"], "bad_frame": err["Error"]["code"]}))


def main() -> None:
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "golden":
        golden(args[1])
    elif len(args) >= 3 and args[0] == "session":
        token = args[args.index("--token") + 1] if "--token" in args else None
        session(args[1], args[2], token)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
