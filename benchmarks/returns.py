"""Benchmark of kdlib.maths.returns.kstep_returns, and the variance table of Theorem 1.

Run: ``python benchmarks/returns.py``. Prints
1. the time ratio of the literal Algorithm 1 loop (``kstep_returns_loop``) to the
   vectorised ``kstep_returns`` at B=32, T=300, K=8 with ragged lengths (median over
   repeats), and whether the target (vectorised >= 20x faster) is met;
2. the variance of the whole-sequence return G^_0 for K = 1..32 and both tails, measured on
   i.i.d. standard-normal q and v (T = 64, 20,000 samples), next to DESIGN.md's table and the
   exact values (block form: Eq. (24) minus the last v, which lies past the end).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kdlib.maths.returns import kstep_returns, kstep_returns_loop

TARGET_SPEEDUP = 20.0
DESIGN_TABLE = {
    "block": {1: 125, 2: 62, 4: 31, 8: 15, 16: 7, 32: 3},
    "algorithm1": {1: 125, 2: 64, 4: 37, 8: 29, 16: 37, 32: 65},
}


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def exact_variance(T: int, k: int, tail: str) -> int:
    """Var[G^_0] for i.i.d. unit-variance q and v: the number of q and v terms in G^_0."""
    last = T - 1
    if tail == "block":
        return 2 * (last // k + 1) - 1
    n_jump = last // k if last >= k else 0  # K-step jumps, then one-step chain from `land`
    land = n_jump * k
    return 2 * n_jump + (last - land + 1) + (last - land)


def bench_speed(B=32, T=300, k=8, repeats_loop=7, repeats_vec=200, seed=0) -> float:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, generator=gen)
    v = torch.randn(B, T, generator=gen)
    lengths = torch.randint(T // 3, T + 1, (B,), generator=gen)
    mask = torch.arange(T) < lengths[:, None]  # (B, T) ragged prefix mask

    vec = kstep_returns(q, v, mask, k)
    ref = kstep_returns_loop(q, v, mask, k)
    assert torch.allclose(vec, ref, atol=1e-4), "vectorised and literal loop disagree"
    for _ in range(10):  # warm-up
        kstep_returns(q, v, mask, k)

    t_loop = _median_time(lambda: kstep_returns_loop(q, v, mask, k), repeats_loop)
    t_vec = _median_time(lambda: kstep_returns(q, v, mask, k), repeats_vec)
    ratio = t_loop / t_vec
    print(f"kstep_returns at B={B}, T={T}, K={k}, ragged lengths {int(lengths.min())}..{int(lengths.max())}, "
          f"{torch.get_num_threads()} torch threads")
    print(f"  literal Algorithm 1 loop (kstep_returns_loop, Python floats):{t_loop * 1e3:9.3f} ms (median of {repeats_loop})")
    print(f"  vectorised (kstep_returns):                                  {t_vec * 1e3:9.3f} ms (median of {repeats_vec})")
    met = "MET" if ratio >= TARGET_SPEEDUP else "NOT MET"
    print(f"  speed-up: {ratio:.1f}x  (target >= {TARGET_SPEEDUP:.0f}x: {met})")
    return ratio


def variance_table(T=64, n=20_000, ks=(1, 2, 4, 8, 16, 32), seed=0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(n, T, generator=gen, dtype=torch.float64)
    v = torch.randn(n, T, generator=gen, dtype=torch.float64)
    mask = torch.ones(n, T, dtype=torch.bool)
    print(f"\nVar[G^_0] with i.i.d. N(0,1) q and v, T={T}, {n:,} samples (Theorem 1, Eq. (24)):")
    header = "| tail | " + " | ".join(f"K={k}" for k in ks) + " |"
    print(header)
    print("| --- " * (len(ks) + 1) + "|")
    out = {}
    for tail in ("block", "algorithm1"):
        meas = {k: float(kstep_returns(q, v, mask, k, tail=tail)[:, 0].var()) for k in ks}
        out[tail] = meas
        print(f"| {tail} measured | " + " | ".join(f"{meas[k]:.1f}" for k in ks) + " |")
        print(f"| {tail} exact | " + " | ".join(f"{exact_variance(T, k, tail)}" for k in ks) + " |")
        print(f"| {tail} DESIGN.md | " + " | ".join(f"{DESIGN_TABLE[tail].get(k, '-')}" for k in ks) + " |")
    print("block form: Eq. (24) gives 2 * (floor((T-1)/K) + 1); the exact value is 1 less because the\n"
          "last block's v lies past the end (taken as 0). Algorithm 1 is U-shaped in K "
          "(~2T/K + 2K, lowest near sqrt(T)).")
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000, help="samples for the variance table")
    args = parser.parse_args(argv)
    bench_speed()
    variance_table(n=args.samples)


if __name__ == "__main__":
    main()
