"""An embedded MQTT broker for the demo and benchmarks (loopback only, anonymous).

Mosquitto when it is installed (started as a subprocess on a free port, ready in
~20 ms); otherwise amqtt, the pure-Python broker, run in-process on its own event
loop thread. Neither is meant for production: there, run a real, configured
Mosquitto (see docs/mqtt.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_path() -> str | None:
    exe = shutil.which("mosquitto")
    if exe:
        return exe
    for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(p, os.X_OK):
            return p
    return None


def _wait_listening(port: int, timeout: float, alive: callable = lambda: True) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            if not alive():
                return False
            time.sleep(0.02)
    return False


class EmbeddedBroker:
    """``EmbeddedBroker().start()`` → ``.url``; ``.stop()``. ``kind`` says which engine runs.

    ``prefer``: ``"auto"`` (Mosquitto if installed, else amqtt), ``"mosquitto"`` or ``"amqtt"``.
    """

    def __init__(self, prefer: str = "auto", port: int | None = None) -> None:
        if prefer not in ("auto", "mosquitto", "amqtt"):
            raise ValueError(f"prefer must be auto, mosquitto or amqtt, got {prefer!r}")
        self.prefer = prefer
        self.port = port or free_port()
        self.kind: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> "EmbeddedBroker":
        exe = mosquitto_path() if self.prefer in ("auto", "mosquitto") else None
        if exe:
            self._start_mosquitto(exe)
        elif self.prefer == "mosquitto":
            raise RuntimeError("mosquitto is not installed")
        else:
            self._start_amqtt()
        return self

    def _start_mosquitto(self, exe: str) -> None:
        self._dir = tempfile.mkdtemp(prefix="alanet-broker-")
        conf = Path(self._dir) / "mosquitto.conf"
        conf.write_text("\n".join([
            f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false",
            "max_queued_messages 100000", "log_dest stderr", "log_type error", "log_type warning", ""]))
        errlog = open(Path(self._dir) / "mosquitto.log", "wb")
        self._proc = subprocess.Popen([exe, "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=errlog)
        errlog.close()
        if not _wait_listening(self.port, 10, lambda: self._proc is not None and self._proc.poll() is None):
            msg = (Path(self._dir) / "mosquitto.log").read_text(errors="replace")[-500:]
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {msg.strip()}")
        self.kind = "mosquitto"

    def _start_amqtt(self) -> None:
        try:
            from amqtt.broker import Broker
        except ImportError:
            raise RuntimeError("no MQTT broker: install mosquitto, or amqtt (pip install 'alanet-edge[demo]')") from None
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}", "max_connections": 50}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            async def main() -> None:
                self._broker = Broker(config)
                await self._broker.start()

            try:
                loop.run_until_complete(main())
            except BaseException as exc:  # reported to start()
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._thread = threading.Thread(target=run, name="amqtt-broker", daemon=True)
        self._thread.start()
        ready.wait(20)
        if errors or not ready.is_set():
            raise RuntimeError(f"amqtt broker did not start: {errors[0] if errors else 'timeout'}")
        self.kind = "amqtt"

    def stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        if self._loop is not None and self._broker is not None:
            loop = self._loop
            try:
                asyncio.run_coroutine_threadsafe(self._broker.shutdown(), loop).result(10)
            except Exception as exc:  # noqa: BLE001 - best effort at exit
                log.debug("amqtt shutdown: %s", exc)
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(5)
            self._loop = self._broker = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
