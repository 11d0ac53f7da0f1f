"""Along-time tools for rules that evaluate every reading of a sensor in one call (`series` rules):
runs of one sensor's rows, the latest earlier row with a property, and sequential recurrences (EWMA,
clamped CUSUM sums) computed by array passes in the same floating-point order as one reading at a
time, so the detections are the very same, not merely close. Where a pass would cost more than the
readings (a short run, alarms every few readings, scipy not imported yet), a loop does the same
arithmetic.

A view of a whole batch holds each sensor's rows contiguous and in time order (a `Round` with
once=False); `Runs` describes that layout once per view.
"""

from __future__ import annotations

import sys

import numpy as np

# Readings of one run above which the EWMA imports scipy.signal for lfilter (see `ewma_filter`).
LFILTER_ROWS = 200_000
_looped = 0  # readings the EWMA loop has stepped in this process
# Runs at most this long go through a loop over the rank of a reading within its sensor (vectorized
# over sensors, as the rule set's rounds); longer ones through a call per sensor over all its rows.
SHORT_RUN = 32


class Runs:
    """The runs of a view: each sensor's rows, contiguous. first/last: row index of each run's first and
    last row; sensor: the run's local sensor index; run: run number per row; rank: position in the run."""

    __slots__ = ("n", "first", "last", "sensor", "run", "rank", "length")

    def __init__(self, loc: np.ndarray) -> None:
        n = self.n = len(loc)
        start = np.empty(n, bool)
        if n:
            start[0] = True
            np.not_equal(loc[1:], loc[:-1], out=start[1:])
        self.first = np.flatnonzero(start)
        self.last = np.r_[self.first[1:] - 1, n - 1] if n else np.zeros(0, np.intp)
        self.sensor = loc[self.first]
        self.run = np.cumsum(start) - 1
        self.rank = np.arange(n) - self.first[self.run]
        self.length = self.last - self.first + 1

    def latest(self, mask: np.ndarray, strict: bool = False) -> np.ndarray:
        """Per row, the index of the latest row of its run at or before it (strict: before it) where
        `mask` holds; -1 where there is none."""
        n = self.n
        mark = np.where(mask, np.arange(n), -1)
        acc = np.maximum.accumulate(mark) if n else mark
        if strict:
            acc = np.r_[-1, acc[:-1]] if n else acc
        return np.where(acc >= self.first[self.run], acc, -1)

    def last_where(self, mask: np.ndarray) -> np.ndarray:
        """Per run, the index of its last row where `mask` holds; -1 where there is none."""
        if self.n == 0:
            return np.zeros(0, np.intp)
        return self.latest(mask)[self.last]


def ewma_filter(x: np.ndarray, runs: Runs, lam: float, z0: np.ndarray) -> np.ndarray:
    """z_i = lam x_i + (1 - lam) z_{i-1} along each run, starting from z0 (one per run): bit for bit
    the per-reading recursion `lam * x + (1 - lam) * z0`. Short runs step by rank over all runs at once;
    a long run is one scipy.signal.lfilter call (direct form II transposed computes the very same
    products and sum: y = lam x + s, s = (1 - lam) y). Importing scipy.signal costs about as much as a
    plain float loop (the same arithmetic) over LFILTER_ROWS readings, so long runs take that loop until
    the process has looped over that many (or scipy.signal is imported anyway): `detect` over one file
    of a few thousand readings does not pay the import, a history of millions does once."""
    n = len(x)
    z = np.empty(n)
    a = 1 - lam
    long_runs = np.flatnonzero(runs.length > SHORT_RUN)
    if len(long_runs):
        global _looped
        use_scipy = "scipy.signal" in sys.modules or _looped + int(runs.length[long_runs].sum()) > LFILTER_ROWS
        if use_scipy:
            from scipy.signal import lfilter
        for r in long_runs:
            s = slice(runs.first[r], runs.last[r] + 1)
            if use_scipy:
                z[s] = lfilter([lam], [1.0, -a], x[s], zi=[a * z0[r]])[0]
                continue
            out, y = [], float(z0[r])
            for v in x[s].tolist():
                y = lam * v + a * y
                out.append(y)
            z[s] = out
            _looped += len(out)
    short = runs.length <= SHORT_RUN
    if short.any():
        prev = np.where(short, z0, np.nan)
        top = int(runs.length[short].max())
        for k in range(top):
            live = np.flatnonzero(short & (runs.length > k))
            i = runs.first[live] + k
            prev[live] = z[i] = lam * x[i] + a * prev[live]
    return z


