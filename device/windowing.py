"""Sliding windows: length, stride, window labels, segments, padding + mask.

Defaults are EmoPain's: 180 frames (3 s at 60 Hz), stride 45 (75 % overlap). The
trainer cuts recordings with :func:`segment_windows`; the gateway's ring buffer emits
a window at the same positions (:func:`window_starts`) as frames stream in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_WINDOW = 180
DEFAULT_STRIDE = 45
IGNORE = -1  # per-frame label meaning "not labelled" (e.g. pain not reported)
# How a training window is labelled from its frames' labels:
# majority - the majority of all its frames (the paper's);
# newest   - the majority of its last ``stride`` frames (in a run of windows one stride apart,
#            the frames it adds to the window before it): what a gateway deciding each
#            stride about "now" needs (see docs/training.md).
WINDOW_LABELS = ("majority", "newest")
DEFAULT_WINDOW_LABEL = "majority"  # also what a run that predates the choice used


@dataclass(frozen=True)
class WindowSpec:
    length: int = DEFAULT_WINDOW
    stride: int = DEFAULT_STRIDE
    min_length: int | None = None  # shortest segment still kept (padded); default length // 4
    label: str = DEFAULT_WINDOW_LABEL  # one of WINDOW_LABELS

    def __post_init__(self) -> None:
        if self.length < 1 or self.stride < 1:
            raise ValueError(f"window length and stride must be >= 1 (got {self.length}, {self.stride})")
        if self.label not in WINDOW_LABELS:
            raise ValueError(f"window label must be one of {', '.join(WINDOW_LABELS)} (got {self.label!r})")

    def label_of(self, labels: np.ndarray) -> int:
        """The label of a window whose frames have per-frame ``labels`` (its real frames only:
        a padded window passes the frames it has)."""
        if self.label == "newest":
            return majority_label(labels[-self.stride:])
        return majority_label(labels)

    @property
    def shortest(self) -> int:
        return self.min_length if self.min_length is not None else max(1, self.length // 4)


def window_starts(n_frames: int, length: int, stride: int) -> np.ndarray:
    """Start indices of full windows over ``n_frames`` frames."""
    if n_frames < length:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_frames - length + 1, stride, dtype=np.int64)


def majority_label(labels: np.ndarray) -> int:
    """Majority vote over per-frame labels, ignoring :data:`IGNORE`.

    Ties go to the higher class (protective / more pain), the conservative choice for
    a clinical alert. Returns IGNORE when no frame is labelled.
    """
    lab = np.asarray(labels)
    lab = lab[lab != IGNORE]
    if lab.size == 0:
        return IGNORE
    counts = np.bincount(lab.astype(np.int64))
    return int(len(counts) - 1 - np.argmax(counts[::-1]))


def segments(boundaries_key: np.ndarray | None, n_frames: int) -> list[tuple[int, int]]:
    """Contiguous runs of equal ``boundaries_key`` (e.g. exercise type) → [(start, end)).

    With no key the whole recording is one segment.
    """
    if boundaries_key is None or n_frames == 0:
        return [(0, n_frames)] if n_frames else []
    key = np.asarray(boundaries_key)
    cuts = np.flatnonzero(key[1:] != key[:-1]) + 1
    edges = np.concatenate([[0], cuts, [n_frames]])
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


@dataclass(frozen=True)
class Windows:
    """Windows cut from one or more recordings."""

    x: np.ndarray  # [N, L, C] float32 (zero-padded where mask is 0)
    mask: np.ndarray  # [N, L] bool: real frames
    y: np.ndarray  # [N] int64 majority labels (IGNORE possible)
    source: np.ndarray  # [N] int64 index of the recording each window came from
    start: np.ndarray  # [N] int64 first frame in that recording

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def select(self, idx: np.ndarray) -> "Windows":
        return Windows(self.x[idx], self.mask[idx], self.y[idx], self.source[idx], self.start[idx])

    @staticmethod
    def concat(parts: list["Windows"], length: int, n_channels: int) -> "Windows":
        if not parts:
            return Windows(np.zeros((0, length, n_channels), np.float32), np.zeros((0, length), bool),
                           np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
        return Windows(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("x", "mask", "y", "source", "start")))


def segment_windows(values: np.ndarray, labels: np.ndarray | None, spec: WindowSpec,
                    segment_key: np.ndarray | None = None, source: int = 0) -> Windows:
    """Cut one recording [T, C] into windows, per segment (e.g. per exercise instance).

    A segment shorter than ``spec.length`` but at least ``spec.shortest`` frames becomes
    one zero-padded window with its mask; shorter ones are dropped. A segment's tail
    that does not fill a stride is covered by one last window aligned to its end, so
    no labelled stretch is lost.
    """
    values = np.asarray(values, dtype=np.float32)
    n, c = values.shape
    lab = np.full(n, IGNORE, np.int64) if labels is None else np.asarray(labels, np.int64)
    L = spec.length
    xs, ms, ys, starts = [], [], [], []
    for a, b in segments(segment_key, n):
        seg_len = b - a
        if seg_len >= L:
            st = list(a + window_starts(seg_len, L, spec.stride))
            if st[-1] + L < b:
                st.append(b - L)
            for s in st:
                xs.append(values[s:s + L])
                ms.append(np.ones(L, bool))
                ys.append(spec.label_of(lab[s:s + L]))
                starts.append(s)
        elif seg_len >= spec.shortest:
            w = np.zeros((L, c), np.float32)
            w[:seg_len] = values[a:b]
            m = np.zeros(L, bool)
            m[:seg_len] = True
            xs.append(w)
            ms.append(m)
            ys.append(spec.label_of(lab[a:b]))
            starts.append(a)
    if not xs:
        return Windows.concat([], L, c)
    k = len(xs)
    return Windows(np.stack(xs), np.stack(ms), np.asarray(ys, np.int64), np.full(k, source, np.int64),
                   np.asarray(starts, np.int64))


class RingWindow:
    """The gateway's per-wearer ring buffer: push frames, get a window every ``stride``.

    Emits the same windows as :func:`window_starts` on a continuous stream. ``reset()``
    after a long gap restarts the window (the buffer must refill).
    """

    def __init__(self, n_channels: int, length: int = DEFAULT_WINDOW, stride: int = DEFAULT_STRIDE) -> None:
        self.length, self.stride = length, stride
        self._buf = np.zeros((2 * length, n_channels), np.float32)
        self._n = 0  # frames pushed since reset
        self._pos = 0  # write position in the doubled buffer

    def reset(self) -> None:
        self._n = 0
        self._pos = 0

    @property
    def frames_since_reset(self) -> int:
        return self._n

    def push(self, frame: np.ndarray) -> np.ndarray | None:
        """Add one frame; return a [length, C] window (a view, copy it to keep) when one is due."""
        L = self.length
        # Write each frame twice, L apart, so the last L frames are always contiguous.
        self._buf[self._pos] = frame
        self._buf[self._pos + L] = frame
        self._pos = (self._pos + 1) % L
        self._n += 1
        if self._n >= L and (self._n - L) % self.stride == 0:
            return self._buf[self._pos:self._pos + L]
        return None

    def until_window(self) -> int:
        """Frames still to push before the next window is due (the last of them completes it)."""
        L, S = self.length, self.stride
        return L - self._n if self._n < L else S - (self._n - L) % S

    def push_block(self, rows: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Add [n, C] consecutive frames; return ``(index in rows, window)`` for each window they complete.

        The same windows, at the same frames, as ``n`` calls of :meth:`push`; each window is a
        copy (later rows of the block overwrite the buffer).
        """
        L = self.length
        out: list[tuple[int, np.ndarray]] = []
        i, n = 0, len(rows)
        while i < n:
            # frames until the next window is due (at most L: a slice never wraps onto itself)
            due = self.until_window()
            k = min(due, n - i)
            self._write(rows[i:i + k])
            i += k
            if k == due:
                out.append((i - 1, self._buf[self._pos:self._pos + L].copy()))
        return out

    def _write(self, block: np.ndarray) -> None:
        """Write ``len(block)`` <= length frames at the write position, twice (L apart)."""
        L, p, k = self.length, self._pos, len(block)
        first = min(k, L - p)
        self._buf[p:p + first] = block[:first]
        self._buf[p + L:p + L + first] = block[:first]
        if k > first:
            self._buf[:k - first] = block[first:]
            self._buf[L:L + k - first] = block[first:]
        self._pos = (p + k) % L
        self._n += k

    def latest(self, k: int) -> np.ndarray:
        """A copy of the newest ``k`` frames (oldest first); fewer when fewer are held."""
        k = min(k, self._n, self.length)
        end = self._pos + self.length  # the doubled buffer keeps the last L frames contiguous
        return self._buf[end - k:end].copy()

    def resized(self, length: int, stride: int) -> "RingWindow":
        """A new ring of ``length``/``stride`` holding this one's newest frames.

        When it holds every frame the new length needs (or all frames since the reset),
        the frame count carries on, so windows stay aligned to the stream and none is
        skipped; otherwise the new window fills from the carried frames.
        """
        new = RingWindow(self._buf.shape[1], length, stride)
        carried = self.latest(length)
        for frame in carried:
            new.push(frame)
        if len(carried) == min(self._n, length):
            new._n = self._n
        return new
