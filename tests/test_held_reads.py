"""The main loop's held serial reads (alanet.device.reads): windows at once, the rest by age."""

from __future__ import annotations

import pytest

from alanet.device.reads import HeldReads


def test_a_read_that_completes_a_window_goes_out_at_once_and_before_older_ones() -> None:
    r = HeldReads(3, hold_s=0.25, limit=100)
    r.set_need(0, 500)
    r.set_need(1, 100)
    r.add(0, b"a" * 80, now=0.0)  # wearer 0: far from its window
    assert not r.due(0.0) and r.take(0.0) is None
    r.add(1, b"b" * 60, now=0.01)
    assert r.take(0.01) is None  # 60 of 100 bytes
    r.add(1, b"c" * 40, now=0.02)  # wearer 1's window is complete: it jumps the queue
    assert r.due(0.02)
    assert r.take(0.02) == (1, [b"b" * 60, b"c" * 40], 0.01)
    assert r.take(0.02) is None and r.chunks == 1


def test_held_data_goes_out_after_hold_s_oldest_first() -> None:
    r = HeldReads(2, hold_s=0.25, limit=100)
    r.set_need(0, None)  # no window coming (no accepted HELLO): by age only
    r.set_need(1, None)
    r.add(1, b"x", now=0.0)
    r.add(0, b"y", now=0.1)
    r.add(1, b"z", now=0.2)
    assert r.wait_s(0.2, most=1.0) == pytest.approx(0.05)
    assert r.take(0.24) is None
    assert r.next_due() == pytest.approx(0.25)
    assert r.take(0.25) == (1, [b"x", b"z"], 0.0)
    assert r.take(0.3) is None and r.take(0.36) == (0, [b"y"], 0.1)
    assert not r and r.wait_s(0.4, most=0.05) == 0.05


def test_a_lower_need_releases_what_is_held_and_drain_takes_everything() -> None:
    r = HeldReads(2, hold_s=0.25, limit=3)
    r.set_need(0, 10)
    r.add(0, b"12345", now=0.0)
    assert r.take(0.0) is None
    r.set_need(0, 5)  # e.g. the decoder now holds part of the frame
    assert r.take(0.0) == (0, [b"12345"], 0.0)
    r.set_need(1, 1000)
    for k in range(3):
        r.add(1, b"ab", now=0.01 * k)
    assert r.full and r.take(0.05) is None
    assert r.take(0.05, drain=True) == (1, [b"ab"] * 3, 0.0) and not r.full


def test_hold_zero_hands_every_chunk_over_when_asked() -> None:
    r = HeldReads(1, hold_s=0.0, limit=10)
    r.set_need(0, 10_000)
    r.add(0, b"a", now=1.0)
    assert r.take(1.0) == (0, [b"a"], 1.0)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="hold_s"):
        HeldReads(1, hold_s=-1, limit=1)
    with pytest.raises(ValueError, match="limit"):
        HeldReads(1, hold_s=0, limit=0)


def test_data_waiting_urgent_times_the_hold_goes_before_windows() -> None:
    from alanet.device.reads import URGENT

    assert 1 < URGENT <= 2
    r = HeldReads(2, hold_s=0.25, limit=100)
    r.set_need(0, None)
    r.set_need(1, 1)
    r.add(0, b"old", now=0.0)
    soon, late = URGENT * 0.25 - 0.01, URGENT * 0.25 + 0.01
    r.add(1, b"w", now=soon)  # wearer 1's window
    assert r.take(soon) == (1, [b"w"], soon)  # a window still goes first
    r.add(1, b"w2", now=late)
    assert r.take(late) == (0, [b"old"], 0.0)  # wearer 0's data has waited URGENT x hold
    assert r.take(late) == (1, [b"w2"], late)


def test_clear_needs_sends_the_next_read_at_once() -> None:
    """After a model switch nothing held waits for a need computed for the old model."""
    r = HeldReads(2, hold_s=0.25, limit=100)
    r.set_need(0, 10_000)
    r.add(0, b"abc", now=0.0)
    assert r.take(0.01) is None
    r.clear_needs()
    assert r.take(0.01) == (0, [b"abc"], 0.0)
    r.add(1, b"x", now=0.02)  # a wearer with nothing held: its next chunk goes at once too
    assert r.take(0.02) == (1, [b"x"], 0.02)