def clamped_sums(z: np.ndarray, k: float, runs: Runs, s0: np.ndarray) -> np.ndarray:
    """S_i = max(0, (S_{i-1} + z_i) - k) along each run from s0 (one per run, >= 0): the one-sided
    tabular CUSUM, bit for bit as the per-reading recursion.

    A float prefix-sum form (S = C - running min of min(C, 0), C = s0 + cumulative sum of z - k; Lindley)
    proposes where S restarts at 0; each stretch between restarts is then summed exactly in reading
    order (one cumsum over s0, z and -k interleaved, stretches padded by length class), and the first
    row of a run where the exact sum disagrees with the proposal (a tie within rounding) starts that
    run's next pass from the exact state there. Each pass covers at most CHUNK rows of a run."""
    n = len(z)
    out = np.empty(n)
    first, last, base = runs.first.copy(), runs.last.copy(), np.asarray(s0, np.float64).copy()
    while len(first):
        end = np.minimum(last, first + CHUNK - 1)
        idx = _ranges(first, end)
        seg = Runs(np.repeat(np.arange(len(first)), end - first + 1))
        zz = z[idx]
        c = seg_accumulate(np.add, zz - k, seg) + base[seg.run]
        restart = c <= seg_accumulate(np.minimum, np.minimum(c, 0.0), seg)
        start = np.r_[True, restart[:-1]]
        start[seg.first] = True
        exact = _stretch_sums(zz, k, start, np.where(seg.rank == 0, base[seg.run], 0.0)[start])
        val = np.where(exact > 0.0, exact, 0.0)
        stop = seg.last.copy()
        bad = np.flatnonzero((exact <= 0.0) != restart)
        if len(bad):
            br = seg.run[bad]
            keep = np.r_[True, br[1:] != br[:-1]]
            stop[br[keep]] = bad[keep]
        done = seg.rank <= (stop - seg.first)[seg.run]
        out[idx[done]] = val[done]
        # A disagreeing row's own exact value is right (the state before it was): go on after it.
        nxt = idx[stop] + 1
        more = nxt <= last
        first, last, base = nxt[more], last[more], val[stop][more]
    return out


# Rows of one run that one pass of `clamped_sums` covers (bounds the work of a pass after a tie).
CHUNK = 1 << 16


def seg_accumulate(ufunc, v: np.ndarray, seg: Runs) -> np.ndarray:
    """ufunc.accumulate of v within each run (np.add: cumulative sums, np.minimum: running minima)."""
    out = v.copy()
    for r in np.flatnonzero(seg.length > SHORT_RUN):
        s = slice(seg.first[r], seg.last[r] + 1)
        ufunc.accumulate(v[s], out=out[s])
    short = np.flatnonzero(seg.length <= SHORT_RUN)
    if len(short):
        first, length = seg.first[short], seg.length[short]
        for k in range(1, int(length.max())):
            i = first[length > k] + k
            out[i] = ufunc(out[i - 1], v[i])
    return out


