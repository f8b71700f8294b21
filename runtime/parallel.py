"""One job on several devices: the windows of every denoising step split over workers, exactly.

Within a step every window reads the same step-k latents, and the step's result is the
tent-weighted sum of the windows' guided outputs followed by one Euler update. So each worker
(one backend on one device: ``--device cuda:0,cuda:1`` or, on the CPU, ``cpu,cpu``) computes its
windows' contributions into a partial accumulator, the main thread sums the partials, divides by the
weights and applies the Euler step once, and the next step's latents go back to the workers.

Exactness. Floating-point addition is commutative but not associative, so the sum of a frame's
contributions may only be regrouped where that cannot change a bit:

* a frame covered by one or two windows: ``0 + a + b`` equals ``(0 + a) + (0 + b)`` exactly;
* a frame whose windows all belong to one worker: that worker adds them in window order, as one
  worker would;
* any other frame (covered by three or more windows of different workers: always the reference
  slot 0, which every window contains, and with a large overlap some tail frames) is not summed by
  the workers: they return those frames' contributions per window and the main thread adds them in
  window order.

So the fused latents, and the frames, are bit-identical to a one-worker run whenever the workers'
backends compute the same bits as the single one (the same device model and library); on mixed GPU
models the difference is that of the UNet kernels, not of the fusion.

Assignment: windows are split into contiguous, balanced blocks (worker k gets windows
``[k*n/K, (k+1)*n/K)``), deterministic for a device list; contiguous blocks keep each worker's
frames a contiguous range (plus frame 0), which is all it receives per step.

Communication: one process, one thread per worker; tensors move between devices with
``Tensor.to(device)`` (peer-to-peer over NVLink/PCIe when the GPUs allow it, through the host
otherwise). Per step a worker receives the latents of its frames and returns a partial of the same
size; on one device (``cpu,cpu``) nothing is copied. The backends release the GIL while they compute
(torch kernels, onnxruntime ``run``, TensorRT ``execute_async``), so the threads overlap.

Decode is split too: the temporal decoder's chunks are independent, so chunk n is decoded by
worker ``n mod K`` while the frames are still yielded in order.

The guidance interval needs nothing here: every worker's ``WindowStepper`` decides per step (from
the shared plan) whether a window's call is the CFG pair or the conditional half, so all workers
agree, and the UNet calls each one counted are summed into the job's ``calls``.
"""
from __future__ import annotations

import queue
import threading
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from mimic.runtime.backend_api import Backend
from mimic.runtime.decode import decode_chunk
from mimic.runtime.denoise import (
    Conditioning,
    DenoisePlan,
    StepHooks,
    WindowStepper,
    device_index,
    finish_step,
    window_counts,
)


def assign_windows(num_windows: int, num_workers: int) -> list[list[int]]:
    """Contiguous balanced blocks of window indices, one per worker (the first blocks one larger)."""
    if num_workers < 1:
        raise ValueError("at least one worker")
    base, extra = divmod(num_windows, num_workers)
    blocks, start = [], 0
    for k in range(num_workers):
        size = base + (1 if k < extra else 0)
        blocks.append(list(range(start, start + size)))
        start += size
    return blocks


@dataclass(frozen=True)
class WorkerShare:
    """What one worker sums: its windows, its frames (sorted, global indices) and, per window, the
    local positions it adds into its partial and the positions it returns to the main thread."""

    windows: tuple[int, ...]
    frames: tuple[int, ...]
    local: dict  # window j -> local positions of its frames in ``frames`` (list[int])
    keep: dict  # window j -> positions within the window summed by the worker (list[int])
    hand: dict  # window j -> positions within the window handed to the main thread (list[int])


def plan_shares(windows: Sequence[Sequence[int]], blocks: list[list[int]]) -> list[WorkerShare]:
    owner = {j: k for k, block in enumerate(blocks) for j in block}
    covering: dict[int, list[int]] = {}
    for j, idx in enumerate(windows):
        for f in idx:
            covering.setdefault(f, []).append(j)
    # frames whose sum the workers may not regroup: >= 3 windows, not all of one worker
    ordered = {f for f, js in covering.items() if len(js) >= 3 and len({owner[j] for j in js}) > 1}
    shares = []
    for block in blocks:
        frames = sorted({f for j in block for f in windows[j]})
        where = {f: p for p, f in enumerate(frames)}
        local, keep, hand = {}, {}, {}
        for j in block:
            local[j] = [where[f] for f in windows[j]]
            keep[j] = [p for p, f in enumerate(windows[j]) if f not in ordered]
            hand[j] = [p for p, f in enumerate(windows[j]) if f in ordered]
        shares.append(WorkerShare(tuple(block), tuple(frames), local, keep, hand))
    return shares


