"""Fuzz of the gateway's MQTT command surface against a real Mosquitto: memory stays bounded, the gateway runs.

    python bench/command_fuzz.py [--messages 20000] [--seed 1] [--quick] [--out FILE]

The real ``alanet run`` process (flashing on, a trusted key configured, a signed
bundle) classifies a pty wearable's stream while a stranger publishes random and
adversarial messages to everything a gateway might listen to:

- ``cmd/flash/<tid>/begin`` and ``/end``: random bytes, random JSON, deep nesting,
  oversized payloads, offers with hostile fields (``chunk_size`` 1, sizes past the
  limit, counts that do not add up, wrong types), and many valid-looking offers under
  fresh transfer ids (a flood of concurrent transfers);
- ``cmd/flash/<tid>/chunk/<i>``: random bytes of up to 300 KiB (past the agent's MQTT 5
  packet limit), for unknown and staged transfers, with huge indices;
- ``cmd/rollback``: random bytes, unsigned commands, forged and foreign signatures,
  commands for other gateways;
- complete hostile transfers: a gzip'd bundle, a tar of 20,000 junk members, an
  unsigned bundle, an older signed bundle (a downgrade);
- config-like topics a gateway does not listen to (``cmd/config``, ``config/set``, ...).

It records the gateway's RSS before (after start-up and a few seconds of streaming:
its idle value) and every 0.2 s during the fuzz, that the process is still alive,
that its wearer's windows kept coming (state messages during the fuzz) and that it
still runs the model it started with. Writes ``bench/results/command_fuzz.json``.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import REPO, Figure, rss_mb, write_result  # noqa: E402

sys.path.insert(0, str(REPO / "tests"))

GW = "gw-cmdfuzz"


@dataclass
class Outcome:
    messages: int = 0
    bytes: int = 0
    by_kind: dict = field(default_factory=dict)
    seconds: float = 0.0
    rss_idle_mb: float = 0.0
    rss_peak_mb: float = 0.0
    rss_end_mb: float = 0.0
    alive: bool = False
    exit_code: int | None = None
    states_before: int = 0
    states_during: int = 0
    replies: int = 0  # answers the flash agent published (it read and refused the hostile offers)
    log_flash_lines: int = 0
    model_before: str | None = None
    model_after: str | None = None
    tracebacks: int = 0
    ok: bool = False
    problems: list = field(default_factory=list)


class Watch:
    """Counts the gateway's state messages and keeps its retained model report."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.states = 0
        self.replies = 0  # the flash agent's answers (alanet/<gw>/flash/<tid>)
        self.model: dict | None = None
        self.online = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"watch-{uuid.uuid4().hex[:6]}")
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe([(f"alanet/{GW}/#", 0)])
        self.c.on_message = self._msg
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _msg(self, c, u, m) -> None:
        if "/cmd/" in m.topic:
            return
        try:
            d = json.loads(m.payload)
        except ValueError:
            return
        if m.topic.endswith("/state"):
            self.states += 1
        elif "/flash/" in m.topic:
            self.replies += 1
        elif m.topic.endswith("/model"):
            self.model = d
        elif m.topic.endswith("/status") and d.get("state") == "online":
            self.online.set()

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def hostile_archives(bundle: Path, key: Path, work: Path) -> dict[str, bytes]:
    """Whole archives a stranger might send: compressed, junk-filled, unsigned, older."""
    from alanet.device.bundle import MANIFEST_FILE, MODEL_FILE, write_bundle
    from alanet.device.flash.sender import read_archive

    signed, _ = read_archive(bundle)
    junk = io.BytesIO()
    with tarfile.open(fileobj=junk, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for k in range(20000):
            tar.addfile(tarfile.TarInfo(f"junk-{k}"), io.BytesIO(b""))
    m = json.loads((bundle / MANIFEST_FILE).read_text())
    old = write_bundle(work / "old", dict(m, model_id="old-release", bundle_version=4), (bundle / MODEL_FILE).read_bytes(),
                       signing_key=key)
    unsigned = write_bundle(work / "unsigned", dict(m, model_id="unsigned", bundle_version=99),
                            (bundle / MODEL_FILE).read_bytes())
    return {"gzip": gzip.compress(signed), "junk_tar": junk.getvalue(), "downgrade": read_archive(old)[0],
            "unsigned": read_archive(unsigned)[0]}


def messages(rng: np.random.Generator, n: int, archives: dict[str, bytes], keys: dict[str, Path]):
    """Yield (kind, topic, payload, qos) for ``n`` hostile messages."""
    from alanet.device.flash import command as C
    from alanet.device.flash import protocol as P

    pre = f"alanet/{GW}/cmd"
    staged = [f"live{k}" for k in range(4)]

    def rand_bytes(k: int) -> bytes:
        return rng.integers(0, 256, k, dtype=np.uint8).tobytes()

    def hostile_offer(tid: str) -> bytes:
        d = {"schema": "alanet.flash/1", "transfer": tid, "size": int(rng.integers(1, 1 << 27)),
             "sha256": "%064x" % int(rng.integers(0, 1 << 62)), "chunk_size": int(rng.choice([1, 2, 512, 1024, 1 << 18])),
             "chunks": int(rng.integers(1, 1 << 26))}
        pick = int(rng.integers(0, 7))
        if pick == 0:
            d["chunks"] = -(-d["size"] // d["chunk_size"])
        elif pick == 1:
            d["size"] = "huge"
        elif pick == 2:
            d["chunk_size"] = 1.5
        elif pick == 3:
            d["sha256"] = None
        elif pick == 4:
            d["name"] = "x" * 5000
        elif pick == 5:
            d = [d]
        return json.dumps(d).encode()

    sent = 0
    while sent < n:
        r = float(rng.random())
        tid = uuid.uuid4().hex[:16] if rng.random() < 0.7 else str(rng.choice(staged))
        if r < 0.18:
            kind, topic = "begin_end_hostile", f"{pre}/flash/{tid}/{rng.choice(['begin', 'end'])}"
            payload = hostile_offer(tid)
        elif r < 0.28:
            kind, topic = "begin_end_random", f"{pre}/flash/{tid}/{rng.choice(['begin', 'end'])}"
            payload = rand_bytes(int(rng.integers(0, 6000))) if rng.random() < 0.7 else b"[" * 100000
        elif r < 0.40:  # valid-looking offers, fresh transfers: a flood of concurrent transfers
            kind, topic = "offer_flood", f"{pre}/flash/{tid}/begin"
            size = int(rng.integers(2048, 1 << 20))
            payload = P.Offer(tid, size, "%064x" % int(rng.integers(0, 1 << 62)), 1024, -(-size // 1024)).to_bytes()
        elif r < 0.65:
            kind, topic = "chunk", f"{pre}/flash/{tid}/chunk/{int(rng.choice([0, 1, 7, 4095, 999999999]))}"
            size = int(rng.choice([1024, 1024, 4096, 70000, 300000])) if rng.random() < 0.9 else int(rng.integers(0, 2000))
            payload = rand_bytes(size)
        elif r < 0.80:
            kind, topic = "rollback", f"{pre}/rollback"
            pick = int(rng.integers(0, 5))
            if pick == 0:
                payload = rand_bytes(int(rng.integers(0, 3000)))
            elif pick == 1:
                payload = C.make_command("rollback", GW, uuid.uuid4().hex[:12], None)
            elif pick == 2:
                payload = C.make_command("rollback", GW, uuid.uuid4().hex[:12], keys["foreign"])
            elif pick == 3:
                payload = C.make_command("rollback", "gw-other", uuid.uuid4().hex[:12], keys["trusted"])
            else:
                d = json.loads(C.make_command("rollback", GW, "forged", keys["foreign"]))
                d["signature"]["key_id"] = "0" * 16
                payload = json.dumps(d).encode()
        elif r < 0.95:
            sub = str(rng.choice(["config", "config/set", "set", "restart", "flash", "flash/x", "flash/x/y/z/w",
                                  "rollback/now", "../../status", "shell"]))
            kind, topic = "other_topics", f"{pre}/{sub}" if rng.random() < 0.7 else f"alanet/{GW}/{sub}"
            payload = rand_bytes(int(rng.integers(0, 4000)))
        else:  # a whole hostile transfer
            name = str(rng.choice(sorted(archives)))
            data = archives[name]
            kind = f"transfer_{name}"
            offer = P.make_offer(tid, data, 32768, name)
            msgs = [(f"{pre}/flash/{tid}/begin", offer.to_bytes())]
            msgs += [(f"{pre}/flash/{tid}/chunk/{i}", data[i * offer.chunk_size:(i + 1) * offer.chunk_size])
                     for i in range(offer.chunks)]
            msgs.append((f"{pre}/flash/{tid}/end", offer.to_bytes()))
            for t, p in msgs:
                yield kind, t, p, 1
            sent += len(msgs)
            continue
        sent += 1
        yield kind, topic, payload, int(rng.random() < 0.9)  # mostly QoS 1: the broker queues it for the gateway


def run(work: Path, n: int, seed: int, log=print) -> Outcome:
    import paho.mqtt.client as mqtt

    import runtime_support as rs
    from conftest import Mosquitto

    from alanet.device.bundle import MANIFEST_FILE
    from alanet.device.signing import write_keypair

    out = Outcome()
    sess, base = rs.cached_bundle(3, 120.0)
    keys = {"trusted": work / "trusted.key", "foreign": work / "foreign.key"}
    for k in keys.values():
        write_keypair(k)
    from alanet.device.bundle import MODEL_FILE, write_bundle

    bundle = write_bundle(work / "bundle", dict(json.loads((base / MANIFEST_FILE).read_text()), bundle_version=5),
                          (base / MODEL_FILE).read_bytes(), signing_key=keys["trusted"])  # release 5, signed
    archives = hostile_archives(bundle, keys["trusted"], work)
    (work / "broker").mkdir()
    broker = Mosquitto(work / "broker", persistence=False).start()
    wear = rs.PtyWearable()
    cfg = work / "gw.toml"
    cfg.write_text(f'gateway = "{GW}"\nstate_dir = "{work / "state"}"\n[model]\nbundle = "{bundle}"\n'
                   f'trusted_keys = ["{keys["trusted"]}.pub"]\nallow_unsigned = false\n[mqtt]\nbroker = "{broker.url}"\n'
                   f'heartbeat_s = 1\n[[wearable]]\nwearer = "w1"\nport = "{wear.path}"\n')
    proc = subprocess.Popen([sys.executable, "-m", "alanet", "run", "--config", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(ln.rstrip() for ln in proc.stdout), daemon=True).start()
    watch = Watch(broker.port)
    stop = threading.Event()
    pub = None
    try:
        if not watch.online.wait(60):
            raise RuntimeError("the gateway never came online: " + "\n".join(lines[-20:]))

        def stream() -> None:  # the wearer keeps streaming at 4x real time, round and round the session
            wear.hello()
            i = 0
            while not stop.is_set():
                k = i % sess.n
                wear.write(wear.enc.frame(int(i * 1000 / rs.FS) % (1 << 32), sess.angles[k].tolist(),
                                          sess.emg[k].tolist(), seq=i))
                i += 1
                time.sleep(1 / (rs.FS * 4))

        threading.Thread(target=stream, daemon=True).start()
        time.sleep(5.0)
        out.rss_idle_mb = rss_mb(proc.pid)
        out.states_before = watch.states
        out.model_before = (watch.model or {}).get("model")
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"stranger-{seed}")
        pub.max_inflight_messages_set(50)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        rng = np.random.default_rng(seed)
        t0 = time.monotonic()
        next_sample = t0
        peak = out.rss_idle_mb
        for kind, topic, payload, qos in messages(rng, n, archives, keys):
            info = pub.publish(topic, payload, qos=qos)
            out.messages += 1
            out.bytes += len(payload)
            out.by_kind[kind] = out.by_kind.get(kind, 0) + 1
            if qos and out.messages % 50 == 0:
                info.wait_for_publish(30)  # keep the stranger's own queue small
            if time.monotonic() >= next_sample:
                next_sample += 0.2
                peak = max(peak, rss_mb(proc.pid))
                if proc.poll() is not None:
                    break
            if out.messages % 5000 == 0:
                log(f"  {out.messages:,} messages, gateway RSS {rss_mb(proc.pid):.0f} MB (idle {out.rss_idle_mb:.0f})")
        out.seconds = time.monotonic() - t0
        settle = time.monotonic() + 10  # the gateway works off what the broker still holds for it
        while time.monotonic() < settle and proc.poll() is None:
            peak = max(peak, rss_mb(proc.pid))
            time.sleep(0.2)
        out.rss_peak_mb = peak
        out.rss_end_mb = rss_mb(proc.pid)
        out.states_during = watch.states - out.states_before
        out.replies = watch.replies
        out.alive = proc.poll() is None
        out.model_after = (watch.model or {}).get("model")
    finally:
        stop.set()
        if pub is not None:
            pub.loop_stop()
            pub.disconnect()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        out.exit_code = proc.returncode
        watch.close()
        wear.close()
        broker.stop()
    out.tracebacks = sum(1 for ln in lines if ln.startswith("Traceback"))
    out.log_flash_lines = sum(1 for ln in lines if "flash" in ln)
    if os.environ.get("ALANET_CMDFUZZ_LOG"):
        Path(os.environ["ALANET_CMDFUZZ_LOG"]).write_text("\n".join(lines))
    if not out.alive:
        out.problems.append(f"the gateway died (exit {out.exit_code}): " + " | ".join(lines[-5:]))
    if out.rss_peak_mb >= 2 * out.rss_idle_mb:
        out.problems.append(f"RSS peak {out.rss_peak_mb:.0f} MB >= 2 x idle {out.rss_idle_mb:.0f} MB")
    if out.states_during <= 0:
        out.problems.append("no window was classified during the fuzz")
    if out.model_after != out.model_before:
        out.problems.append(f"the model changed: {out.model_before} -> {out.model_after}")
    out.ok = not out.problems
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20000, help="hostile messages (default %(default)s)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="3,000 messages")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.messages < 1:
        ap.error("--messages must be >= 1")
    n = 3000 if args.quick else args.messages
    with tempfile.TemporaryDirectory(prefix="alanet-cmdfuzz-") as tmp:
        o = run(Path(tmp), n, args.seed)
    how = (f"{o.messages:,} hostile messages ({o.bytes / 1e6:.0f} MB; "
           + ", ".join(f"{k} {v:,}" for k, v in sorted(o.by_kind.items()))
           + ") to the real alanet run process through Mosquitto while it classifies a pty wearable")
    figs = [
        Figure("cmdfuzz.messages", "Command fuzz: hostile MQTT messages", o.messages, "messages", how, ""),
        Figure("cmdfuzz.rss_ratio", "Command fuzz: gateway RSS peak ÷ idle", round(o.rss_peak_mb / o.rss_idle_mb, 3)
               if o.rss_idle_mb else None, "×", f"VmRSS sampled every 0.2 s; idle {o.rss_idle_mb:.1f} MB, peak "
               f"{o.rss_peak_mb:.1f} MB (must stay < 2)", "lower"),
        Figure("cmdfuzz.messages_per_s", "Command fuzz: messages/s taken", round(o.messages / o.seconds) if o.seconds
               else None, "messages/s", "publish rate the stranger reached (QoS 0/1 mixed)", "higher"),
        Figure("cmdfuzz.alive", "Command fuzz: gateway still running, classifying, same model",
               "yes" if o.ok else "no", "", f"{o.states_during} windows published during the fuzz", ""),
    ]
    write_result("command_fuzz", {"outcome": asdict(o)}, figs, args.out)
    print(f"command fuzz: {o.messages:,} messages in {o.seconds:.0f} s; RSS idle {o.rss_idle_mb:.1f} MB, peak "
          f"{o.rss_peak_mb:.1f} MB ({o.rss_peak_mb / max(o.rss_idle_mb, 1e-9):.2f}x), end {o.rss_end_mb:.1f} MB; "
          f"alive {o.alive}; {o.states_during} windows during the fuzz; {o.replies} flash replies; "
          f"{o.log_flash_lines} flash log lines, {o.tracebacks} tracebacks; model {o.model_before} -> {o.model_after}; "
          f"{'OK' if o.ok else 'FAILED: ' + '; '.join(o.problems)}")
    return 0 if o.ok else 1


if __name__ == "__main__":
    sys.exit(main())
