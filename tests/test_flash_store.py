"""BundleStore, the trust policy, the transfer protocol's pure parts, and ``alanet flash --to``."""

from __future__ import annotations

import json

import pytest

from test_flash_support import validate

from alanet.device.bundle import BundleError
from alanet.device.flash import protocol as P
from alanet.device.flash.store import BundleStore, Fit, TrustPolicy, load_startup_bundle, verify_bundle
from alanet.errors import InputError


# ---- verification ----

def test_trust_policy_refusals(bundles):
    trusted = TrustPolicy((str(bundles.pub),))
    assert verify_bundle(bundles.v2, trusted, Fit()).model_id == "flash-v2"
    cases = {bundles.v2_unsigned: "unsigned", bundles.v2_foreign: "not signed by a trusted key",
             bundles.v2_flipped: "SHA-256 mismatch", bundles.other_layout: "channels"}
    for path, why in cases.items():
        with pytest.raises(InputError, match=why):
            verify_bundle(path, trusted, Fit())
    # Unsigned bundles need an explicit switch; with keys configured the switch does not help.
    with pytest.raises(BundleError, match="unsigned bundles are not allowed"):
        verify_bundle(bundles.v2_unsigned, TrustPolicy(), Fit())
    assert verify_bundle(bundles.v2_unsigned, TrustPolicy(allow_unsigned=True), Fit()).model_id == "flash-v2"
    with pytest.raises(BundleError, match="unsigned"):
        verify_bundle(bundles.v2_unsigned, TrustPolicy((str(bundles.pub),), allow_unsigned=True), Fit())
    with pytest.raises(BundleError, match="sample_rate_hz: the model wants 60 Hz, the wearable samples at 50 Hz"):
        verify_bundle(bundles.v2, trusted, Fit(sample_rate_hz=50.0))
    with pytest.raises(BundleError, match="window"):
        verify_bundle(bundles.v2, trusted, Fit(max_window_s=1.0))


# ---- store ----

def test_store_install_rollback_and_startup(tmp_path, bundles):
    store = BundleStore(tmp_path)
    pol = TrustPolicy((str(bundles.pub),))
    assert store.state().current is None
    b1, before = store.install(bundles.v1, pol)
    assert before.current is None and b1.model_id == "flash-v1" and b1.path.parent == store.root
    b2, before = store.install(bundles.v2, pol)
    st = store.state()
    assert before.current == st.previous and st.current.startswith("flash-v2-")
    assert (store.current_path() / "model.tflite").is_file()
    # A refused install changes nothing and leaves no staging behind.
    with pytest.raises(InputError):
        store.install(bundles.v2_foreign, pol)
    assert store.state() == st
    assert not any(store.staging.iterdir())
    # Re-installing the same bundle reuses its slot; only current and previous are kept.
    store.install(bundles.v1, pol, allow_downgrade=True)  # v1 is older than v2: forced, as with --allow-downgrade
    store.install(bundles.v2, pol)
    slots = sorted(p.name for p in store.root.iterdir() if not p.name.startswith(".") and p.is_dir())
    assert len(slots) == 2
    # Rollback swaps current and previous.
    store.rollback()
    assert store.state().current.startswith("flash-v1-") and store.state().previous.startswith("flash-v2-")
    assert load_startup_bundle(store, None, pol).model_id == "flash-v1"
    # A damaged current bundle is skipped at start: previous runs instead.
    model = store.current_path() / "model.tflite"
    data = bytearray(model.read_bytes())
    data[100] ^= 0xFF
    model.write_bytes(bytes(data))
    assert load_startup_bundle(store, None, pol).model_id == "flash-v2"
    # Installing the same bundle again repairs its damaged slot.
    store.install(bundles.v1, pol, allow_downgrade=True)
    assert load_startup_bundle(store, None, pol).model_id == "flash-v1"
    pointer = json.loads((store.root / "pointer.json").read_text())
    assert pointer["schema"] == "alanet.bundles/1"


