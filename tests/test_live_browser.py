"""The live page in a real headless Chromium (Debian chromium + chromium-driver, Selenium).

A simulated session publishes schema-valid status / model / state / alert messages to a
real Mosquitto like the gateway runtime does; ``alanet live`` serves the page; the test
watches the trace advance and the alert banner appear, and saves a screenshot.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from importlib import resources
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from conftest import REPO, free_port

CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("ALANET_TEST_ARTIFACTS") or REPO / "tests" / "artifacts")



def _schema(name: str) -> dict:
    return json.loads(resources.files("alanet.device").joinpath("schemas", f"{name}.schema.json").read_text())


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMEDRIVER) and os.path.exists(CHROMIUM)):
        pytest.fail("needs the Debian packages chromium and chromium-driver (./dev test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="alanet-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1024,900"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class SimulatedGateway(threading.Thread):
    """Publishes what ``alanet run`` publishes for one wearer, every payload checked against its schema."""

    def __init__(self, port: int, gateway: str = "gw-sim", wearer: str = "w1", period_s: float = 0.15) -> None:
        super().__init__(daemon=True)
        import jsonschema

        self.validators = {k: jsonschema.Draft202012Validator(_schema(k)) for k in ("status", "state", "alert")}
        self.gateway, self.wearer, self.period_s = gateway, wearer, period_s
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sim-{gateway}")
        self.client.will_set(f"alanet/{gateway}/status", json.dumps({"schema": "alanet.status/1", "gateway": gateway,
                                                                     "state": "offline"}), qos=1, retain=True)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.stop_event = threading.Event()
        self.raise_at = 1 << 30  # window index at which the alert is raised
        self.n = 0
        self.sent: dict[float, float] = {}  # smoothed probability -> time.monotonic() of its publish

    def pub(self, kind: str, topic: str, payload: dict, qos: int = 0, retain: bool = False) -> None:
        if kind in self.validators:
            self.validators[kind].validate(payload)
        self.client.publish(topic, json.dumps(payload), qos=qos, retain=retain)

    def run(self) -> None:
        gw, w = self.gateway, self.wearer
        self.pub("model", f"alanet/{gw}/model", {"schema": "alanet.model/1", "gateway": gw, "model": "sim-protective",
                                                  "task": "protective", "labels": ["normal", "protective"],
                                                  "decision": {"raise_threshold": 0.65, "clear_threshold": 0.4}},
                 qos=1, retain=True)
        while not self.stop_event.is_set():
            i = self.n
            p = min(0.95, 0.2 + 0.02 * i)
            t_end = 3.0 + 0.75 * i
            if i % 10 == 0:
                self.pub("status", f"alanet/{gw}/status", {
                    "schema": "alanet.status/1", "gateway": gw, "state": "online", "time": "2026-11-24T10:00:00.000Z",
                    "uptime_s": float(i), "model": "sim-protective",
                    "counters": {"frames": 45 * i + 180, "crc_errors": 0, "gaps": 0, "windows": i, "inference_ms": 0.15,
                                 "queue_depth": 0}}, qos=1, retain=True)
            active = i >= self.raise_at
            self.pub("state", f"alanet/{gw}/{w}/state", {
                "schema": "alanet.state/1", "gateway": gw, "wearer": w, "task": "protective", "t_end": t_end,
                "window": i, "probabilities": {"normal": round(1 - p, 4), "protective": round(p, 4)},
                "smoothed": round(p, 4), "state": "active" if active else "none", "model": "sim-protective"})
            self.sent.setdefault(round(p, 2), time.monotonic())
            if i % 5 == 0:  # a second, quiet wearer on the same gateway
                self.pub("state", f"alanet/{gw}/w2/state", {
                    "schema": "alanet.state/1", "gateway": gw, "wearer": "w2", "task": "protective", "t_end": t_end,
                    "probabilities": {"normal": 0.9, "protective": 0.1}, "smoothed": 0.1, "state": "none",
                    "model": "sim-protective"})
            if i == self.raise_at:
                self.pub("alert", f"alanet/{gw}/{w}/alert", {
                    "schema": "alanet.alert/1", "id": str(uuid.uuid4()), "gateway": gw, "wearer": w,
                    "type": "protective", "state": "raised", "probability": round(p, 4), "t_start": t_end - 4.5,
                    "t_end": t_end, "window": i, "model": "sim-protective", "time": "2026-11-24T10:00:05.000Z"}, qos=1)
            self.n += 1
            self.stop_event.wait(self.period_s)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(5)
        self.client.disconnect()
        self.client.loop_stop()


def _text(driver, css: str) -> str:
    return driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.textContent : null;", css)


def _wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_page_shows_trace_advancing_and_alert(mosquitto, browser):
    port = free_port()
    live = subprocess.Popen([sys.executable, "-m", "alanet", "live", "--broker", mosquitto.url, "--http-port", str(port)],
                            stderr=subprocess.PIPE, text=True)
    sim = SimulatedGateway(mosquitto.port)
    try:
        assert "serving" in live.stderr.readline()
        sim.start()
        browser.get(f"http://127.0.0.1:{port}/")
        card = '#wearers .wearer[data-wearer="gw-sim/w1"]'
        _wait(lambda: _text(browser, f"{card} .samples") not in (None, "0"), 10, "the wearer card")
        assert _text(browser, "#link") == "broker connected"
        assert browser.execute_script("return document.querySelector('#banner').hidden") is True
        first = int(_text(browser, f"{card} .samples"))
        p_first = float(_text(browser, f"{card} .prob"))
        _wait(lambda: int(_text(browser, f"{card} .samples")) >= first + 5, 10, "five more samples")
        assert float(_text(browser, f"{card} .prob")) > p_first  # the simulated probability rises
        # publish -> page latency (printed, not asserted): when each new value first shows in the DOM
        lat, seen, t_end = [], set(), time.monotonic() + 1.5
        while time.monotonic() < t_end:
            v = float(_text(browser, f"{card} .prob"))
            if v not in seen and v in sim.sent and v < 0.95:
                seen.add(v)
                lat.append(time.monotonic() - sim.sent[v])
            time.sleep(0.01)
        if lat:
            print(f"state publish -> page: median {sorted(lat)[len(lat) // 2] * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms "
                  f"({len(lat)} samples)")
        # the trace is drawn: the canvas is not blank
        painted = browser.execute_script(
            "const c = document.querySelector(arguments[0]); const d = c.getContext('2d')"
            ".getImageData(0, 0, c.width, c.height).data; let n = 0; for (let i = 3; i < d.length; i += 4) "
            "if (d[i]) n++; return n;", f"{card} canvas.trace")
        assert painted > 500
        # gateway status and model from the retained status / model topics
        gw = '#gateways .gateway[data-gateway="gw-sim"]'
        _wait(lambda: _text(browser, f"{gw} .gw-online") == "online", 5, "gateway online")
        assert "sim-protective" in _text(browser, f"{gw} .gw-model") and "0.65" in _text(browser, f"{gw} .gw-model")
        assert browser.execute_script(f"return document.querySelector('{card} .alert-banner').hidden") is True
        # the alert
        sim.raise_at = sim.n + 2
        _wait(lambda: not browser.execute_script(f"return document.querySelector('{card} .alert-banner').hidden"),
              5, "the alert banner")
        assert "Protective behaviour" in _text(browser, f"{card} .alert-banner")
        assert browser.execute_script("return document.body.classList.contains('alerting')")
        assert _text(browser, f"{card} .n-recent") == "1"
        # the wearer picker narrows the page to one wearer (and the choice lands in the address)
        from selenium.webdriver.support.ui import Select

        _wait(lambda: browser.execute_script("return document.querySelectorAll('#wearers .wearer').length") == 2, 5,
              "two wearer cards")
        Select(browser.find_element("css selector", "#pick-wearer")).select_by_value("w2")
        assert browser.execute_script("return [...document.querySelectorAll('#wearers .wearer')]"
                                      ".map(e => e.dataset.wearer)") == ["gw-sim/w2"]
        assert browser.execute_script("return location.hash") == "#w=w2"
        Select(browser.find_element("css selector", "#pick-wearer")).select_by_value("")
        # a narrow (tablet portrait / phone) viewport keeps everything in one column without overflow
        browser.set_window_size(600, 900)
        time.sleep(0.3)
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        browser.set_window_size(1024, 900)
        time.sleep(0.4)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "live-simulated.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        # the gateway stops: its retained offline status (as ``alanet run`` leaves it) shows on the page
        sim.stop_event.set()
        sim.join(5)
        sim.pub("status", "alanet/gw-sim/status", {"schema": "alanet.status/1", "gateway": "gw-sim", "state": "offline"},
                qos=1, retain=True)
        _wait(lambda: _text(browser, f"{gw} .gw-online") == "offline", 10, "gateway offline")
        assert "offline" in _text(browser, f"{card} .serial")
        # the broker goes away: the page says so; it comes back: the page says that too
        mosquitto.stop()
        _wait(lambda: not browser.execute_script("return document.querySelector('#banner').hidden"), 10, "broker banner")
        assert "MQTT broker" in _text(browser, "#banner")
        mosquitto.start()
        _wait(lambda: _text(browser, "#link") == "broker connected", 10, "reconnect")
    finally:
        if sim.is_alive():
            sim.stop()
        live.terminate()
        assert live.wait(10) == 0


def _gateway_and_page(mosquitto, tmp_path, bundle, gateway: str, wearer: str):
    """An in-process gateway (not yet running) on a pty wearable, and ``alanet live`` for it."""
    from runtime_support import PtyWearable

    from alanet.device.config import load_config
    from alanet.device.runtime import Gateway

    wear = PtyWearable()
    cfg = load_config(None, {"port": wear.path, "bundle": str(bundle), "broker": mosquitto.url, "gateway": gateway,
                             "wearer": wearer, "state_dir": str(tmp_path / "state")})
    gw = Gateway(cfg)
    gw_thread = threading.Thread(target=gw.run, kwargs={"install_signals": False}, daemon=True)
    port = free_port()
    live = subprocess.Popen([sys.executable, "-m", "alanet", "live", "--broker", mosquitto.url, "--http-port", str(port),
                             "--gateway", gateway, "--data-dir", str(tmp_path / "live")], stderr=subprocess.PIPE,
                            text=True)
    return wear, gw, gw_thread, live, port


def _stop_all(wear, gw, gw_thread, live) -> None:
    gw.stop()
    gw_thread.join(15)
    wear.close()
    live.terminate()
    assert live.wait(10) == 0


def test_page_follows_the_real_gateway_runtime(mosquitto, browser, tmp_path):
    """The real ``alanet run`` pipeline (pty wearable → frames → LiteRT → decisions → MQTT) drives the page."""
    sys.path.insert(0, str(REPO / "tests"))
    from runtime_support import FS, L, S, build_bundle, expected_events, make_session

    sess = make_session(seed=3, duration_s=60)
    bundle = build_bundle(tmp_path / "b", sess, model_id="live-test")
    events = expected_events(bundle, sess)
    assert [e.state for e in events[:2]] == ["raised", "cleared"], events
    # frames up to the window that raises the alert + a few more, then (later) past the one that clears it
    raise_frames = events[0].window * S + L + 4 * S
    clear_frames = min(sess.n, events[1].window * S + L + 2 * S)
    wear, gw, gw_thread, live, port = _gateway_and_page(mosquitto, tmp_path, bundle, "gw-rt", "w1")
    try:
        assert "serving" in live.stderr.readline()
        browser.get(f"http://127.0.0.1:{port}/")
        gw_thread.start()
        card = '#wearers .wearer[data-wearer="gw-rt/w1"]'
        gwc = '#gateways .gateway[data-gateway="gw-rt"]'
        _wait(lambda: _text(browser, f"{gwc} .gw-online") == "online", 10, "the gateway's retained status")
        assert "live-test" in _text(browser, f"{gwc} .gw-model") and "0.60" in _text(browser, f"{gwc} .gw-model")
        wear.hello()
        feeder = threading.Thread(target=wear.frames, args=(sess, 0, raise_frames), kwargs={"pace_hz": FS * 4}, daemon=True)
        feeder.start()
        _wait(lambda: _text(browser, f"{card} .samples") not in (None, "0"), 10, "the first window")
        first = int(_text(browser, f"{card} .samples"))
        _wait(lambda: int(_text(browser, f"{card} .samples")) >= first + 2, 10, "the trace to advance")
        _wait(lambda: not browser.execute_script(f"return document.querySelector('{card} .alert-banner').hidden"),
              15, "the alert banner")
        assert "Protective behaviour" in _text(browser, f"{card} .alert-banner")
        feeder.join(20)
        time.sleep(0.5)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "live.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        # the rest of the session: the runtime clears the alert and the page follows
        wear.frames(sess, raise_frames, clear_frames, pace_hz=FS * 16)
        _wait(lambda: browser.execute_script(f"return document.querySelector('{card} .alert-banner').hidden"),
              15, "the alert to clear")
        # the windows after the clearing one: their states travel behind the alert (each its own packet)
        _wait(lambda: int(_text(browser, f"{card} .samples")) >= (clear_frames - L) // S + 1, 10, "every window's state")
        assert int(_text(browser, f"{card} .samples")) == (clear_frames - L) // S + 1
        assert _text(browser, f"{card} .n-recent") == "2"
    finally:
        _stop_all(wear, gw, gw_thread, live)


def test_a_whole_rehab_session_from_the_page(mosquitto, browser, tmp_path):
    """Exercise, start, episodes on the timeline, what drove them, patient view, stop, history and the report,
    all from the page, against the real gateway (ALANet bundle with attention outputs) and Mosquitto."""
    sys.path.insert(0, str(REPO / "tests"))
    import rehab_support as rh
    from runtime_support import FS, L, S, make_session

    sess = make_session(seed=3, duration_s=120)
    bundle, _ = rh.attention_bundle(sess)
    wear, gw, gw_thread, live, port = _gateway_and_page(mosquitto, tmp_path, bundle, "gw-rehab", "p017")
    card = '#wearers .wearer[data-wearer="gw-rehab/p017"]'
    js = "return S.wearers['gw-rehab/p017']"

    def click(css: str) -> None:
        browser.find_element("css selector", css).click()

    def pressed(exercise: str) -> bool:
        return browser.execute_script(
            f"const b = document.querySelector('{card} button.ex[data-exercise=\"{exercise}\"]');"
            "return !!b && b.getAttribute('aria-pressed') === 'true'")

    try:
        assert "serving" in live.stderr.readline()
        gw_thread.start()
        browser.set_window_size(1100, 1400)
        browser.get(f"http://127.0.0.1:{port}/")
        _wait(lambda: _text(browser, f"{card} .session-toggle") == "Start session", 15, "the wearer card")
        click(f'{card} button.ex[data-exercise="bend"]')
        _wait(lambda: pressed("bend"), 10, "the gateway to confirm the exercise")
        click(f"{card} .session-toggle")
        _wait(lambda: _text(browser, f"{card} .session-toggle") == "Stop session", 10, "the session to start")
        wear.hello()
        half = sess.n // 2
        wear.frames(sess, 0, half, pace_hz=FS * 8)
        click(f'{card} button.ex[data-exercise="sit_to_stand"]')
        _wait(lambda: pressed("sit_to_stand"), 10, "the second exercise")
        wear.frames(sess, half, sess.n, pace_hz=FS * 8)
        n = (sess.n - L) // S + 1
        _wait(lambda: browser.execute_script(js + ".timeline.length") >= n - 2, 20, "the timeline to fill")
        assert browser.execute_script(js + ".timeline.some(p => p[2] === 1)"), "no episode on the timeline"
        assert set(browser.execute_script(js + ".timeline.map(p => p[3])")) == {"bend", "sit_to_stand"}
        _wait(lambda: "mostly" in (_text(browser, f"{card} .drove-text") or ""), 5, "what drove it")
        painted = browser.execute_script(
            "const c = document.querySelector(arguments[0]); const d = c.getContext('2d')"
            ".getImageData(0, 0, c.width, c.height).data; let n = 0; for (let i = 3; i < d.length; i += 4) "
            "if (d[i]) n++; return n;", f"{card} canvas.timeline")
        assert painted > 1000
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(ARTIFACTS / "rehab-session.png"))
        # the patient view: full screen, one calm cue
        click(f"{card} .patient-open")
        _wait(lambda: browser.execute_script("return !document.querySelector('#patient').hidden"), 5, "patient view")
        assert _text(browser, "#patient .patient-cue") in ("You're doing well", "Take it easy — slow down and breathe")
        assert _text(browser, "#patient .patient-exercise") == "sit-to-stand"
        assert browser.save_screenshot(str(ARTIFACTS / "rehab-patient.png"))
        click("#patient-close")
        _wait(lambda: browser.execute_script("return document.querySelector('#patient').hidden"), 5, "patient closed")
        # stop: the report link and the history appear
        click(f"{card} .session-toggle")
        _wait(lambda: _text(browser, f"{card} .report-link") == "Last report", 15, "the session to stop")
        _wait(lambda: _text(browser, f"{card} .n-history") == "1", 10, "the history")
        href = browser.execute_script(f"return document.querySelector('{card} .report-link').href")
        sid = browser.execute_script(js + ".session.last.session")
        browser.get(href)
        _wait(lambda: "per-exercise" in browser.page_source, 20, "the report")
        assert browser.title == f"Session {sid}"
        assert browser.save_screenshot(str(ARTIFACTS / "rehab-report.png"))
        log = tmp_path / "state" / "sessions" / "p017" / f"{sid}.jsonl"
        figures = rh.figures_from_log(log)
        assert set(figures) == {"bend", "sit_to_stand"} and sum(f["episodes"] for f in figures.values()) >= 1
        assert rh.figures_from_report(browser.page_source) == figures
    finally:
        _stop_all(wear, gw, gw_thread, live)
