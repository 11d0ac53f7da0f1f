"""Spectral residual (Ren et al., "Time-Series Anomaly Detection Service at Microsoft", KDD 2019) as a
streaming univariate detector: per sensor a window of the last `window` values; each reading is judged
by the saliency of the newest point of that window (issue 16, item 2).

The saliency map of a window x is |IFFT(exp(R + iP))| with P the phase of FFT(x), R = L - mean_q(L) the
spectral residual of the log amplitude L = log|FFT(x)| (mean_q: a trailing mean over `mag_window`
frequencies). Before the transform the window is extended by `extend` copies of an estimated next point
(the paper's section 4.2: the newest point then sits inside the window, where the saliency is
meaningful, instead of on its edge). The score is the paper's O(x) = (S(x) - mean_z S) / mean_z S: the
newest point's saliency against the mean saliency of the `score_window` points before it in the same
map (the window's mean is removed before the transform: the score does not depend on the offset).
An isolated spike or dip, a sudden level change, or a burst of a new frequency stands out; a
smooth trend or a stationary cycle does not. The window lives in a per-sensor array (bounded state).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from config.base import Severity
from detectors.base import Eval, levels_above, severity_code
from detectors.generic import FieldDetector, FieldParams

# Frequencies whose amplitude is below this share of the window's largest amplitude carry nothing but
# rounding (a constant window's are 1e-16 of its mean): their residual is 0 and they are dropped from
# the inverse transform, as in Microsoft's reference implementation (`EPS` there, absolute).
REL_EPS = 1e-9
TINY = 1e-300
# Windows scored per FFT call in a long series (bounds the transient memory: about 10 MB by default).
CHUNK = 8192


class SpectralResidualParams(FieldParams):
    window: int = Field(64, ge=8, le=1024)
    mag_window: int = Field(3, ge=1, le=64)
    score_window: int = Field(21, ge=1, le=1023)
    extend: int = Field(5, ge=0, le=64)
    grad_points: int = Field(5, ge=1, le=64)
    # The paper's tau is 3 in its batch setting. Judging every reading as the newest point of its window,
    # 3 lets about 1 % of the readings of a noisy daily cycle or of white noise through; 5 about 0.1-0.2 %
    # (and still catches a 6-sigma spike on that cycle in about 60 % of the cases: a cheap first cut).
    limit: float = Field(5.0, gt=0)
    severity: Severity = "yellow"
    hysteresis: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _sizes(self) -> SpectralResidualParams:
        if self.score_window >= self.window:
            raise ValueError(f"score_window ({self.score_window}) must be below window ({self.window})")
        if self.grad_points + 2 > self.window:
            raise ValueError(f"grad_points ({self.grad_points}) must be at most window - 2 ({self.window - 2})")
        if self.mag_window > self.window:
            raise ValueError(f"mag_window ({self.mag_window}) must not exceed window ({self.window})")
        return self


def extended(win: np.ndarray, extend: int, m: int) -> np.ndarray:
    """Rows of windows (n, w) with `extend` copies of an estimated next point appended (Ren et al.
    eq. 6-7, as Microsoft's implementation computes it: from the m + 1 points before the newest, so that
    a spike in the newest point does not carry itself into the extension): with y_0 .. y_m those points,
    the estimate is y_1 + the sum over i < m of (y_m - y_i) / (m - i)."""
    if extend == 0:
        return win
    n, w = win.shape
    y = win[:, w - m - 2:w - 1]
    est = y[:, 1] + ((y[:, m:m + 1] - y[:, :m]) / (m - np.arange(m, dtype=np.float64))).sum(axis=1)
    return np.concatenate([win, np.repeat(est[:, None], extend, axis=1)], axis=1)


def trailing_mean(a: np.ndarray, q: int) -> np.ndarray:
    """Mean of each element and the q - 1 before it along axis 1 (fewer at the start): Microsoft's
    `average_filter`."""
    c = np.cumsum(a, axis=1)
    out = c.copy()
    out[:, q:] = c[:, q:] - c[:, :-q]
    k = np.minimum(np.arange(1, a.shape[1] + 1), q)
    return out / k


def saliency(x: np.ndarray, q: int) -> np.ndarray:
    """The saliency map of each row of x (n, w): |IFFT(exp(L - mean_q L + iP))|."""
    f = np.fft.fft(x, axis=1)
    mag = np.abs(f)
    eps = REL_EPS * mag.max(axis=1, keepdims=True) + TINY
    small = mag <= eps
    logm = np.where(small, 0.0, np.log(np.where(small, 1.0, mag)))
    spec = np.exp(logm - trailing_mean(logm, q))
    f = np.where(small, 0.0, f * (spec / np.where(small, 1.0, mag)))
    return np.abs(np.fft.ifft(f, axis=1))


def sr_score(win: np.ndarray, p: SpectralResidualParams) -> np.ndarray:
    """Score of the newest point of each full window (n, window): (S_n - mean S) / mean S over the
    `score_window` points before it. A flat map (a constant or perfectly regular window) scores 0."""
    if len(win) == 0:
        return np.zeros(0)
    w = p.window
    x = extended(win, p.extend, p.grad_points)
    # The window's mean is removed first: the score is then the same whatever the offset (a gas sensor
    # at 300 kPa, one at 2.5 kPa), and the zero-frequency term, which would dominate the trailing mean
    # of the lowest frequencies' log amplitudes, drops out (Microsoft's implementation keeps it).
    s = saliency(x - win.mean(axis=1, keepdims=True), p.mag_window)
    last = s[:, w - 1]
    ref = s[:, w - 1 - p.score_window:w - 1].mean(axis=1)
    scale = np.maximum(ref, REL_EPS * s.max(axis=1) + TINY)
    return (last - ref) / scale


class SpectralResidual(FieldDetector):
    """spectral_residual: the saliency score of each reading as the newest point of the sensor's last
    `window` valid values (see the module docstring); alarm above `limit`.

    Judged once the sensor has `window` valid values (the warm-up: `window` readings); a missing or
    flagged reading is not judged and leaves the window as it is. Every valid reading enters the
    window, alarm or not: a new level is learned within one window. State per sensor: the window
    (8 window bytes) and the level: 8 window + 1 bytes (513 B by default)."""

    type = "spectral_residual"
    window = "sr"
    Params = SpectralResidualParams
    params: SpectralResidualParams
    # Every valid reading enters the window whatever its verdict: a reading's window is just the
    # sensor's last valid values, so a long history is scored in one pass of sliding windows.
    series = True

    def setup(self, shared):
        super().setup(shared)
        p = self.params
        self.window = f"{p.window} readings"
        self.last_ = np.full((self.n, p.window), np.nan)   # the last `window` valid values, oldest first

    def evaluate(self, view) -> Eval:
        p = self.params
        x, ok = self.read(view)
        loc = view.loc
        win = np.concatenate([self.last_[loc][:, 1:], x[:, None]], axis=1)
        full = ok & np.isfinite(win[:, 0])
        score = np.full(len(x), np.nan)
        idx = np.flatnonzero(full)
        if len(idx):
            score[idx] = sr_score(win[idx], p)
        okx = np.flatnonzero(ok)
        if len(okx):
            self.last_[loc[okx]] = win[okx]
        raw, held, limits = levels_above(score, [(severity_code(p.severity), p.limit)], p.hysteresis)
        return Eval(full, raw, held, x, limits, score)

    def evaluate_series(self, view) -> Eval:
        """`evaluate` over any number of rows per sensor (each sensor's rows contiguous, in time order):
        each sensor's stored window followed by its valid values is one sequence, and each valid row's
        window is the `window` values of that sequence ending at it."""
        p = self.params
        w = p.window
        x, ok = self.read(view)
        loc = view.loc
        n = len(x)
        score = np.full(n, np.nan)
        if n == 0:
            levels = levels_above(score, [(severity_code(p.severity), p.limit)], p.hysteresis)
            return Eval(np.zeros(0, bool), *levels[:2], x, levels[2], score)
        starts = np.flatnonzero(np.r_[True, loc[1:] != loc[:-1]])
        sens = loc[starts]
        block = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, n]))
        cum = np.cumsum(ok)
        before = cum[starts] - ok[starts]
        valid = np.add.reduceat(ok.astype(np.int64), starts)
        size = w + valid
        begin = np.r_[0, np.cumsum(size)[:-1]]
        seq = np.empty(int(size.sum()))
        seq[(begin[:, None] + np.arange(w)).ravel()] = self.last_[sens].ravel()
        pos = begin[block] + w + (cum - 1 - before[block])
        seq[pos[ok]] = x[ok]
        windows = np.lib.stride_tricks.sliding_window_view(seq, w)
        first = np.where(ok, pos - w + 1, 0)
        full = ok & np.isfinite(seq[first])
        idx = np.flatnonzero(full)
        for a in range(0, len(idx), CHUNK):
            part = idx[a:a + CHUNK]
            score[part] = sr_score(windows[first[part]], p)
        end = begin + size
        self.last_[sens] = seq[(end[:, None] - w + np.arange(w))]
        raw, held, limits = levels_above(score, [(severity_code(p.severity), p.limit)], p.hysteresis)
        return Eval(full, raw, held, x, limits, score)