def _ranges(first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Concatenated arange(first[i], last[i] + 1)."""
    lengths = last - first + 1
    offsets = np.repeat(first - np.r_[0, np.cumsum(lengths)[:-1]], lengths)
    return np.arange(int(lengths.sum())) + offsets


def _stretch_sums(z: np.ndarray, k: float, start: np.ndarray, s0: np.ndarray) -> np.ndarray:
    """Within stretches (start marks each stretch's first row), v_i = (v_{i-1} + z_i) - k from s0 (one per
    stretch), in exactly that order: cumsum over [s0, z_1, -k, z_2, -k, ...] per stretch, stretches
    grouped by length class (up to twice their length) into padded 2-D blocks."""
    n = len(z)
    out = np.empty(n)
    first = np.flatnonzero(start)
    length = np.diff(np.r_[first, n])
    cls = np.ceil(np.log2(np.maximum(length, 1))).astype(np.int64)
    for c in np.unique(cls):
        sel = np.flatnonzero(cls == c)
        width = 1 << int(c)
        f, ln = first[sel], length[sel]
        block = np.zeros((len(sel), 2 * width + 1))
        block[:, 0] = s0[sel]
        block[:, 2::2] = -k
        col = np.arange(width)
        inside = col[None, :] < ln[:, None]
        src = (f[:, None] + col[None, :])[inside]
        zb = np.zeros((len(sel), width))
        zb[inside] = z[src]
        block[:, 1::2] = zb
        acc = np.cumsum(block, axis=1)[:, 2::2]
        out[src] = acc[inside]
    return out


def clamped_cusum(z: np.ndarray, k: float, runs: Runs, hi0: np.ndarray, lo0: np.ndarray, direction: str,
                  reset_at: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(S+, S-) after each row of the runs: S+ = max(0, (S+ + z) - k), S- = max(0, (S- - z) - k) from
    hi0, lo0 (one per run); direction `up` / `down` keeps the other side at 0. reset_at: None, or h:
    after a row where max(S+, S-) >= h both restart at 0 (the row itself shows the values it reached).

    With resets, passes go from each run's last restart to its next alarm (at most `width` rows, a width
    that follows the distance between alarms), each pass `clamped_sums` over those rows. A pass costs about
    as much as a plain float loop (the per-reading arithmetic itself) over a thousand readings, so where
    alarms come oftener than every DENSE_ALARMS readings (a two-sided chart with h = 5, k = 0.5 on
    normal data alarms every few hundred), the next LOOP_ROWS readings take that loop."""
    n = len(z)
    if n == 0 or runs.length.max() <= SHORT_RUN:
        return _cusum_by_rank(z, k, runs, hi0, lo0, direction, reset_at)
    zero = np.zeros(n)
    if reset_at is None:
        hi = clamped_sums(z, k, runs, hi0) if direction != "down" else zero
        lo = clamped_sums(-z, k, runs, lo0) if direction != "up" else zero
        return hi, lo
    hi, lo = np.empty(n), np.empty(n)
    first, last = runs.first.copy(), runs.last.copy()
    bh, bl = np.asarray(hi0, np.float64).copy(), np.asarray(lo0, np.float64).copy()
    width = 1024
    while len(first):
        end = np.minimum(last, first + width - 1)
        idx = _ranges(first, end)
        seg = Runs(np.repeat(np.arange(len(first)), end - first + 1))
        zz = z[idx]
        h = clamped_sums(zz, k, seg, bh) if direction != "down" else np.zeros(len(zz))
        lw = clamped_sums(-zz, k, seg, bl) if direction != "up" else np.zeros(len(zz))
        alarm = np.maximum(h, lw) >= reset_at
        stop = seg.last.copy()
        fired = np.flatnonzero(alarm)
        if len(fired):
            fr = seg.run[fired]
            keep = np.r_[True, fr[1:] != fr[:-1]]
            stop[fr[keep]] = fired[keep]
        done = seg.rank <= (stop - seg.first)[seg.run]
        hi[idx[done]], lo[idx[done]] = h[done], lw[done]
        reset = alarm[stop]
        nxt = idx[stop] + 1
        more = nxt <= last
        bh, bl = np.where(reset, 0.0, h[stop])[more], np.where(reset, 0.0, lw[stop])[more]
        first, last = nxt[more], last[more]
        step = float(np.median(stop - seg.first + 1))
        width = int(min(CHUNK, max(64, 4 * step)))
        if step < DENSE_ALARMS and len(first):
            # Alarms close together: the next LOOP_ROWS readings of each run one at a time.
            end = np.minimum(last, first + LOOP_ROWS - 1)
            bh, bl = _cusum_loop(z, k, reset_at, direction, first, end, bh, bl, hi, lo)
            nxt = end + 1
            more = nxt <= last
            first, last, bh, bl = nxt[more], last[more], bh[more], bl[more]
            width = 1024
    return hi, lo


def _cusum_by_rank(z, k, runs, hi0, lo0, direction, h) -> tuple[np.ndarray, np.ndarray]:
    """`clamped_cusum` over short runs: a loop over the rank of a reading in its run, vectorized over
    runs (a batch of a few readings per sensor: cheaper than the passes)."""
    n = len(z)
    hi, lo = np.zeros(n), np.zeros(n)
    a, b = np.asarray(hi0, np.float64).copy(), np.asarray(lo0, np.float64).copy()
    top = int(runs.length.max()) if n else 0
    for r in range(top):
        live = np.flatnonzero(runs.length > r) if r else np.arange(len(runs.first))
        i = runs.first[live] + r
        if direction != "down":
            hi[i] = np.maximum(0.0, (a[live] + z[i]) - k)
        if direction != "up":
            lo[i] = np.maximum(0.0, (b[live] - z[i]) - k)
        a[live], b[live] = hi[i], lo[i]
        if h is not None:
            fired = np.maximum(hi[i], lo[i]) >= h
            a[live], b[live] = np.where(fired, 0.0, hi[i]), np.where(fired, 0.0, lo[i])
    return hi, lo


# Readings between alarms (median over runs) below which `clamped_cusum` steps LOOP_ROWS readings of
# each run with `_cusum_loop` before it tries passes again.
DENSE_ALARMS = 2048
LOOP_ROWS = 16384


def _cusum_loop(z, k, h, direction, first, last, bh, bl, hi, lo) -> tuple[np.ndarray, np.ndarray]:
    """`clamped_cusum` with resets, reading by reading over rows first..last of each run (hi, lo filled
    in place); returns the (S+, S-) each run goes on from."""
    up, down = direction != "down", direction != "up"
    end_h, end_l = [], []
    for f, e, h0, l0 in zip(first.tolist(), last.tolist(), bh.tolist(), bl.tolist()):
        hs, ls = [], []
        a, b = h0, l0
        for v in z[f:e + 1].tolist():
            if up:
                a = (a + v) - k
                a = a if a > 0.0 else 0.0
            if down:
                b = (b - v) - k
                b = b if b > 0.0 else 0.0
            hs.append(a)
            ls.append(b)
            if (a if a >= b else b) >= h:
                a = b = 0.0
        hi[f:e + 1], lo[f:e + 1] = hs, ls
        end_h.append(a)
        end_l.append(b)
    return np.array(end_h, np.float64), np.array(end_l, np.float64)
