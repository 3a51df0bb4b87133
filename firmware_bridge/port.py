"""Transport: owns a serial port, reads it in a thread, reconnects after unplug.

Same split as pyserial's ``serial.threaded``: ``SerialLink`` owns the port and the
thread and hands raw bytes to ``on_data``; decoding belongs to a sans-I/O protocol
object (``codec.Decoder`` or ``csv_mode.CsvDecoder``)::

    dec = Decoder()
    link = SerialLink("/dev/ttyACM0", on_data=lambda b: handle(dec.feed(b)))
    link.start()

``url`` is a device path (``/dev/ttyUSB0``, a pty, a symlink to one) or any pyserial
URL (``socket://host:port``, ``rfc2217://...``, ``loop://``). When the port cannot be
opened or vanishes (USB unplug, pty closed) the link goes ``down``, logs why, and
retries with exponential backoff (``reconnect_backoff = (first, max)`` seconds) until
``stop()``.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import threading
from typing import Callable

import serial

log = logging.getLogger(__name__)

CONNECTING, UP, DOWN = "connecting", "up", "down"


class SerialLink:
    """A self-healing serial reader. ``state`` is "connecting", "up" or "down"."""

    def __init__(
        self,
        url: str,
        baud: int = 115200,
        *,
        on_data: Callable[[bytes], None],
        on_state: Callable[[str], None] | None = None,
        reconnect_backoff: tuple[float, float] = (0.1, 5.0),
        read_timeout: float = 0.05,
        name: str | None = None,
    ) -> None:
        first, most = reconnect_backoff
        if not 0 < first <= most:
            raise ValueError(f"reconnect_backoff must be 0 < first <= max, got {reconnect_backoff}")
        self.url = url
        self.baud = baud
        self.on_data = on_data
        self.on_state = on_state
        self.backoff = (float(first), float(most))
        self.read_timeout = read_timeout
        self.name = name or f"serial:{url}"
        self.state = CONNECTING
        self.reconnects = 0  # successful opens after the first
        self.open_failures = 0
        self.bytes_read = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._port: serial.SerialBase | None = None
        self._lock = threading.Lock()
        self._ever_up = False
        self._up_event = threading.Event()

    # -- public

    def start(self) -> "SerialLink":
        if self._thread is not None:
            raise RuntimeError("SerialLink already started")
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading, close the port, join the thread."""
        self._stop.set()
        port = self._port
        if port is not None and hasattr(port, "cancel_read"):
            try:
                port.cancel_read()  # wake a blocked read (pyserial's supported way)
            except Exception:
                pass
        if self._thread is not None:
            self._thread.join(timeout)
        self._close()

    def wait_up(self, timeout: float | None = None) -> bool:
        """Block until the link is up (True) or ``timeout`` passes (False)."""
        return self._up_event.wait(timeout)

    def write(self, data: bytes) -> bool:
        """Send bytes to the device if the link is up; False when it is not."""
        port = self._port
        if port is None or self.state != UP:
            return False
        try:
            port.write(data)
            return True
        except (serial.SerialException, OSError) as exc:
            log.warning("%s: write failed: %s", self.url, exc)
            return False

    def __enter__(self) -> "SerialLink":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals

    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        self.state = state
        if state == UP:
            self._up_event.set()
        else:
            self._up_event.clear()
        if self.on_state is not None:
            try:
                self.on_state(state)
            except Exception:  # a broken callback must not kill the reader
                log.exception("%s: on_state callback failed", self.url)

    def _close(self) -> None:
        with self._lock:
            port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except Exception:  # closing a vanished device may fail; it is gone either way
                pass

    def _open(self) -> bool:
        try:
            port = serial.serial_for_url(self.url, baudrate=self.baud, timeout=self.read_timeout, do_not_open=True)
            port.open()
        except (serial.SerialException, OSError, ValueError) as exc:
            self.open_failures += 1
            msg = f"cannot open serial port {self.url!r}: {exc}"
            # Clear once per distinct error, then a reminder every 30 failures.
            if msg != self.last_error or self.open_failures % 30 == 0:
                log.error("%s (retrying with backoff up to %.1f s)", msg, self.backoff[1])
            self.last_error = msg
            return False
        with self._lock:
            self._port = port
        if self._ever_up:
            self.reconnects += 1
            log.warning("%s: reconnected (reconnect #%d)", self.url, self.reconnects)
        else:
            log.info("%s: open at %d baud", self.url, self.baud)
        self._ever_up = True
        self.last_error = None
        self._set_state(UP)
        return True

    def _run(self) -> None:
        delay = self.backoff[0]
        while not self._stop.is_set():
            if not self._open():
                self._set_state(DOWN if self._ever_up or self.open_failures > 0 else CONNECTING)
                self._stop.wait(delay)
                delay = min(delay * 2, self.backoff[1])
                continue
            delay = self.backoff[0]
            self._read_until_error()
            self._close()
            if not self._stop.is_set():
                self._set_state(DOWN)
        self._close()
        self._set_state(DOWN)

    def _read_until_error(self) -> None:
        poller = _posix_poller(self._port)
        while not self._stop.is_set():
            port = self._port
            if port is None:
                return
            try:
                if poller is not None:
                    data = _read_posix(*poller, self.read_timeout)
                else:
                    data = port.read(max(1, min(port.in_waiting, 65536)))
                    if len(data) == 1 and port.in_waiting:  # woken by a frame's first byte: take the rest with it
                        data += port.read(min(port.in_waiting, 65535))
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                # TypeError/AttributeError: pyserial internals after close() from stop().
                if not self._stop.is_set():
                    self.last_error = f"serial port {self.url!r} lost: {exc}"
                    log.warning("%s (will reconnect)", self.last_error)
                return
            if data:
                self.bytes_read += len(data)
                try:
                    self.on_data(data)
                except Exception:
                    log.exception("%s: on_data callback failed", self.url)



def _posix_poller(port: object) -> tuple[select.poll, int, int] | None:
    """For a POSIX device port: a poll object on its file descriptor and pyserial's abort pipe
    (``cancel_read``), with both; else None (socket://, loop:// and other URLs keep pyserial's own
    ``read``). ``poll`` rather than ``select``: a gateway of hundreds of ports has descriptors past 1024."""
    fd, abort = getattr(port, "fd", None), getattr(port, "pipe_abort_read_r", None)
    if not (isinstance(fd, int) and isinstance(abort, int) and hasattr(select, "poll")):
        return None
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    poller.register(abort, select.POLLIN)
    return poller, fd, abort


def _read_posix(poller: select.poll, fd: int, abort: int, timeout: float) -> bytes:
    """Whatever the driver holds, in one ``read`` once ``poll`` says there is some (b"" on a timeout
    or a ``cancel_read``): two system calls per wake, where pyserial's ``read`` with ``in_waiting``
    makes four to six in Python. Raises ``SerialException`` for a device that vanished."""
    events = dict(poller.poll(timeout * 1000.0))
    if abort in events:
        os.read(abort, 1000)
        return b""
    if fd not in events:
        return b""
    try:
        data = os.read(fd, 65536)
    except BlockingIOError:
        return b""
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EINTR):
            return b""
        raise serial.SerialException(f"read failed: {exc}") from None
    if not data:  # readable (or hung up) but empty: how Linux shows a device that is gone
        raise serial.SerialException("device reports readiness to read but returned no data (disconnected?)")
    return data
