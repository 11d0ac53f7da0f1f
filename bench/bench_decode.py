"""Micro-benchmark of the decode path: JSON single-reading and 60-sample messages, HJ 212 frames, and
line-protocol encoding of 5,000-row batches; and the decode worker's whole job per chunk (`decode_chunk`:
decode, dead letters, line protocol) for chunks of 1,000 single-reading messages (issue 17's stream, one in
50 a bad payload) and of 100 60-sample messages. No broker or database involved.

Run: .venv/bin/python bench/bench_decode.py [--seconds 2]
Ends with: RESULT bench_decode single_msgs_s=.. batch60_msgs_s=.. batch60_rows_s=.. hj212_msgs_s=..
           many_single_msgs_s=.. many_batch60_rows_s=.. chunk_single_msgs_s=.. chunk_batch60_rows_s=..
           chunk_single_msgs_s_worker_gc=.. chunk_batch60_rows_s_worker_gc=.. lineproto_rows_s=.. rss_growth_mb=..
(the `_worker_gc` figures: the decode_chunk cases again with the decode worker's collector settings, tune_gc)
"""

from __future__ import annotations

import argparse
import resource
import time
from datetime import datetime, timedelta

import numpy as np

from config import load_config
from core import ReadingBatch
from ingest.codecs.hj212 import build_noise_frame
from ingest.codecs.json_envelope import encode_batch
from ingest.decode_worker import decode_chunk, tune_gc
from ingest.decoder import Decoder
from ingest.lineproto import encode