def test_adopt_keeps_running_bundle_for_rollback(tmp_path, bundles):
    store = BundleStore(tmp_path)
    pol = TrustPolicy((str(bundles.pub),))
    store.install(bundles.v2, pol, running=bundles.v1)
    assert store.state().previous.startswith("flash-v1-")
    store.rollback()
    assert store.load(store.state().current, pol).model_id == "flash-v1"


# ---- protocol (pure) ----

def test_parse_command_topics():
    assert P.parse_command("gw", "alanet/gw/cmd/flash/abc/begin") == P.Command("begin", "abc")
    assert P.parse_command("gw", "alanet/gw/cmd/flash/abc/chunk/12") == P.Command("chunk", "abc", 12)
    assert P.parse_command("gw", "alanet/gw/cmd/rollback") == P.Command("rollback")
    for bad in ("alanet/gw/cmd/flash/abc/chunk/x", "alanet/gw/cmd/flash/a.b/end", "alanet/other/cmd/rollback",
                "alanet/gw/cmd/flash/abc/chunk/1/2", "alanet/gw/cmd/flash/abc"):
        assert P.parse_command("gw", bad) is None


def test_offer_checks_and_chunk_lengths():
    data = bytes(range(256)) * 41  # 10496 bytes
    o = P.make_offer("t1", data, 4096, "m")
    assert o.chunks == 3 and o.chunk_len(0) == 4096 and o.chunk_len(2) == 10496 - 8192
    assert P.Offer.from_bytes(o.to_bytes(), "t1") == o
    validate(o.to_dict(), "flash-offer")
    with pytest.raises(P.ProtocolError, match="transfer"):
        P.Offer.from_bytes(o.to_bytes(), "t2")
    bad = dict(o.to_dict(), chunks=4)
    with pytest.raises(P.ProtocolError, match="chunks 4 does not match"):
        P.Offer.from_bytes(json.dumps(bad).encode(), "t1")
    with pytest.raises(P.ProtocolError, match="sha256"):
        P.Offer.from_bytes(json.dumps(dict(o.to_dict(), sha256="zz")).encode(), "t1")


def test_gateway_send_resends_missing_and_retries():
    data = b"x" * 10000
    o = P.make_offer("t1", data, 4000)
    s = P.GatewaySend("gw", o, lambda i: data[i * 4000:(i + 1) * 4000], retry_s=1.0)
    msgs = s.start(0.0)
    assert [t for t, _ in msgs] == ["alanet/gw/cmd/flash/t1/begin"] + [f"alanet/gw/cmd/flash/t1/chunk/{i}" for i in range(3)] \
        + ["alanet/gw/cmd/flash/t1/end"]
    assert s.on_tick(0.5) == []
    again = s.on_tick(1.5)
    assert [t for t, _ in again] == ["alanet/gw/cmd/flash/t1/end"]
    resend = s.on_reply({"type": "missing", "missing": [[1, 2], [7, 9]], "received": 2}, 2.0)
    assert [t for t, _ in resend] == ["alanet/gw/cmd/flash/t1/chunk/1", "alanet/gw/cmd/flash/t1/end"]
    assert resend[0][1] == data[4000:8000] and s.received == 2 and s.resent == 1
    assert s.on_reply({"type": "result", "state": "refused", "reason": "no"}, 3.0) == []
    assert s.done and s.on_tick(100.0) == [] and s.result["reason"] == "no"


# ---- alanet flash --to ----

