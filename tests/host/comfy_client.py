"""A small HTTP + websocket client for a ComfyUI server on the loopback interface (host tests only).

Standard library only (plus numpy/Pillow for output_images), so it runs in whichever Python runs pytest: the
websocket is a minimal RFC 6455 client (text and binary frames, fragmentation, ping/pong, close; no extensions).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WebSocketClosed(ConnectionError):
    pass


class _WebSocket:
    """Minimal blocking websocket client. recv() never loses data on a timeout (frames are parsed from a buffer)."""

    def __init__(self, host: str, port: int, path: str, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise WebSocketClosed("connection closed during the websocket handshake")
            buf += chunk
        head, self._buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in lines[0] + " ":
            raise ConnectionError(f"websocket handshake refused: {lines[0]}")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        expected = base64.b64encode(hashlib.sha1(key.encode() + _WS_GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != expected:
            raise ConnectionError("bad Sec-WebSocket-Accept in the websocket handshake")
        self._fragments: list[bytes] = []
        self._frag_opcode = 0
        self.closed = False

    def _parse_frame(self):
        b = self._buf
        if len(b) < 2:
            return None
        fin, opcode = b[0] & 0x80, b[0] & 0x0F
        masked, length, pos = b[1] & 0x80, b[1] & 0x7F, 2
        if length == 126:
            if len(b) < 4:
                return None
            length, pos = struct.unpack(">H", b[2:4])[0], 4
        elif length == 127:
            if len(b) < 10:
                return None
            length, pos = struct.unpack(">Q", b[2:10])[0], 10
        mask = b""
        if masked:
            if len(b) < pos + 4:
                return None
            mask, pos = b[pos:pos + 4], pos + 4
        if len(b) < pos + length:
            return None
        payload = b[pos:pos + length]
        if masked:
            payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
        self._buf = b[pos + length:]
        return bool(fin), opcode, payload

    def _send_frame(self, opcode: int, payload: bytes = b""):
        header = bytearray([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header.append(0x80 | n)
        elif n < 1 << 16:
            header.append(0x80 | 126)
            header += struct.pack(">H", n)
        else:
            header.append(0x80 | 127)
            header += struct.pack(">Q", n)
        mask = os.urandom(4)
        header += mask
        self.sock.sendall(bytes(header) + bytes(c ^ mask[i % 4] for i, c in enumerate(payload)))

    def send_text(self, text: str):
        self._send_frame(0x1, text.encode())

    def recv(self, timeout: float):
        """Next message as str (text) or bytes (binary); None on timeout. Raises WebSocketClosed."""
        if self.closed:
            raise WebSocketClosed("websocket is closed")
        deadline = time.monotonic() + timeout
        while True:
            frame = self._parse_frame()
            if frame is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.sock.settimeout(remaining)
                try:
                    chunk = self.sock.recv(65536)
                except (socket.timeout, TimeoutError):
                    return None
                if not chunk:
                    self.closed = True
                    raise WebSocketClosed("server closed the websocket connection")
                self._buf += chunk
                continue
            fin, opcode, payload = frame
            if opcode == 0x8:
                self.closed = True
                raise WebSocketClosed("server sent a websocket close frame")
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            if opcode in (0x1, 0x2):
                self._frag_opcode, self._fragments = opcode, [payload]
            elif opcode == 0x0:
                self._fragments.append(payload)
            if not fin:
                continue
            data, self._fragments = b"".join(self._fragments), []
            return data.decode("utf-8") if self._frag_opcode == 0x1 else data

    def close(self):
        if not self.closed:
            try:
                self._send_frame(0x8, struct.pack(">H", 1000))
            except OSError:
                pass
            self.closed = True
        self.sock.close()


class PromptRejected(RuntimeError):
    """POST /prompt answered with an error (validation failed). .body holds the server's JSON answer."""

    def __init__(self, status: int, body):
        super().__init__(f"POST /prompt rejected ({status}): {json.dumps(body)[:4000]}")
        self.status, self.body = status, body


