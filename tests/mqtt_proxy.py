"""A TCP proxy in front of a real broker that can stop passing PUBACKs: a broker that stops acknowledging.

The client connects to the proxy; every byte goes through unchanged, except that
while ``swallow_acks`` is set the PUBACK packets from the broker to the client are
dropped (the broker has the messages and delivers them to subscribers; the client
never hears they arrived). The connection, PINGREQ/PINGRESP and everything else stay
healthy, so the client sees a broker that simply never acknowledges. No tests here.
"""

from __future__ import annotations

import socket
import threading

PUBACK = 4


def _split(buf: bytearray) -> list[bytes]:
    """Whole MQTT packets at the front of ``buf`` (removed from it)."""
    out = []
    while len(buf) >= 2:
        mult, length, i = 1, 0, 1
        while True:
            if i >= len(buf):
                return out
            b = buf[i]
            length += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80 or i > 4:
                break
        if len(buf) < i + length:
            return out
        out.append(bytes(buf[:i + length]))
        del buf[:i + length]
    return out


class AckSwallowingProxy:
    """``AckSwallowingProxy(broker_port).start()`` → ``.port``; set ``swallow_acks`` to stop PUBACKs."""

    def __init__(self, broker_port: int, host: str = "127.0.0.1") -> None:
        self.broker = (host, broker_port)
        self.swallow_acks = threading.Event()
        self.swallowed = 0
        self.connections = 0
        self._srv = socket.socket()
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind((host, 0))
        self._srv.listen(16)
        self.port = self._srv.getsockname()[1]
        self._socks: list[socket.socket] = []
        self._stop = threading.Event()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> "AckSwallowingProxy":
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                c, _ = self._srv.accept()
            except OSError:
                return
            try:
                b = socket.create_connection(self.broker, timeout=5)
            except OSError:
                c.close()
                continue
            b.settimeout(None)
            self.connections += 1
            self._socks += [c, b]
            threading.Thread(target=self._pump, args=(c, b, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(b, c, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_broker: bool) -> None:
        buf = bytearray()
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not from_broker:
                    dst.sendall(data)
                    continue
                buf += data
                for pkt in _split(buf):
                    if pkt[0] >> 4 == PUBACK and self.swallow_acks.is_set():
                        self.swallowed += 1
                        continue
                    dst.sendall(pkt)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def stop(self) -> None:
        self._stop.set()
        self._srv.close()
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass
