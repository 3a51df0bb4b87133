"""Synthetic rehab sessions in the EmoPain format (SYNTHETIC data, not measurements).

The real EmoPain data is under an academic-use licence and never ships with the
toolkit. This generator writes files in exactly its format (``{C|P}{id}{N|D}.mat``,
variable ``BD``, T×33 at 60 Hz) so that every part of the toolkit runs and is tested
without it. It is a plausible simulation, not a model of any real person:

* a session is a sequence of exercise instances (one-leg-stand, reach-forward, bend,
  sit-to-stand, stand-to-sit, sitting still, standing still, walking) joined by short
  "other" transitions; each instance has one or more repetitions with smooth
  minimum-jerk joint-angle trajectories (rad);
* energies are computed from the angles with :func:`alanet.device.features.energy_from_angles`
  (the gateway's own code);
* sEMG is band-limited noise modulated by a trunk-load activation and enveloped with
  :class:`alanet.device.features.EnvelopeFilter` (healthy backs relax in full flexion);
* patients show per-frame protective behaviour episodes, modelled as events in time
  (the EmoPain categories are largely temporal), each with its own strength:
  *hesitation* (stop-start: a pause part-way, sometimes after a small reversal),
  *guarding / stiffness* (the joints move en bloc instead of in their usual sequence,
  with a modestly reduced trunk range and tempo), *bracing* (back-muscle
  co-contraction that starts before the movement and holds through it, no
  flexion-relaxation) and *abrupt / jerky actions* (a brief catch in the movement);
  raters' labels are jittered around them;
* every participant gets their own amplitude, tempo, posture, sEMG gain and noise, so a
  classifier must generalise across people.

The defaults are calibrated (``bench/synth_calibration.py``) so the tasks are learnable
but not trivial for a classic classifier on window statistics.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from alanet.device.features import EnvelopeFilter, energy_from_angles
from alanet.device.schema import EMOPAIN_SAMPLE_RATE_HZ, N_ANGLES, N_EMG
from alanet.train.data.emopain import BD_COLUMNS, COL_EXERCISE, COL_PAIN, COL_PROTECTIVE, current_umask, write_bd

DEFAULT_DURATION_S = 120.0
DEFAULT_PATIENTS = 14
DEFAULT_CONTROLS = 9

# Exercise types (column 31).
OTHER, ONE_LEG, REACH, BEND, SIT_TO_STAND, STAND_TO_SIT, SIT_STILL, STAND_STILL, WALK = range(9)
MOVEMENTS = (ONE_LEG, REACH, BEND, SIT_TO_STAND, STAND_TO_SIT, WALK)

# Angle indices (order of EMOPAIN_ANGLES).
FULL = [0, 1]
INNER = [2, 3]
KNEE = [4, 5]
ELBOW = [6, 7]
SHOULDER = [8, 9]
LATERAL = [10, 11]
NECK = 12
TRUNK = FULL + INNER + [NECK]

# Interior joint angles (rad) of the two base postures.
STAND = np.array([3.05, 3.05, 2.95, 2.95, 3.08, 3.08, 2.85, 2.85, 0.25, 0.25, 1.57, 1.57, 2.95])
SIT = np.array([1.75, 1.75, 1.70, 1.70, 1.65, 1.65, 2.30, 2.30, 0.35, 0.35, 1.57, 1.57, 2.85])


def _delta(**parts: float) -> np.ndarray:
    d = np.zeros(N_ANGLES)
    idx = {"full": FULL, "inner": INNER, "knee": KNEE, "elbow": ELBOW, "shoulder": SHOULDER, "neck": [NECK],
           "lknee": [4], "lfull": [0], "linner": [2], "llat": [10], "rlat": [11]}
    for k, v in parts.items():
        d[idx[k]] += v
    return d


# Peak displacement of one repetition, relative to the posture it starts from.
REACH_D = _delta(shoulder=1.25, elbow=0.2, full=-0.35, inner=-0.3, neck=-0.1, knee=-0.05)
BEND_D = _delta(full=-1.2, inner=-1.1, knee=-0.25, shoulder=0.7, neck=-0.35, elbow=0.1)
ONE_LEG_D = _delta(lknee=-1.3, lfull=-0.6, linner=-0.55, shoulder=0.35, llat=0.08, rlat=-0.08)
LEAN_D = _delta(full=-0.45, inner=-0.4, neck=-0.2)


def _lags(**parts: float) -> np.ndarray:
    """Per-joint delay (fraction of the movement's duration) of the usual joint sequencing."""
    return np.clip(_delta(**parts), 0.0, 0.5)


# How a healthy movement sequences its joints (guarding moves them en bloc instead).
LAGS = {
    BEND: _lags(knee=0.35, shoulder=0.17, elbow=0.25),
    REACH: _lags(full=0.3, inner=0.3, neck=0.2, knee=0.4, elbow=0.07),
    ONE_LEG: _lags(full=0.17, inner=0.17, shoulder=0.28, elbow=0.28),
    SIT_TO_STAND: _lags(knee=0.4, shoulder=0.14),
    STAND_TO_SIT: _lags(full=0.28, inner=0.28, neck=0.14),
}


# Calibration knobs (measured with bench/synth_calibration.py).
@dataclass(frozen=True)
class Calibration:
    episode_prob: float = 0.25  # patient: chance a movement instance holds a protective episode
    control_episode_prob: float = 0.01
    difficult_factor: float = 1.35  # more episodes in the difficult session
    strength_a: float = 1.6  # episode strength ~ min + (1 - min) * Beta(a, b) * subject.guard
    strength_b: float = 2.2
    strength_min: float = 0.3
    guard_range: float = 0.15  # trunk range lost at strength 1
    guard_slow: float = 0.25  # extra duration at strength 1
    enbloc: float = 1.0  # guarding: share of the usual joint sequencing lost at strength 1
    pause_prob: float = 0.6  # hesitation (stop-start) in a protective repetition
    reversal_prob: float = 0.4  # ... preceded by a small reversal
    brace_prob: float = 0.6  # bracing in a protective repetition
    brace: float = 0.35  # sEMG co-contraction at strength 1
    brace_lead_s: tuple[float, float] = (0.5, 1.2)  # bracing starts this long before the movement
    jerk_prob: float = 0.35  # an abrupt catch in a protective repetition
    jerk_amp: float = 0.06  # rad at strength 1
    label_jitter_s: float = 0.4  # raters' onset/offset jitter (sd)
    pain_slow: float = 0.12  # per pain level, outside episodes
    pain_range: float = 0.08
    pain_tonus: float = 0.10
    pain_trunk: float = 0.18  # per pain level: trunk range lost in every movement (stiffness)
    pain_relax: float = 0.3  # per pain level: flexion-relaxation lost


CAL = Calibration()


@dataclass(frozen=True)
class Subject:
    """Traits of one participant, shared by their normal and difficult sessions."""

    amp: float  # movement range scale
    speed: float  # tempo scale (> 1 faster)
    posture: np.ndarray  # [13] offsets (rad)
    emg_gain: np.ndarray  # [4]
    tonus: float  # resting sEMG activation
    sway: float  # postural sway (rad)
    noise: float  # sensor noise (rad)
    guard: float  # how strongly protective behaviour changes movement (0..1)
    trunk: float  # trunk range scale (pain stiffens the trunk)
    relax: float  # flexion-relaxation strength (0..1; pain reduces it)
    episode_rate: float  # per-subject propensity (multiplies the episode probability)
    sequencing: float = 1.0  # scale of the usual joint sequencing (lags between joints)


def draw_subject(rng: np.random.Generator, *, patient: bool, pain_level: int) -> Subject:
    """Random traits; patients with more pain move a little less, slower and tenser."""
    pain = max(pain_level, 0) if patient else 0
    return Subject(
        amp=float(np.clip(rng.normal(1.0, 0.13), 0.65, 1.35)) * (1 - CAL.pain_range * pain),
        speed=float(np.clip(rng.normal(1.0, 0.15), 0.65, 1.45)) * (1 - CAL.pain_slow * pain),
        posture=rng.normal(0.0, 0.06, N_ANGLES),
        emg_gain=np.exp(rng.normal(0.0, 0.35) + rng.normal(0.0, 0.15, N_EMG)),
        tonus=float(rng.uniform(0.06, 0.16)) + CAL.pain_tonus * pain,
        sway=float(rng.uniform(0.008, 0.03)),
        noise=float(rng.uniform(0.0002, 0.0008)),
        guard=float(rng.uniform(0.5, 1.0)) if patient else float(rng.uniform(0.2, 0.5)),
        trunk=float(np.clip(rng.normal(1.0, 0.06), 0.85, 1.15)) * (1 - CAL.pain_trunk * pain),
        relax=float(np.clip(rng.normal(0.75, 0.08), 0.5, 0.95)) * (1 - CAL.pain_relax * pain),
        episode_rate=float(rng.uniform(0.6, 1.4)) * (1 + 0.2 * (pain - 1)) if patient else 1.0,
        sequencing=float(rng.uniform(0.85, 1.15)),
    )


class _Session:
    """Accumulates frames: angle targets, exercise type, protective behaviour, bracing."""

    def __init__(self, fs: float, start: np.ndarray) -> None:
        self.fs = fs
        self.cur = start.copy()
        self.angles: list[np.ndarray] = []
        self.ex: list[np.ndarray] = []
        self.prot: list[np.ndarray] = []
        self.brace: list[np.ndarray] = []
        self.n = 0

    def _add(self, a: np.ndarray, ex: int, prot: bool, brace: float | np.ndarray) -> None:
        k = a.shape[0]
        if k == 0:
            return
        self.angles.append(a)
        self.ex.append(np.full(k, ex, np.int64))
        self.prot.append(np.full(k, prot, bool))
        self.brace.append(np.broadcast_to(np.asarray(brace, np.float64), (k,)).copy())
        self.cur = a[-1].copy()
        self.n += k

    def move(self, target: np.ndarray, dur_s: float, ex: int, prot: bool = False, brace: float = 0.0,
             lags: np.ndarray | None = None, catch: tuple[float, float, float] | None = None) -> None:
        """Minimum-jerk movement from the current posture to ``target``.

        ``lags``: per-joint delay as a fraction of the duration (a healthy movement's joint
        sequencing; every joint still arrives at the end). ``catch``: (position in the
        movement 0..1, amplitude rad, duration s) of an abrupt catch on the trunk joints.
        """
        k = max(1, int(round(dur_s * self.fs)))
        s = np.arange(1, k + 1) / k
        if lags is None:
            s_j = np.repeat(s[:, None], N_ANGLES, axis=1)
        else:
            lag = np.clip(np.asarray(lags, np.float64), 0.0, 0.9)
            s_j = np.clip((s[:, None] - lag[None]) / (1.0 - lag[None]), 0.0, 1.0)
        prof = 10 * s_j**3 - 15 * s_j**4 + 6 * s_j**5
        a = self.cur + prof * (target - self.cur)
        if catch is not None:
            where, amp, dur = catch
            t = (np.arange(k) - where * k) / self.fs
            burst = np.where(np.abs(t) < dur / 2, np.cos(np.pi * t / dur) ** 2, 0.0)
            a[:, TRUNK] += (amp * burst * np.sin(2 * np.pi * 6.0 * t))[:, None]
        self._add(a, ex, prot, brace)

    def hold(self, dur_s: float, ex: int, prot: bool = False, brace: float | tuple[float, float] = 0.0) -> None:
        """Stay in the current posture; ``brace`` may be a (from, to) ramp."""
        k = max(0, int(round(dur_s * self.fs)))
        b = np.linspace(brace[0], brace[1], k) if isinstance(brace, tuple) else brace
        self._add(np.repeat(self.cur[None], k, axis=0), ex, prot, b)

    def raw(self, a: np.ndarray, ex: int, prot: bool = False, brace: float = 0.0) -> None:
        self._add(a, ex, prot, brace)


@dataclass(frozen=True)
class Behaviour:
    """Protective behaviour in one repetition (strength 0: none)."""

    strength: float = 0.0
    hesitate: bool = False
    reverse: bool = False
    brace: bool = False
    jerk: bool = False

    @property
    def on(self) -> bool:
        return self.strength > 0

    @property
    def brace_level(self) -> float:
        return CAL.brace * self.strength if self.brace else 0.0


def draw_behaviour(rng: np.random.Generator, strength: float) -> Behaviour:
    """Which protective behaviours a repetition of ``strength`` shows (at least one)."""
    if strength <= 0:
        return Behaviour()
    hes, brace, jerk = (rng.random() < CAL.pause_prob, rng.random() < CAL.brace_prob, rng.random() < CAL.jerk_prob)
    return Behaviour(strength, hes, hes and rng.random() < CAL.reversal_prob, brace, jerk)


def _sequencing(ex: int, subj: Subject, b: Behaviour) -> np.ndarray:
    """The joint lags of a movement: the subject's usual sequencing, lost in guarding."""
    return LAGS.get(ex, np.zeros(N_ANGLES)) * subj.sequencing * (1 - CAL.enbloc * b.strength)


def _rep(ses: _Session, rng: np.random.Generator, base: np.ndarray, d: np.ndarray, ex: int, tempo: float,
         b: Behaviour, subj: Subject, hold_s: float, go_s: float) -> None:
    """One (prepare-)go-hold-return repetition, shaped by protective behaviour ``b``."""
    prot, s = b.on, b.strength
    d = d.copy()
    if prot:
        trunk = np.zeros(N_ANGLES, bool)
        trunk[TRUNK] = True
        d[trunk] *= 1 - CAL.guard_range * s  # guarding: the trunk moves a little less ...
        d[~trunk] *= 1 - 0.5 * CAL.guard_range * s
        if ex == BEND:
            d[KNEE] -= 0.2 * s  # ... and the knees do more of the work
        tempo /= 1 + CAL.guard_slow * s
    brace = b.brace_level
    lags = _sequencing(ex, subj, b)
    # Everyone pauses briefly before a repetition; bracing builds up during it.
    lead = rng.uniform(*CAL.brace_lead_s) if brace else rng.uniform(0.3, 0.9)
    ses.hold(lead, ex, prot and brace > 0, (0.0, brace) if brace else 0.0)
    go = go_s / tempo
    target = base + d
    catch = (rng.uniform(0.3, 0.8), CAL.jerk_amp * (0.5 + s), rng.uniform(0.25, 0.5)) if b.jerk else None
    if b.hesitate:  # stop-start part-way
        f = rng.uniform(0.3, 0.7)
        ses.move(base + f * d, go * f, ex, prot, brace, lags)
        if b.reverse:
            ses.move(base + (f - 0.12) * d, 0.25, ex, prot, brace)
        ses.hold(rng.uniform(0.3, 1.0) * (0.5 + s), ex, prot, brace)
        ses.move(target, go * (1 - f), ex, prot, brace, lags, catch)
    else:
        ses.move(target, go, ex, prot, brace, lags, catch)
    ses.hold(hold_s / tempo, ex, prot, brace)
    ses.move(base, go * rng.uniform(0.9, 1.2), ex, prot, brace, lags)


def _walk(ses: _Session, rng: np.random.Generator, base: np.ndarray, dur_s: float, subj: Subject, tempo: float,
          strength: float) -> None:
    """Gait: knees, hips and arms oscillate in anti-phase; guarding shortens and slows steps."""
    k = int(round(dur_s * ses.fs))
    t = np.arange(k) / ses.fs
    amp = subj.amp * (1 - CAL.guard_range * strength)
    f = rng.uniform(0.85, 1.0) * tempo / (1 + 0.5 * CAL.guard_slow * strength)
    ph = 2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)
    ramp = np.clip(np.minimum(t, t[-1] - t) / 1.0, 0, 1) if k > 1 else np.ones(k)
    a = np.repeat(base[None], k, axis=0)
    for side, off in ((0, 0.0), (1, np.pi)):
        swing = np.maximum(0, np.sin(ph + off)) ** 1.5
        a[:, KNEE[side]] -= ramp * amp * (0.1 + 0.9 * swing)
        a[:, FULL[side]] -= ramp * amp * 0.3 * (1 + np.sin(ph + off)) / 2
        a[:, INNER[side]] -= ramp * amp * 0.25 * (1 + np.sin(ph + off)) / 2
        a[:, SHOULDER[side]] += ramp * amp * 0.25 * np.sin(ph + off + np.pi)
        a[:, ELBOW[side]] -= ramp * amp * (0.2 + 0.1 * np.sin(ph + off + np.pi))
        a[:, LATERAL[side]] += ramp * amp * 0.04 * np.sin(2 * ph + off)
    brace = CAL.brace * strength if strength > 0 and rng.random() < CAL.brace_prob else 0.0
    # Blend from the current posture into the gait.
    blend = min(k, int(0.5 * ses.fs))
    if blend:
        w = np.linspace(0, 1, blend)[:, None]
        a[:blend] = (1 - w) * ses.cur + w * a[:blend]
    ses.raw(a, WALK, strength > 0, brace)


def _instance(ses: _Session, rng: np.random.Generator, ex: int, subj: Subject, stand: np.ndarray, sit: np.ndarray,
              difficult: bool, episode_p: float) -> None:
    """Append one exercise instance; with probability ``episode_p`` part of it is protective."""
    tempo = subj.speed * rng.uniform(0.9, 1.1) * (1.2 if difficult else 1.0)
    amp = subj.amp * rng.uniform(0.9, 1.1) * (1.12 if difficult else 1.0)
    n_reps = {ONE_LEG: 2, REACH: int(rng.integers(2, 4)), BEND: int(rng.integers(2, 4)), SIT_TO_STAND: 1,
              STAND_TO_SIT: 1}.get(ex, 1)
    episode = ex in MOVEMENTS and rng.random() < episode_p
    first = int(rng.integers(0, n_reps)) if episode else n_reps  # protective from this rep on

    def strength(rep: int) -> float:
        if rep < first:
            return 0.0
        # Raters label behaviour they can see: strength spreads over [strength_min, 1].
        return float(CAL.strength_min + (1 - CAL.strength_min) * rng.beta(CAL.strength_a, CAL.strength_b) * subj.guard)

    def behaviour(rep: int) -> Behaviour:
        return draw_behaviour(rng, strength(rep))

    if ex in (SIT_STILL, STAND_STILL):
        ses.move(sit if ex == SIT_STILL else stand, 0.6, ex)
        ses.hold(rng.uniform(5, 10), ex)
    elif ex == WALK:
        _walk(ses, rng, stand, rng.uniform(8, 14), subj, tempo, strength(0))
    elif ex == REACH or ex == BEND:
        d = (REACH_D if ex == REACH else BEND_D) * amp
        d[TRUNK] *= subj.trunk
        ses.move(stand, 0.5, ex)
        for r in range(n_reps):
            _rep(ses, rng, stand, d, ex, tempo, behaviour(r), subj, rng.uniform(0.5, 1.5), rng.uniform(1.2, 1.8))
            ses.hold(rng.uniform(0.4, 1.0), ex)
    elif ex == ONE_LEG:
        ses.move(stand, 0.5, ex)
        for r in range(n_reps):
            d = ONE_LEG_D * amp
            if r % 2:  # the other leg: swap left/right columns
                d = d[[1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 12]]
            _rep(ses, rng, stand, d, ex, tempo, behaviour(r), subj, rng.uniform(2, 4), rng.uniform(0.8, 1.2))
            ses.hold(rng.uniform(0.5, 1.0), ex)
    else:  # sit-to-stand / stand-to-sit: posture change through a forward lean
        src, dst = (sit, stand) if ex == SIT_TO_STAND else (stand, sit)
        b = behaviour(0)
        s = b.strength
        slow = tempo / (1 + CAL.guard_slow * s)
        brace = b.brace_level
        lags = _sequencing(ex, subj, b)
        lean = LEAN_D * amp * (1 - CAL.guard_range * s)
        ses.move(src, 0.4, ex)
        ses.hold(rng.uniform(*CAL.brace_lead_s) if brace else rng.uniform(0.2, 0.6), ex, b.on and brace > 0,
                 (0.0, brace) if brace else 0.0)
        ses.move(src + lean, rng.uniform(0.6, 1.0) / slow, ex, b.on, brace, lags)
        if b.hesitate:
            ses.hold(rng.uniform(0.3, 1.0) * (0.5 + s), ex, True, brace)
        catch = (rng.uniform(0.2, 0.8), CAL.jerk_amp * (0.5 + s), rng.uniform(0.25, 0.5)) if b.jerk else None
        ses.move((src + dst) / 2 + lean * 0.8, rng.uniform(0.5, 0.8) / slow, ex, b.on, brace, lags, catch)
        ses.move(dst, rng.uniform(0.6, 1.0) / slow, ex, b.on, brace, lags)
        ses.hold(rng.uniform(0.3, 0.8), ex)


def _program(rng: np.random.Generator, n_frames: int, fs: float, subj: Subject, difficult: bool,
             episode_p: float) -> _Session:
    stand = STAND + subj.posture
    sit = SIT + subj.posture
    ses = _Session(fs, stand)
    ses.hold(rng.uniform(0.5, 1.5), OTHER)
    sitting, last = False, -1
    while ses.n < n_frames:
        if sitting:
            choices, w = [SIT_TO_STAND, SIT_STILL], [2.0, 1.0]
        else:
            choices, w = [ONE_LEG, REACH, BEND, STAND_TO_SIT, STAND_STILL, WALK], [1.0, 1.3, 1.3, 0.8, 0.5, 0.8]
        p = np.array([wi * (0.3 if c == last else 1.0) for c, wi in zip(choices, w)])
        ex = choices[int(rng.choice(len(choices), p=p / p.sum()))]
        _instance(ses, rng, ex, subj, stand, sit, difficult, episode_p)
        if ex in (SIT_TO_STAND, STAND_TO_SIT):
            sitting = ex == STAND_TO_SIT
        last = ex
        # "other": a short transition (shifting weight, adjusting)
        home = sit if sitting else stand
        ses.move(home + rng.normal(0, 0.05, N_ANGLES), rng.uniform(0.6, 1.5), OTHER)
        ses.move(home, rng.uniform(0.4, 1.0), OTHER)
    return ses


def _lowpass_noise(rng: np.random.Generator, n: int, ch: int, fs: float, cutoff: float) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    x = rng.normal(size=(n + 200, ch))
    sos = butter(2, cutoff, btype="low", fs=fs, output="sos")
    y = sosfiltfilt(sos, x, axis=0)[100:100 + n]
    return y / (y.std(axis=0, keepdims=True) + 1e-12)


def _emg(rng: np.random.Generator, angles: np.ndarray, ex: np.ndarray, brace: np.ndarray, subj: Subject,
         difficult: bool, fs: float) -> np.ndarray:
    """sEMG envelopes [T, 4] (upper L/R, lower L/R) from a trunk-load activation model."""
    n = angles.shape[0]
    flex = np.clip(STAND[FULL].mean() - angles[:, FULL].mean(axis=1) - 0.0, 0, None)  # trunk flexion (rad)
    sitting = (angles[:, KNEE].mean(axis=1) < 2.3)
    vel = np.abs(np.gradient(angles[:, FULL].mean(axis=1))) * fs
    knee_vel = np.abs(np.gradient(angles[:, KNEE].mean(axis=1))) * fs
    arms = np.clip(angles[:, SHOULDER].mean(axis=1) - STAND[SHOULDER].mean(), 0, None)
    fr = np.clip((flex - 0.8) / 0.3, 0, 1)  # flexion-relaxation: healthy backs go quiet in full flexion
    relax = subj.relax * (1 - np.clip(brace / max(CAL.brace, 1e-9), 0, 1))
    load = 0.7 * np.where(sitting, 0.0, np.minimum(flex, 1.0)) * (1 - relax * fr)
    base = np.where(sitting, 0.6, 1.0) * subj.tonus
    act = np.empty((n, N_EMG))
    weight = 1.3 if difficult else 1.0
    lat = angles[:, LATERAL[0]] - angles[:, LATERAL[1]]  # > 0: leaning right
    for c in range(N_EMG):
        upper = c < 2
        left = c % 2 == 0
        a = base + weight * (load + 0.08 * vel + (0.35 * arms if upper else 0.12 * knee_vel))
        a = a * (1 + (0.6 if left else -0.6) * np.clip(lat, -0.3, 0.3))
        a = a + brace * (0.8 if upper else 1.0)  # bracing: co-contraction on both sides
        walk = ex == WALK
        a = a + 0.1 * walk * (1 + np.sin(np.cumsum(walk) * 2 * np.pi * 1.9 / fs + c * np.pi / 2)) * (not upper)
        act[:, c] = a
    # Raw-ish sEMG at 10x the frame rate, enveloped with the gateway's filter, then decimated.
    up = 10
    t_up = np.arange(n * up) / up
    act_up = np.stack([np.interp(t_up, np.arange(n), act[:, c]) for c in range(N_EMG)], axis=1)
    raw = act_up * rng.normal(size=act_up.shape) * np.sqrt(np.pi / 2)
    env = EnvelopeFilter(fs * up, cutoff_hz=6.0, channels=N_EMG).process(raw)[::up].astype(np.float64)
    env = env * subj.emg_gain[None, :] + np.abs(rng.normal(0, 0.005, env.shape))
    return env


def _jitter_labels(rng: np.random.Generator, prot: np.ndarray, fs: float) -> np.ndarray:
    """Raters' per-frame labels: each behaviour episode with onset/offset jitter."""
    n = prot.shape[0]
    out = np.zeros(n, np.int64)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], prot.astype(np.int8), [0]])))
    for a, b in zip(edges[::2], edges[1::2]):
        ja, jb = (int(round(v)) for v in rng.normal(0, CAL.label_jitter_s * fs, 2))
        a2, b2 = max(0, a + ja), min(n, b + jb)
        if b2 - a2 >= int(0.3 * fs):
            out[a2:b2] = 1
    return out


def synth_bd(rng: np.random.Generator, *, patient: bool, pain_level: int, duration_s: float, difficult: bool,
             fs: float = EMOPAIN_SAMPLE_RATE_HZ, subject: Subject | None = None) -> np.ndarray:
    """One synthetic rehab session as an EmoPain ``BD`` matrix [T, 33] (float64).

    ``pain_level`` goes to column 32 unchanged (0 healthy, 1 low, 2 high, −1 not
    reported). ``subject`` (from :func:`draw_subject`) fixes the participant's traits;
    pass the same one for their normal and difficult sessions.
    """
    if duration_s <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    n = max(2, int(round(duration_s * fs)))
    subj = subject or draw_subject(rng, patient=patient, pain_level=pain_level)
    p = (CAL.episode_prob * subj.episode_rate if patient else CAL.control_episode_prob)
    p = min(0.95, p * (CAL.difficult_factor if difficult else 1.0))
    ses = _program(rng, n, fs, subj, difficult, p)
    target = np.concatenate(ses.angles)[:n]
    ex = np.concatenate(ses.ex)[:n]
    prot = np.concatenate(ses.prot)[:n]
    brace = np.concatenate(ses.brace)[:n]
    sway = subj.sway * _lowpass_noise(rng, n, N_ANGLES, fs, 0.4)
    angles = target + sway + rng.normal(0, subj.noise, target.shape)
    # Store angles exactly as float32 so energies recomputed from the file match bit for bit.
    angles = angles.astype(np.float32).astype(np.float64)
    emg = _emg(rng, target, ex, brace, subj, difficult, fs).astype(np.float32)
    bd = np.zeros((n, BD_COLUMNS))
    bd[:, :N_ANGLES] = angles
    bd[:, N_ANGLES:2 * N_ANGLES] = energy_from_angles(angles, fs)
    bd[:, 2 * N_ANGLES:2 * N_ANGLES + N_EMG] = emg
    bd[:, COL_EXERCISE] = ex
    bd[:, COL_PAIN] = pain_level
    bd[:, COL_PROTECTIVE] = _jitter_labels(rng, prot, fs)
    return bd


def participant_plan(patients: int, controls: int) -> list[tuple[str, bool, int]]:
    """(participant id, is patient, pain level) of a synthetic cohort.

    Patients alternate low/high pain (P01 low, P02 high, ...), so every contiguous
    block of patients (e.g. the challenge split) has both levels; controls are healthy.
    """
    out = [(f"P{i:02d}", True, 1 + (i - 1) % 2) for i in range(1, patients + 1)]
    return out + [(f"C{i:02d}", False, 0) for i in range(1, controls + 1)]


def write_synthetic_dataset(out_dir: str | Path, *, patients: int = DEFAULT_PATIENTS, controls: int = DEFAULT_CONTROLS,
                            seed: int = 0, duration_s: float = DEFAULT_DURATION_S,
                            progress: Callable[[Path], None] | None = None) -> list[Path]:
    """Write ``{P|C}{id:02d}{N|D}.mat`` for every participant (both difficulties) into ``out_dir``.

    Deterministic per ``seed``. Each file is written atomically; if anything fails,
    the files this call already wrote are removed again. ``progress`` is called with
    each written path.
    """
    if patients < 0 or controls < 0 or patients + controls == 0:
        raise ValueError("need at least one participant")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = participant_plan(patients, controls)
    children = np.random.SeedSequence(seed).spawn(len(plan))
    written: list[Path] = []
    try:
        for (pid, patient, pain), ss in zip(plan, children):
            # Seeded per participant id position: adding participants keeps the others unchanged.
            rng = np.random.default_rng(ss)
            subj = draw_subject(rng, patient=patient, pain_level=pain)
            for diff in ("N", "D"):
                bd = synth_bd(rng, patient=patient, pain_level=pain, duration_s=duration_s,
                              difficult=diff == "D", subject=subj)
                path = out_dir / f"{pid}{diff}.mat"
                write_bd(path, bd, dtype=np.float32)  # every value is float32-exact
                written.append(path)
                if progress is not None:
                    progress(path)
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return written


def synth_session(seed: int = 0, duration_s: float = 300.0, patient: bool = True, pain_level: int = 1) -> np.ndarray:
    """A single session [T, 33] for the firmware simulator and the demo.

    For a patient it certainly holds several (at least 3) protective episodes: seeds are
    tried in a fixed order until one does, so the result is deterministic per ``seed``.
    """
    bd = None
    for attempt in range(50):
        rng = np.random.default_rng([seed, attempt])
        subj = draw_subject(rng, patient=patient, pain_level=pain_level)
        if patient:
            subj = replace(subj, episode_rate=max(subj.episode_rate, 1.0), guard=max(subj.guard, 0.8))
        bd = synth_bd(rng, patient=patient, pain_level=pain_level, duration_s=duration_s, difficult=False,
                      subject=subj)
        if not patient or count_episodes(bd[:, COL_PROTECTIVE]) >= 3:
            return bd
    assert bd is not None
    return bd


def count_episodes(labels: np.ndarray) -> int:
    """Number of runs of protective frames (label 1)."""
    lab = (np.asarray(labels) == 1).astype(np.int8)
    return int(np.sum(np.diff(np.concatenate([[0], lab])) == 1))


def cmd_synth(args: argparse.Namespace) -> int:
    """``alanet data synth --out DIR``: write the synthetic cohort (staged, then renamed into place)."""
    import sys

    from alanet.atomic import staged_dir
    from alanet.errors import InputError

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise InputError(f"{out}: folder exists and is not empty (use --force to replace it)")
    if args.patients < 0 or args.controls < 0 or args.patients + args.controls == 0:
        raise InputError("--patients and --controls must be >= 0 and not both 0")
    if args.patients > 99 or args.controls > 99:
        raise InputError("--patients and --controls must be <= 99")
    if not args.duration > 0:
        raise InputError(f"--duration must be > 0 seconds, got {args.duration:g}")
    n_files = 2 * (args.patients + args.controls)
    try:
        from tqdm import tqdm
    except ImportError:  # progress is a nicety
        tqdm = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out}: cannot create the folder: {exc.strerror or exc}") from None
    bar = tqdm(total=n_files, unit="file", file=sys.stderr, desc="synth") if tqdm else None
    try:
        with staged_dir(out, force=True) as stage:
            stage.chmod(0o777 & ~current_umask())  # a temp dir is private; the dataset folder is not
            paths = write_synthetic_dataset(stage, patients=args.patients, controls=args.controls, seed=args.seed,
                                            duration_s=args.duration,
                                            progress=(lambda _p: bar.update(1)) if bar else None)
    except OSError as exc:
        raise InputError(f"{out}: cannot write: {exc.strerror or exc}") from None
    finally:
        if bar is not None:
            bar.close()
    frames = n_files * int(round(args.duration * EMOPAIN_SAMPLE_RATE_HZ))
    print(f"wrote {len(paths)} synthetic EmoPain-format files ({args.patients} patients, {args.controls} controls, "
          f"{frames} frames, seed {args.seed}) to {out}")
    return 0
