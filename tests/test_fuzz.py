"""The two fuzzes of ``bench/`` at test size: the whole gateway path and the MQTT command surface.

``bench/gateway_fuzz.py`` runs a million streams and ``bench/command_fuzz.py`` twenty
thousand messages (their results are in ``docs/performance.md``); here a small count
of each, with the same harness and the same pass conditions.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import command_fuzz, gateway_fuzz  # noqa: E402


def test_gateway_fuzz_streams(tmp_path, mosquitto):
    """Hostile values, wrong counts, HELLO changes, odd RAW_EMG, random and mutated bytes into one gateway."""
    r = gateway_fuzz.run_job(1500, seed=7, broker_url=mosquitto.url, work=tmp_path)
    assert r.streams == 1500 and all(r.by_kind.get(k) for k in gateway_fuzz.KINDS), r.by_kind
    assert r.escaped == 0, r.escaped_examples
    assert r.corrupt_accepted == 0 and r.valid_rejected == 0, r.mismatch_examples
    assert r.caught_faults == 0
    assert r.clean_windows == r.clean_windows_expected > 0 and r.clean_faults == 0
    assert r.alerts_invalid == 0 and r.queue_left == 0
    assert r.fuzz_frames > 0 and r.fuzz_windows > 0  # the fuzzed wearer is still classified between the attacks
    rej = r.rejected
    assert rej["out_of_range"] and rej["bad_shape"] and rej["refused"] and rej["raw_rejected"] and rej["crc_errors"]


def test_command_fuzz_keeps_memory_bounded_and_the_gateway_running(tmp_path):
    o = command_fuzz.run(tmp_path, 1500, seed=3, log=lambda s: None)
    assert o.ok, o.problems
    assert o.alive and o.rss_peak_mb < 2 * o.rss_idle_mb and o.states_during > 0 and o.tracebacks == 0
    assert o.model_after == o.model_before and o.replies > 0
    assert {"begin_end_hostile", "chunk", "rollback", "other_topics", "offer_flood"} <= set(o.by_kind)
