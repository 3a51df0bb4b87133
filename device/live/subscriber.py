"""A paho-mqtt subscriber to the gateways' topics that keeps reconnecting and reports its link state."""

from __future__ import annotations

import logging
import ssl
import threading
import uuid
from typing import Callable, Sequence

import paho.mqtt.client as mqtt

from alanet.device.config import BrokerConfig

log = logging.getLogger(__name__)

MessageCallback = Callable[[str, bytes], None]
LinkCallback = Callable[[str, str], None]  # (state, detail); state: connecting | connected | disconnected


def topics_for(gateway: str | None) -> list[str]:
    """What to subscribe to: every gateway (``alanet/#``) or one (``alanet/<gateway>/#``)."""
    return [f"alanet/{gateway}/#"] if gateway else ["alanet/#"]


class Subscriber:
    """Connects in the background, retries forever (1–2 s back-off), resubscribes on every connect."""

    def __init__(self, broker: BrokerConfig, topics: Sequence[str], on_message: MessageCallback,
                 on_link: LinkCallback, client_id: str | None = None) -> None:
        self.broker = broker
        self.topics = list(topics)
        self._on_message = on_message
        self._on_link = on_link
        self._stopping = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"alanet-live-{uuid.uuid4().hex[:10]}",
                                  clean_session=True)
        if broker.username:
            self.client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            self.client.tls_set(ca_certs=broker.ca_file, certfile=broker.cert_file, keyfile=broker.key_file,
                                cert_reqs=ssl.CERT_REQUIRED)
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.on_connect = self._connected
        self.client.on_disconnect = self._disconnected
        self.client.on_connect_fail = self._connect_failed
        self.client.on_message = self._message

    @property
    def where(self) -> str:
        return f"{self.broker.host}:{self.broker.port}"

    def start(self) -> None:
        """Start the network thread; the first connection is attempted (and retried) in the background."""
        self._on_link("connecting", f"connecting to {self.where}")
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=self.broker.keepalive)
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect and join the network thread."""
        self._stopping.set()
        try:
            self.client.disconnect()
        except Exception:  # noqa: BLE001 - already disconnected
            pass
        self.client.loop_stop()

    # paho callbacks (network thread)
    def _connected(self, client: mqtt.Client, userdata: object, flags: object, reason: mqtt.ReasonCode,
                   properties: object = None) -> None:
        if reason.is_failure:
            self._on_link("disconnected", f"broker {self.where} refused the connection: {reason}")
            return
        for t in self.topics:
            client.subscribe(t, qos=1)
        self._on_link("connected", f"connected to {self.where}")

    def _disconnected(self, client: mqtt.Client, userdata: object, flags: object, reason: mqtt.ReasonCode,
                      properties: object = None) -> None:
        if not self._stopping.is_set():
            self._on_link("disconnected", f"lost {self.where} ({reason}); retrying")

    def _connect_failed(self, client: mqtt.Client, userdata: object) -> None:
        if not self._stopping.is_set():
            self._on_link("disconnected", f"cannot reach {self.where}; retrying")

    def _message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            self._on_message(msg.topic, msg.payload)
        except Exception:  # noqa: BLE001 - one bad message must not stop the subscriber
            log.exception("cannot handle a message on %s", msg.topic)
