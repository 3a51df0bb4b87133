"""Where the firmware simulator writes: a pty pair it owns, or an existing port.

``VirtualPort`` makes a pseudo-terminal pair and publishes its slave under a stable
symlink (``path``), so ``unplug()`` / ``replug()`` behave like a USB serial device
vanishing and coming back: the reader sees an I/O error, the path disappears, and a
new pty appears under the same path. ``ExistingPort`` writes to a device path or
pyserial URL someone else provides (a socat pty, a USB-serial adapter).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import shutil
import struct
import tempfile
import termios
import threading
import time
import tty

_TIOCINQ = getattr(termios, "TIOCINQ", getattr(termios, "FIONREAD", 0x541B))


class VirtualPort:
    """A pty pair with a stable path; the simulator writes to the master side."""

    def __init__(self, link_path: str | os.PathLike[str] | None = None) -> None:
        self._tmpdir: str | None = None
        if link_path is None:
            self._tmpdir = tempfile.mkdtemp(prefix="alanet-sim-")
            link_path = os.path.join(self._tmpdir, "tty")
        self.path = str(link_path)
        self._master: int | None = None
        self._slave: int | None = None
        self.slave_name: str | None = None
        self.replug()

    @property
    def plugged(self) -> bool:
        return self._master is not None

    def replug(self) -> None:
        """Create a fresh pty pair and point ``path`` at its slave."""
        if self._master is not None:
            return
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line editing, no CR/LF mangling: binary safe
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.slave_name = os.ttyname(slave)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(self.slave_name, tmp)
        os.replace(tmp, self.path)

    def pending(self) -> int:
        """Bytes written but not yet read by the other side."""
        if self._slave is None:
            return 0
        buf = fcntl.ioctl(self._slave, _TIOCINQ, struct.pack("I", 0))
        return int(struct.unpack("I", buf)[0])

    def wait_drained(self, timeout: float, cancel: threading.Event | None = None) -> int:
        """Wait until the reader has taken every byte; return what is left.

        Bytes written to the master reach the slave's queue asynchronously, so an
        empty queue only counts after it stayed empty for a few milliseconds.
        """
        deadline = time.monotonic() + timeout
        quiet_since: float | None = None
        while True:
            left = self.pending()
            now = time.monotonic()
            if left:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= 0.02:
                return 0
            if now >= deadline or (cancel is not None and cancel.is_set()):
                return left
            time.sleep(0.002)

    def wait_reader(self, timeout: float, settle: float = 0.2, cancel: threading.Event | None = None) -> bool:
        """Wait until someone opens the port and reads (or flushes) a probe 0x00.

        The probe shows up in the slave's queue within ``settle`` seconds unless an
        open reader takes it first; once seen, it disappears only when a reader
        reads it or flushes the queue on open (pyserial does), i.e. a reader is there.
        """
        if self.write(b"\x00", timeout) != 1:
            return False
        deadline = time.monotonic() + timeout
        seen_by = time.monotonic() + settle
        seen = False
        while time.monotonic() < deadline and not (cancel is not None and cancel.is_set()):
            left = self.pending()
            if left:
                seen = True
            elif seen or time.monotonic() >= seen_by:
                return True
            time.sleep(0.002)
        return False

    def write(self, data: bytes, timeout: float) -> int:
        """Write ``data``; block at most ``timeout`` s on a full buffer. Returns bytes written."""
        if self._master is None:
            return 0
        view = memoryview(data)
        done = 0
        deadline = time.monotonic() + timeout
        while done < len(view):
            try:
                done += os.write(self._master, view[done:])
                continue
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.EBADF):
                    return done
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                return done
            select.select([], [self._master], [], min(left, 0.05))
        return done

    def unplug(self) -> None:
        """The device vanishes: close both sides and remove ``path``."""
        with contextlib.suppress(FileNotFoundError):
            if os.path.islink(self.path):
                os.unlink(self.path)
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None

    def close(self) -> None:
        self.unplug()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None


class ExistingPort:
    """Writes to a device path or pyserial URL; unplug/replug close and reopen it."""

    def __init__(self, url: str, baud: int = 115200) -> None:
        import serial

        self.path = url
        self.baud = baud
        self._serial_mod = serial
        self._port = None
        self.replug()

    @property
    def plugged(self) -> bool:
        return self._port is not None

    def replug(self) -> None:
        if self._port is None:
            self._port = self._serial_mod.serial_for_url(self.path, baudrate=self.baud, write_timeout=5.0)

    def pending(self) -> int:
        return 0

    def wait_drained(self, timeout: float, cancel: threading.Event | None = None) -> int:
        if self._port is not None:
            with contextlib.suppress(Exception):
                self._port.flush()
        return 0

    def wait_reader(self, timeout: float, settle: float = 0.0, cancel: threading.Event | None = None) -> bool:
        return True

    def write(self, data: bytes, timeout: float) -> int:
        if self._port is None:
            return 0
        try:
            return int(self._port.write(data) or 0)
        except self._serial_mod.SerialTimeoutException:
            return 0

    def unplug(self) -> None:
        if self._port is not None:
            with contextlib.suppress(Exception):
                self._port.close()
        self._port = None

    def close(self) -> None:
        self.unplug()
