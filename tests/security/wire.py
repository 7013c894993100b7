"""Raw HTTP/1.1 over sockets, for what httpx will not send: huge heads, slow and lying clients."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from typing import Any


def exchange(port: int, data: bytes, timeout: float = 30.0) -> bytes:
    """Send `data` while reading the answer; everything read until the server closes or resets.

    Sending and reading at once lets a server that refuses a request half-way (an oversized
    head) answer before the rest is sent.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sender = threading.Thread(target=_send_all, args=(sock, data), daemon=True)
        sender.start()
        received = read_until_closed(sock)
        sender.join(timeout)
        return received


def _send_all(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the server may refuse the rest, as it should
        sock.sendall(data)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything read until the server closes the connection (end of stream) or resets it.

    A read that times out is not a close: it fails, saying what was read until then.
    """
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        except TimeoutError as error:
            read = b"".join(chunks)
            message = f"the server kept the connection open after {read[:300]!r}"
            raise AssertionError(message) from error
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    """The status code of the first response in `answer`; 0 for none."""
    line = answer.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    return int(parts[1]) if len(parts) > 1 and line.startswith(b"HTTP/1.1") else 0


def problem_of(answer: bytes) -> dict[str, Any]:
    """The problem+json body of the first response in `answer` (asserts its content type)."""
    head, _, body = answer.partition(b"\r\n\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
    }
    assert headers.get(b"content-type") == b"application/problem+json", head
    length = int(headers[b"content-length"])
    problem: dict[str, Any] = json.loads(body[:length])
    return problem


def request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
