"""A listener on a free loopback port that no request may ever reach.

Security tests point every URL-shaped value an attacker could send (``api_base``,
``base_url``, ``langsmith_base_url``...) at it. It accepts connections and records
each one, answering like an OpenAI-compatible server would so that a leak would look
like success to the gateway; the test then asserts it was never contacted.
"""

from __future__ import annotations

import socket
import threading


class Trap:
    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(64)
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # The first bytes of every connection (a request line and headers, as sent).
        self.contacts: list[bytes] = []
        self._lock = threading.Lock()
        self._open = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self._open:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            connection.settimeout(2)
            try:
                received = connection.recv(65536)
            except OSError:
                received = b""
            with self._lock:
                self.contacts.append(received)
            body = (b'{"id":"x","object":"chat.completion","created":0,"model":"trap","choices":[{"index":0,'
                    b'"message":{"role":"assistant","content":"trapped"},"finish_reason":"stop"}]}')
            try:
                connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                                   + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)
            except OSError:
                pass
            connection.close()

    def untouched(self) -> bool:
        with self._lock:
            return not self.contacts

    def close(self) -> None:
        self._open = False
        self._socket.close()