def test_cli_flash_to_path_install_refuse_rollback(tmp_path, bundles, cli):
    state = tmp_path / "state"
    pub = str(bundles.pub)
    r = cli("flash", str(bundles.v1), "--to", str(state), "--trust", pub)
    assert r.returncode == 0, r.stderr
    assert "installed flash-v1" in r.stdout
    r = cli("flash", str(bundles.v2_foreign), "--to", str(state), "--trust", pub)
    assert r.returncode == 2 and "not signed by a trusted key" in r.stderr
    r = cli("flash", str(bundles.v2_unsigned), "--to", str(state))
    assert r.returncode == 2 and "unsigned bundles are not allowed" in r.stderr
    r = cli("flash", str(bundles.other_layout), "--to", str(state), "--trust", pub)
    assert r.returncode == 2 and "channels" in r.stderr
    assert BundleStore(state).state().previous is None  # nothing refused got in
    from alanet.device.bundle import pack

    archive = pack(bundles.v2, tmp_path / "v2.tar.xz")
    r = cli("flash", str(archive), "--to", str(state), "--trust", pub)
    assert r.returncode == 0 and "installed flash-v2" in r.stdout, r.stderr
    r = cli("flash", "--rollback", "--to", str(state), "--trust", pub)
    assert r.returncode == 0 and "rolled back to flash-v1" in r.stdout, r.stderr
    store = BundleStore(state)
    assert store.state().current.startswith("flash-v1-") and store.state().previous.startswith("flash-v2-")
    r = cli("flash", str(bundles.v3_unsigned), "--to", str(state), "--allow-unsigned")
    assert r.returncode == 0 and "unsigned" in r.stdout, r.stderr


# ---- the gateway's transfer bookkeeping, without a broker ----

def test_chunks_in_any_order_with_duplicates_and_gaps(tmp_path, bundles):
    """Chunks arrive shuffled, twice, some never: ``end`` lists exactly what is missing; then it installs."""
    import random

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from alanet.device.flash.agent import FlashAgent
    from alanet.device.flash.sender import read_archive

    archive, name = read_archive(bundles.v2)
    chunk = 2048
    n = -(-len(archive) // chunk)
    activated: list = []
    examples: list = []

    @settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(seed=st.integers(0, 2**32 - 1), drop=st.sets(st.integers(0, n - 1), max_size=n // 2))
    def run(seed, drop):
        rng = random.Random(seed)
        examples.append(seed)
        tid = f"t{len(examples)}"  # a fresh transfer (and store) per example
        agent = FlashAgent("gw", "mqtt://127.0.0.1:1", BundleStore(tmp_path / tid), trusted_keys=[str(bundles.pub)],
                           on_activate=activated.append)
        sent: list = []
        agent._publish = lambda topic, payload, retain=False: sent.append((topic, json.loads(payload)))
        offer = P.make_offer(tid, archive, chunk, name)
        order = [i for i in range(n) if i not in drop] * 2
        rng.shuffle(order)
        agent.handle(P.begin_topic("gw", tid), offer.to_bytes())
        for i in order:
            agent.handle(P.chunk_topic("gw", tid, i), archive[i * chunk:(i + 1) * chunk])
        agent.handle(P.end_topic("gw", tid), offer.to_bytes())
        last = [d for t, d in sent if t == P.reply_topic("gw", tid)][-1]
        if drop:
            assert last["type"] == "missing" and [i for a, b in last["missing"] for i in range(a, b)] == sorted(drop)
            for i in drop:
                agent.handle(P.chunk_topic("gw", tid, i), archive[i * chunk:(i + 1) * chunk])
            agent.handle(P.end_topic("gw", tid), offer.to_bytes())
            last = [d for t, d in sent if t == P.reply_topic("gw", tid)][-1]
        assert last["type"] == "result" and last["state"] == "active", last
        assert activated[-1].model_id == "flash-v2"
        # A repeated end gets the same answer; late chunks change nothing.
        agent.handle(P.chunk_topic("gw", tid, 0), archive[:chunk])
        agent.handle(P.end_topic("gw", tid), offer.to_bytes())
        again = [d for t, d in sent if t == P.reply_topic("gw", tid)][-1]
        assert again == last and not (agent.store.staging / f"flash-{tid}").exists()

    run()
