"""Flashing inside the running gateway (``alanet run``): start-up bundle, agent, model swaps.

The gateway's main loop owns the pipelines; the :class:`~alanet.device.flash.agent.FlashAgent`
runs on its own threads. :class:`GatewayFlash` joins them:

- ``on_activate(bundle)`` (agent thread) builds the LiteRT runner and ModelSpec, queues
  them and waits until the main loop has applied them, so the agent reports ``active``
  only once the new model really runs (or raises, and the store pointer goes back). A
  switch the loop has not applied within ``APPLY_TIMEOUT_S`` is cancelled: it is
  reported refused and never applied later.
- :meth:`GatewayFlash.apply_pending` (main loop, between two ``process()`` calls, i.e.
  between frames and never inside a window) plans the switch of every wearer's
  pipeline first (:meth:`~alanet.device.pipeline.WearerPipeline.plan_model`) and
  applies them only when every plan succeeded (all wearers switch, or none), updates
  the gateway's bundle/spec and hands the retained ``alanet/<gw>/model`` report to the
  gateway's MQTT link (which re-sends it after every reconnect).
- :func:`startup_model` loads the store's current bundle (then its previous, then the
  configured one), with the full verification, when the gateway starts.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from alanet.device.bundle import Bundle
from alanet.device.flash.agent import FlashAgent
from alanet.device.flash.protocol import model_topic
from alanet.device.flash.store import BundleStore, Fit, TrustPolicy, load_startup_bundle
from alanet.device.schema import EMOPAIN

log = logging.getLogger("alanet.flash")
APPLY_TIMEOUT_S = 15.0


class _Switch:
    """One requested model switch, shared by the agent thread and the main loop (under ``lock``)."""

    def __init__(self, bundle: Bundle, spec: Any) -> None:
        self.bundle, self.spec = bundle, spec
        self.state = "pending"  # → "applied" | "failed" | "cancelled"
        self.error: str | None = None
        self.done = threading.Event()
        self.lock = threading.Lock()

    def finish(self, state: str, error: str | None = None) -> None:
        self.state, self.error = state, error
        self.done.set()


def trust_policy(cfg: Any) -> TrustPolicy:
    """Which flashed bundles the gateway accepts: signed by ``model.trusted_keys``; unsigned ones
    only with ``[flash] allow_unsigned = true`` (never the default, and never with keys configured)."""
    return TrustPolicy(tuple(getattr(cfg, "trusted_keys", ()) or ()), bool(getattr(cfg, "flash_allow_unsigned", False)))


def startup_model(cfg: Any) -> tuple[Bundle, Any]:
    """(bundle, ModelSpec) the gateway starts with: the store's current bundle if it verifies, else
    its previous, else ``cfg.bundle``. Same checks as a flash (signature, hash, self-test, fit)."""
    from alanet.device.inference import ModelRunner
    from alanet.device.pipeline import ModelSpec

    store = BundleStore(cfg.state_dir)
    policy = TrustPolicy(tuple(cfg.trusted_keys or ()), bool(cfg.allow_unsigned))
    bundle = load_startup_bundle(store, cfg.bundle, policy, Fit(sample_rate_hz=None), log=log)
    return bundle, ModelSpec.from_bundle(bundle, ModelRunner.from_bundle(bundle))


class GatewayFlash:
    """Flashing for one running :class:`~alanet.device.runtime.Gateway` (see the module docstring)."""

    def __init__(self, gw: Any, *, mqtt5: bool = True) -> None:
        self.gw = gw
        cfg = gw.cfg
        self.store = BundleStore(cfg.state_dir)
        self._pending: queue.SimpleQueue[_Switch] = queue.SimpleQueue()
        self._reports: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self.swaps = 0
        self._stopping = False
        policy = trust_policy(cfg)
        self.agent = FlashAgent(
            cfg.gateway, cfg.broker, self.store, trusted_keys=policy.trusted_keys,
            allow_unsigned=policy.allow_unsigned, fit=self._fit, on_activate=self.on_activate,
            running=gw.bundle, model_payload=self._model_payload, report=self._reports.put, mqtt5=mqtt5,
            client_id=f"{cfg.broker.client_id or 'alanet-' + cfg.gateway}-flash")

    def _fit(self) -> Fit:
        """The EmoPain channels at the wearable's announced rate (the running model's until a HELLO came)."""
        rates = {float(w.pipeline.hello.sample_rate_hz) for w in self.gw.wearables if w.pipeline.hello is not None}
        rate = rates.pop() if len(rates) == 1 else float(self.gw.spec.sample_rate_hz)
        return Fit(channels=tuple(EMOPAIN.names), sample_rate_hz=rate)

    def _model_payload(self) -> dict[str, Any]:
        import json

        d = json.loads(self.gw.model_payload())
        d["bundle"] = str(getattr(self.gw.bundle, "path", d.get("bundle")))
        return d

    def start(self) -> "GatewayFlash":
        self.agent.start()
        return self

    def stop(self) -> None:
        """Stop the agent; a switch still waiting for the main loop is refused (the loop has ended)."""
        self._stopping = True
        self._fail_pending("the gateway is stopping")
        self.agent.stop()

    def _fail_pending(self, why: str) -> None:
        while True:
            try:
                sw = self._pending.get_nowait()
            except queue.Empty:
                return
            with sw.lock:
                if sw.state == "pending":
                    sw.finish("failed", why)

    # ---- agent thread ----
    def on_activate(self, bundle: Bundle) -> None:
        from alanet.device.inference import ModelRunner
        from alanet.device.pipeline import ModelSpec

        spec = ModelSpec.from_bundle(bundle, ModelRunner.from_bundle(bundle))
        sw = _Switch(bundle, spec)
        self._pending.put(sw)
        if self._stopping:
            self._fail_pending("the gateway is stopping")
        sw.done.wait(APPLY_TIMEOUT_S)
        with sw.lock:
            if sw.state == "pending":  # too late: cancelled, the loop will skip it
                sw.finish("cancelled", f"the gateway did not switch within {APPLY_TIMEOUT_S:g} s (cancelled)")
        if sw.state != "applied":
            raise RuntimeError(sw.error or "not applied")

    # ---- main loop ----
    def apply_pending(self) -> None:
        """Switch models and publish reports; call from the gateway's main loop between frames."""
        while True:
            try:
                sw = self._pending.get_nowait()
            except queue.Empty:
                break
            with sw.lock:
                if sw.state != "pending":  # cancelled on timeout, or failed at stop: never applied late
                    continue
                try:
                    # plan every wearer first: all pipelines switch, or none does
                    plans = [(w, w.pipeline.plan_model(sw.spec)) for w in self.gw.wearables]
                except Exception as exc:  # noqa: BLE001 - reported back to the agent, old model stays
                    sw.finish("failed", str(exc))
                    continue
                for w, plan in plans:
                    w.pipeline.apply_model(plan)
                self.gw.bundle, self.gw.spec = sw.bundle, sw.spec
                self.swaps += 1
                sw.finish("applied")
                log.info("model %s running (switch %d)", sw.spec.model_id, self.swaps)
        while True:
            try:
                payload = self._reports.get_nowait()
            except queue.Empty:
                break
            self.gw.link.set_retained(model_topic(self.gw.cfg.gateway), payload)