def rate(fn, items, seconds: float) -> float:
    """Calls of fn per second: the best of repeated passes over `items` within `seconds`.

    Best-of rather than mean, so that other processes on a shared machine do not decide the figure.
    """
    best, t_end = 0.0, time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        for it in items:
            fn(it)
        t1 = time.perf_counter()
        best = max(best, len(items) / (t1 - t0))
        if t1 >= t_end:
            return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=2.0, help="measuring time per case")
    args = ap.parse_args()
    cfg = load_config("config")
    dec = Decoder(cfg)
    now_ms = int(time.time() * 1000)
    recv_ns = now_ms * 1_000_000
    noise = [d for d in cfg.devices if d.kind == "noise" and d.protocol == "json"]
    sample = {"leq": 61.8, "lmax": 78.2, "lmin": 52.0, "l10": 65.1, "l50": 60.2, "l90": 55.3, "flag": "N"}
    singles = [
        (f"city/xm/noise/{d.site}/{d.id}/data", encode_batch(d.id, d.site, "noise", [(now_ms - i * 1000, sample)], i, 1, now_ms))
        for i, d in enumerate(noise * 20)
    ]
    batches = [
        (f"city/xm/noise/{d.site}/{d.id}/data",
         encode_batch(d.id, d.site, "noise", [(now_ms - 60_000 * (j + i), sample) for j in range(60)], i, 60, now_ms))
        for i, d in enumerate(noise)
    ]
    hj = [d for d in cfg.devices if d.protocol == "hj212"]
    bj = datetime.utcfromtimestamp(now_ms // 1000) + timedelta(hours=8)
    frames = [
        (f"city/xm/hj212/{d.mn_or_id}", build_noise_frame(d.mn_or_id, bj - timedelta(seconds=i), {"LA": 63.4, "Leq": 61.8, "LMx": 78.2}, {}))
        for i, d in enumerate(hj * 20)
    ]
    for topic, payload in singles + batches + frames:
        assert not dec.decode(topic, payload, recv_ns).rejects, (topic, dec.decode(topic, payload, recv_ns).rejects)

    # Peak RSS after a warm-up pass and after every measurement: the decode path must not accumulate.
    rate(lambda m: dec.decode(m[0], m[1], recv_ns), singles + batches + frames, 0.2)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    single = rate(lambda m: dec.decode(m[0], m[1], recv_ns), singles, args.seconds)
    batch = rate(lambda m: dec.decode(m[0], m[1], recv_ns), batches, args.seconds)
    frame = rate(lambda m: dec.decode(m[0], m[1], recv_ns), frames, args.seconds)

    # decode_many: the collector's chunked path (1,000 messages per call).
    chunk = [(t, p, recv_ns) for t, p in (singles * 10)[:1000]]
    many_single = rate(lambda c: dec.decode_many(c), [chunk], args.seconds) * len(chunk)
    chunk60 = [(t, p, recv_ns) for t, p in (batches * 10)[:100]]
    many_batch = rate(lambda c: dec.decode_many(c), [chunk60], args.seconds) * len(chunk60)

    # decode_chunk: what the decode worker does with each chunk it is sent (rows, dead letters, line protocol).
    # A pass is many chunks, so that the garbage collector's work (amortized over chunks) is in every pass.
    tb = [(f"city/xm/noise/{d.site}/{d.id}/data",
           b'{"ts":%d,"values":{"leq":61.8,"lmax":78.2,"lmin":52.0,"l90":55.3}}' % (now_ms - i))
          for i, d in enumerate((noise * 1000)[:1000])]
    tb[::50] = [(t, b'{"ts":%d,"values":{"leq":"x"}}' % now_ms) for t, _ in tb[::50]]  # dead-lettered
    chunk_tb = [(t, p, recv_ns) for t, p in tb]
    assert len(decode_chunk(dec, chunk_tb, 4096, cfg).deadletters) == 20
    chunk_single = rate(lambda c: decode_chunk(dec, c, 4096, cfg), [chunk_tb] * 10, args.seconds) * len(chunk_tb)
    chunk_batch = rate(lambda c: decode_chunk(dec, c, 4096, cfg), [chunk60] * 20, args.seconds) * len(chunk60)
    # The same with the decode worker's collector settings (decode_worker.tune_gc), measured last: they stay.
    tune_gc()
    chunk_single_gc = rate(lambda c: decode_chunk(dec, c, 4096, cfg), [chunk_tb] * 10, args.seconds) * len(chunk_tb)
    chunk_batch_gc = rate(lambda c: decode_chunk(dec, c, 4096, cfg), [chunk60] * 20, args.seconds) * len(chunk60)

    n = 5000
    rng = np.random.default_rng(1)
    big = ReadingBatch(
        rng.integers(0, len(noise), n).astype(np.int32), now_ms * 1_000_000 - np.arange(n, dtype=np.int64) * 10**9,
        # 0.1 dB resolution, as monitors report
        {k: np.round(rng.normal(v, 3.0, n), 1) for k, v in sample.items() if k != "flag"},
    )
    lp = rate(lambda b: encode(b, cfg), [big], args.seconds) * n
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0
    print(f"peak RSS growth over the run: {rss_growth:.1f} MB")
    print(f"single-reading JSON messages: {single:,.0f} msg/s")
    print(f"60-sample JSON messages:      {batch:,.0f} msg/s = {batch * 60:,.0f} rows/s")
    print(f"decode_many, single-reading:  {many_single:,.0f} msg/s")
    print(f"decode_many, 60-sample:       {many_batch:,.0f} msg/s = {many_batch * 60:,.0f} rows/s")
    print(f"decode_chunk, single-reading: {chunk_single:,.0f} msg/s (1,000-message chunks, 2 % bad)")
    print(f"decode_chunk, 60-sample:      {chunk_batch:,.0f} msg/s = {chunk_batch * 60:,.0f} rows/s")
    print(f"  the same as the decode worker runs them (tune_gc): single-reading {chunk_single_gc:,.0f} msg/s "
          f"(x{chunk_single_gc / chunk_single:.2f}), 60-sample {chunk_batch_gc * 60:,.0f} rows/s "
          f"(x{chunk_batch_gc / chunk_batch:.2f})")
    print(f"HJ 212 frames:                {frame:,.0f} msg/s")
    print(f"line protocol (5,000 rows):   {lp:,.0f} rows/s")
    print(f"RESULT bench_decode single_msgs_s={single:.0f} batch60_msgs_s={batch:.0f} batch60_rows_s={batch * 60:.0f} "
          f"hj212_msgs_s={frame:.0f} many_single_msgs_s={many_single:.0f} many_batch60_rows_s={many_batch * 60:.0f} "
          f"chunk_single_msgs_s={chunk_single:.0f} chunk_batch60_rows_s={chunk_batch * 60:.0f} "
          f"chunk_single_msgs_s_worker_gc={chunk_single_gc:.0f} chunk_batch60_rows_s_worker_gc={chunk_batch_gc * 60:.0f} "
          f"lineproto_rows_s={lp:.0f} rss_growth_mb={rss_growth:.1f}")


if __name__ == "__main__":
    main()
