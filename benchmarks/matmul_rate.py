"""The device's dense matrix rate, measured in the same run as the stages it is compared with.

CUDA: square fp16 ``torch.matmul`` (the dtype the engines run in), timed with CUDA events.
CPU: square fp32 ``torch.matmul`` on torch's thread pool, timed with ``perf_counter``.
The rate is ``2 n^3 / t`` (2 FLOPs per multiply-add, the FLOP model's convention). The benchmark
divides by the *best* timed batch: the device's capability, least disturbed by other processes
(on a shared CPU the median can be a third lower; on a dedicated GPU the two agree).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class MatmulRate:
    device: str
    dtype: str
    n: int
    iters: int
    tflops: float  # median over timed batches
    tflops_best: float

    def to_dict(self) -> dict:
        return asdict(self)


def measure_matmul_rate(device: str | torch.device = "cpu", dtype: torch.dtype | None = None, n: int | None = None, batches: int = 5, iters: int | None = None) -> MatmulRate:
    """Median and best TFLOP/s of ``batches`` timed batches of ``iters`` n x n matmuls."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    dtype = dtype or (torch.float16 if cuda else torch.float32)
    n = n or (8192 if cuda else 2048)
    iters = iters or (20 if cuda else 2)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device, dtype)
    b = torch.randn(n, n, generator=gen).to(device, dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    flops = 2.0 * n**3 * iters
    for _ in range(3 if cuda else 1):  # warm-up (cuBLAS heuristics, clocks, thread pool)
        torch.matmul(a, b, out=out)
    rates = []
    for _ in range(batches):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            for _ in range(iters):
                torch.matmul(a, b, out=out)
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            for _ in range(iters):
                torch.matmul(a, b, out=out)
            seconds = time.perf_counter() - t0
        rates.append(flops / seconds / 1e12)
    del a, b, out
    return MatmulRate(str(device), str(dtype).replace("torch.", ""), n, iters, statistics.median(rates), max(rates))