class ComfyClient:
    """Client for one ComfyUI server started by the `comfy` fixture (or any server on 127.0.0.1)."""

    def __init__(self, port: int, host: str = "127.0.0.1", log_path=None, output_dir=None, input_dir=None,
                 temp_dir=None, user_dir=None, models_dir=None, process=None):
        self.host, self.port = host, port
        self.base_url = f"http://{host}:{port}"
        self.log_path, self.output_dir, self.input_dir = log_path, output_dir, input_dir
        self.temp_dir, self.user_dir, self.models_dir = temp_dir, user_dir, models_dir
        self.process = process
        self.client_id = uuid.uuid4().hex
        self.startup_seconds = None
        self._ws = None
        self._backlog: list[dict] = []  # messages read from the websocket and not yet handed out

    # ---- HTTP -------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body=None, timeout: float = 60.0):
        """(status, raw bytes). JSON-encodes body if given; never raises on HTTP error statuses."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get_json(self, path: str, timeout: float = 60.0):
        status, raw = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise RuntimeError(f"GET {path} -> {status}: {raw[:2000]!r}")
        return json.loads(raw)

    def post_json(self, path: str, body, timeout: float = 60.0):
        status, raw = self.request("POST", path, body, timeout=timeout)
        if status != 200:
            raise RuntimeError(f"POST {path} -> {status}: {raw[:2000]!r}")
        return json.loads(raw) if raw else None

    def object_info(self, node_class: str | None = None) -> dict:
        if node_class is None:
            return self.get_json("/object_info")
        return self.get_json("/object_info/" + urllib.parse.quote(node_class))[node_class]

    @staticmethod
    def combo_options(spec) -> list:
        """The choices of a combo input in /object_info, in either schema format: ``[[choices…], {…}]`` (classic)
        or ``["COMBO", {"options": [choices…], …}]`` (V3 schemas on newer ComfyUI)."""
        kind = spec[0]
        if isinstance(kind, list):
            return kind
        if kind == "COMBO" and len(spec) > 1 and "options" in spec[1]:
            return spec[1]["options"]
        raise ValueError(f"not a combo input: {spec!r}")

    def history(self, prompt_id: str) -> dict | None:
        return self.get_json("/history/" + urllib.parse.quote(prompt_id)).get(prompt_id)

    def workflow_templates(self) -> dict:
        """{custom-node folder name: [workflow names]} from GET /workflow_templates."""
        return self.get_json("/workflow_templates")

    def workflow_template(self, pack: str, name: str) -> dict:
        """One example workflow (UI format) as the browser loads it."""
        return self.get_json(f"/api/workflow_templates/{urllib.parse.quote(pack)}/{urllib.parse.quote(name)}.json")

    def interrupt(self, prompt_id: str | None = None):
        self.post_json("/interrupt", {"prompt_id": prompt_id} if prompt_id else {})

    def clear_queue(self):
        self.post_json("/queue", {"clear": True})

    def free(self, unload_models: bool = True, free_memory: bool = True):
        self.post_json("/free", {"unload_models": unload_models, "free_memory": free_memory})

    def log_text(self) -> str:
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def log_tail(self, n_lines: int = 80) -> str:
        return "\n".join(self.log_text().splitlines()[-n_lines:])

    # ---- websocket --------------------------------------------------------------------------------------
    def connect_ws(self):
        if self._ws is None or self._ws.closed:
            self._ws = _WebSocket(self.host, self.port, f"/ws?clientId={self.client_id}")
        return self._ws

    def close(self):
        if self._ws is not None:
            self._ws.close()
            self._ws = None

    def _read_ws(self, timeout: float):
        raw = self.connect_ws().recv(timeout)
        if raw is None:
            return
        if isinstance(raw, bytes):
            event = struct.unpack(">I", raw[:4])[0] if len(raw) >= 4 else None
            self._backlog.append({"type": "binary", "event": event, "data": raw[4:]})
        else:
            self._backlog.append(json.loads(raw))

    # ---- prompts ----------------------------------------------------------------------------------------
    def queue(self, prompt: dict, extra_data: dict | None = None) -> str:
        """POST /prompt with this client's client_id; returns the prompt_id. Raises PromptRejected."""
        self.connect_ws()  # connect before queueing so no message of this prompt is missed
        body = {"prompt": prompt, "client_id": self.client_id}
        if extra_data:
            body["extra_data"] = extra_data
        status, raw = self.request("POST", "/prompt", body)
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = raw.decode("utf-8", "replace")
        if status != 200 or not isinstance(answer, dict) or "prompt_id" not in answer:
            raise PromptRejected(status, answer)
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300.0, on_message=None):
        """Follow the websocket until the prompt is done; returns (history entry, messages).

        Done means `executing` with node None for this prompt (ComfyUI sends it after every prompt, also after an
        execution_error or an interrupt; the history entry is written before it). Messages are every websocket
        message read meanwhile that carries this prompt_id or no prompt_id at all (status, custom events, binary
        previews as {"type": "binary", "event", "data"}). On timeout the prompt is interrupted, TimeoutError raised.
        ``on_message(msg)`` is called for each of them as it arrives (e.g. to interrupt mid-run).
        """
        deadline = time.monotonic() + timeout
        mine: list[dict] = []
        history_seen_at = None
        while True:
            done = False
            keep = []
            for msg in self._backlog:
                data = msg.get("data") if isinstance(msg.get("data"), dict) else {}
                pid = data.get("prompt_id")
                if pid is not None and pid != prompt_id:
                    keep.append(msg)
                    continue
                mine.append(msg)
                if on_message is not None:
                    on_message(msg)
                if msg.get("type") == "executing" and data.get("node") is None and pid == prompt_id:
                    done = True
            self._backlog = keep
            if done:
                break
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited (code {self.process.returncode}) while running prompt "
                                   f"{prompt_id}; log tail:\n{self.log_tail()}")
            now = time.monotonic()
            if now > deadline:
                try:
                    self.interrupt()
                    self.clear_queue()
                except Exception:
                    pass
                types = [m.get("type") for m in mine][-20:]
                raise TimeoutError(f"prompt {prompt_id} not done after {timeout:.0f} s; last messages {types}; "
                                   f"log tail:\n{self.log_tail(40)}")
            try:
                self._read_ws(min(1.0, deadline - now))
            except (WebSocketClosed, OSError):
                self._ws = None  # reconnect on the next round; fall back on /history meanwhile
                time.sleep(0.2)
            # Fallback if the websocket missed the end: the history entry exists and nothing arrived for 3 s.
            if not self._backlog:
                entry = self.history(prompt_id)
                if entry is not None and (entry.get("status") or {}).get("status_str") in ("success", "error"):
                    history_seen_at = history_seen_at or time.monotonic()
                    if time.monotonic() - history_seen_at > 3.0:
                        break
        return self.history(prompt_id), mine

    def run(self, prompt: dict, timeout: float = 300.0, extra_data: dict | None = None):
        """queue + wait: returns (history entry, messages)."""
        return self.wait(self.queue(prompt, extra_data), timeout)

    # ---- results ----------------------------------------------------------------------------------------
    @staticmethod
    def messages_of_type(messages, msg_type: str) -> list:
        return [m for m in messages if m.get("type") == msg_type]

    @staticmethod
    def execution_error(messages) -> dict | None:
        errors = [m for m in messages if m.get("type") == "execution_error"]
        return errors[-1]["data"] if errors else None

    def image_paths(self, history_entry: dict, node_id: str | None = None) -> list[str]:
        paths = []
        for nid, out in (history_entry or {}).get("outputs", {}).items():
            if node_id is not None and str(nid) != str(node_id):
                continue
            for img in out.get("images", []) or []:
                folder = {"output": self.output_dir, "temp": self.temp_dir, "input": self.input_dir}[
                    img.get("type", "output")]
                paths.append(os.path.join(folder, img.get("subfolder") or "", img["filename"]))
        return paths

    def output_images(self, history_entry: dict, node_id: str | None = None) -> list:
        """Images a prompt produced (SaveImage -> output dir, PreviewImage -> temp dir) as HxWxC uint8 arrays."""
        import numpy as np
        from PIL import Image

        arrays = []
        for path in self.image_paths(history_entry, node_id):
            with Image.open(path) as im:
                arrays.append(np.array(im))
        return arrays