class _Cancelled(Exception):
    pass


class _SerialPoses:
    """Pose sources draw into shared buffers or read a video: one ``get`` at a time across workers."""

    def __init__(self, inner):
        self.inner, self.lock = inner, threading.Lock()
        self.height, self.width = inner.height, inner.width

    def __len__(self) -> int:
        return len(self.inner)

    def get(self, indices):
        with self.lock:
            return self.inner.get(indices)


class _Worker:
    """One backend and its thread; ``step`` computes the partial of its windows for step ``i``.

    The share's index lists are made device tensors once (a list index costs a host sync per use):
    ``frames`` on the main device (it gathers the worker's latents and adds its partial there), the
    per-window positions on the worker's device."""

    def __init__(self, k: int, backend: Backend, share: WorkerShare, stepper: WindowStepper, main: torch.device):
        self.backend, self.share, self.stepper = backend, share, stepper
        self.device = backend.device
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"mimic-worker{k}-{backend.device}")
        self.frames = device_index([share.frames], main)[0]
        js = share.windows
        lists = [share.local[j] for j in js] + [[share.local[j][p] for p in share.keep[j]] for j in js]
        lists += [share.keep[j] for j in js] + [share.hand[j] for j in js]
        index, n = device_index(lists, self.device), len(js)
        # per window j: its frames' positions in the partial, those of its kept frames, and its kept
        # and handed positions within the window
        self.local, self.keep_local, self.keep, self.hand = (dict(zip(js, index[m * n:(m + 1) * n])) for m in range(4))

    def submit(self, fn, *args) -> Future:
        return self.pool.submit(self._in_device, fn, *args)

    def _in_device(self, fn, *args):
        """Run on this worker's thread with its device current and its stream (if any) current."""
        if self.device.type == "cuda":
            with torch.cuda.device(self.device), torch.cuda.stream(self.stepper.stream), torch.inference_mode():
                return fn(*args)
        with torch.inference_mode():
            return fn(*args)

    def step(self, latents: torch.Tensor, i: int, windows, done: "queue.Queue", stop: threading.Event):
        """-> (partial over ``share.frames``, {window j: contribution at its handed positions})."""
        share = self.share
        local_latents = latents if latents.device == self.device else latents[:, self.frames].to(self.device)
        same = local_latents is latents
        partial = torch.zeros((1, len(share.frames), *latents.shape[2:]), dtype=latents.dtype, device=self.device)
        handed = {}
        for j in share.windows:
            if stop.is_set():
                raise _Cancelled()
            idx = self.stepper.index[j]
            contribution = self.stepper.contribution(local_latents, idx if same else self.local[j], idx, i, j)
            if len(share.keep[j]) == len(windows[j]):
                partial[:, self.local[j]] += contribution
            else:
                partial[:, self.keep_local[j]] += contribution[:, self.keep[j]]
                handed[j] = contribution[:, self.hand[j]]
            done.put(j)
        if self.device.type == "cuda":  # the main thread reads the partial next
            torch.cuda.current_stream(self.device).synchronize()
        return partial, handed

    def close(self) -> None:
        self.pool.shutdown(wait=True)


@torch.inference_mode()
def denoise_parallel(backends: Sequence[Backend], plan: DenoisePlan, cond: Conditioning, poses, latents: torch.Tensor,
                     hooks: StepHooks | None = None, stream=None, calls: Counter | None = None) -> torch.Tensor:
    """``denoise`` with the windows of each step split over ``backends`` (the first one is the main
    device: it holds the latents, sums the partials and applies the Euler step). Same result, bit
    for bit, as ``denoise(backends[0], ...)`` when the backends compute the same bits.
    ``calls``: a Counter that receives every worker's UNet calls, by batch size (as ``denoise``'s)."""
    main = backends[0].device
    windows = [list(w) for w in plan.windows]
    blocks = assign_windows(len(windows), len(backends))
    used = [(b, blk) for b, blk in zip(backends, blocks) if blk]  # more workers than windows: some idle
    shares = plan_shares(windows, [blk for _, blk in used])
    num_frames = latents.shape[1]
    poses = _SerialPoses(poses)
    workers = [
        _Worker(k, b, share, WindowStepper(b, plan, cond, poses, num_frames, stream if b.device == main else None), main)
        for k, ((b, _), share) in enumerate(zip(used, shares))
    ]
    hand = {j: [windows[j][p] for p in positions] for share in shares for j, positions in share.hand.items() if positions}
    hand_frames = dict(zip(hand, device_index(hand.values(), main)))  # global frames, on the main device
    count = window_counts(plan, num_frames, main)
    acc = torch.empty(latents.shape, dtype=plan.dtype, device=main)
    total, n = plan.total_calls, len(windows)
    stop = threading.Event()
    try:
        for i in range(plan.start_step, plan.num_steps):
            if main.type == "cuda":  # the latents are complete before other threads and devices read them
                torch.cuda.synchronize(main)
            done: queue.Queue = queue.Queue()
            futures = [w.submit(w.step, latents, i, windows, done, stop) for w in workers]
            finished = 0
            try:
                while finished < n:
                    try:
                        done.get(timeout=0.05)
                    except queue.Empty:
                        failed = next((f for f in futures if f.done() and f.exception() is not None), None)
                        if failed is not None:
                            failed.result()
                        continue
                    finished += 1
                    if hooks is not None:
                        hooks.on_progress(i * n + finished, total)
                        hooks.poll()
                results = [f.result() for f in futures]
            except BaseException:
                stop.set()
                for f in futures:
                    try:
                        f.result()
                    except BaseException:
                        pass
                raise
            acc.zero_()
            for w, (partial, _) in zip(workers, results):
                acc[:, w.frames] += partial.to(main)
            handed = {j: piece for _, pieces in results for j, piece in pieces.items()}
            for j in sorted(handed):  # window order: as one worker adds them
                acc[:, hand_frames[j]] += handed[j].to(main)
            latents, acc = finish_step(acc, latents, count, plan, i), latents
            if hooks is not None:
                hooks.on_step_end(i + 1, plan.num_steps, latents)
    finally:
        for w in workers:
            w.close()
        if calls is not None:
            for w in workers:
                calls.update(w.stepper.calls)
    return latents


def decode_parallel(backends: Sequence[Backend], latents: torch.Tensor, scaling_factor: float, chunk: int,
                    stream=None) -> Iterator[tuple[int, np.ndarray]]:
    """``decode.decode_frames`` with chunk n decoded on backend ``n mod K``; yielded in order, at
    most K chunks in flight (host memory stays bounded)."""
    main = backends[0].device
    z = latents.flatten(0, 1) / scaling_factor
    if main.type == "cuda":  # complete before the workers' threads (their own streams) read it
        torch.cuda.synchronize(main)
    starts = list(range(0, z.shape[0], chunk))
    pools = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"mimic-decode{k}-{b.device}") for k, b in enumerate(backends)]

    def run(k: int, s: int):
        b = backends[k]
        if b.device.type == "cuda":
            # the main device's chunks go on the job stream: current here, so that everything
            # decode_chunk enqueues after the decoder (checks, uint8, copy to the host) waits for it
            job = stream if b.device == main else None
            with torch.cuda.device(b.device), torch.cuda.stream(job), torch.inference_mode():
                out = decode_chunk(b, z[s : s + chunk].to(b.device), s, job)
                torch.cuda.current_stream(b.device).synchronize()
                return out
        with torch.inference_mode():
            return decode_chunk(b, z[s : s + chunk].to(b.device), s, None)

    pending: list[tuple[int, Future]] = []
    try:
        nxt = 0
        for _ in starts:
            while len(pending) < len(backends) and nxt < len(starts):
                pending.append((starts[nxt], pools[nxt % len(backends)].submit(run, nxt % len(backends), starts[nxt])))
                nxt += 1
            start, fut = pending.pop(0)
            yield start, fut.result()
    finally:
        for _, fut in pending:
            fut.cancel()
        for p in pools:
            p.shutdown(wait=True)
