"""The ``tensorrt`` backend: published engines (``mimic.engine``) behind the runtime's Backend interface.

Every engine is loaded through the store's checks (manifest vs this machine's TensorRT and GPU,
plan size and sha256) *before* deserialization, and all runners share one user-managed
device-memory block (the pipeline runs its stages one after another).

Deep-feature caching: the engines ``unet_features`` and ``unet_shallow`` (built by ``mimic
build-engines`` from the graphs at ``mimic.spec.GRAPH_CACHE_DEPTH``) are never preloaded: each is
deserialized on its stage's first run. :meth:`TensorRTBackend.cache_depths` is ``(1,)`` when the
folder has both and ``()`` otherwise (an older engine folder serves every job that does not cache).
Weight memory of a caching job: an engine holds the weights it was built with, so next to the
preloaded ``unet`` engine ``unet_features`` adds a second full copy of the UNet weights (~3 GB fp16
for the released MimicMotion UNet) and ``unet_shallow`` a small one (~0.12 GB fp16: conv_in, the
first down block's layers, the last up block, the embeddings and the head, 4% of the parameters);
their activations share the one block. :meth:`TensorRTBackend.release` unloads an engine (e.g. the
plain ``unet`` while only caching jobs run). The torch backend's ``cache_depth`` feed is dropped
before an engine sees it (an engine checks its feeds strictly), after
:func:`mimic.runtime.backend_ort.check_cache_depth`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from mimic.engine.gpu import require_gpu
from mimic.engine.runner import SharedDeviceMemory, TrtRunner, open_engine
from mimic.engine.store import EngineStore, build_hint
from mimic.errors import EngineError
from mimic.runtime.backend_ort import check_cache_depth
from mimic.spec import CACHE_STAGES, GRAPH_CACHE_DEPTH, STAGE_NAMES
from mimic.spec import TensorName as N


class TensorRTBackend:
    """``run(stage, feeds)`` on TensorRT engines from an :class:`EngineStore` folder.

    ``preload`` loads ``stages`` (default: the pipeline stages found in the store, without the
    deep-feature caching pair) at start, so the shared device-memory block is sized once; other
    stages load on first use.
    ``shared_memory=False`` gives each engine its own block (for callers that overlap stages on
    several streams; with one shared block such runs are serialized).

    Streams: each engine enqueues on a non-default stream of its own; ``run(stage, feeds, stream)``
    takes the caller's stream (default: torch's current stream), waits there for the feeds with an
    event and hands the outputs back with an event, so they are ready for the caller's next work
    on that stream without any host synchronisation (``mimic.engine.runner``).
    ``close`` waits for each engine's in-flight work before its contexts are destroyed and only
    then frees the shared block.
    """

    name = "tensorrt"

    def __init__(
        self,
        store_dir: str | Path,
        device: str | torch.device = "cuda",
        stages: Iterable[str] | None = None,
        preload: bool = True,
        use_cuda_graph: bool = False,
        strict_gpu_name: bool = True,
        shared_memory: bool = True,
    ):
        device = torch.device(device)
        if device.type != "cuda":
            raise EngineError(f"the tensorrt backend runs on a CUDA device, not {device}")
        require_gpu("the tensorrt backend")  # before any TensorRT runtime object exists
        self.device = torch.device("cuda", device.index if device.index is not None else 0)
        self.store = EngineStore(store_dir)
        if not self.store.root.is_dir():
            raise EngineError(f"engine folder {self.store.root} does not exist; {build_hint(self.store.root, verb='build engines')}")
        self.use_cuda_graph = use_cuda_graph
        self.strict_gpu_name = strict_gpu_name
        self.shared_memory = shared_memory
        self.memory = SharedDeviceMemory(self.device)
        self._memories: list[SharedDeviceMemory] = [self.memory]
        self._runners: dict[str, TrtRunner] = {}
        if preload:
            # Default: the pipeline's stages that are published (DWPose and others load on first use).
            present = set(self.store.stages())
            wanted = list(stages) if stages is not None else [s for s in STAGE_NAMES if s in present and s not in CACHE_STAGES]
            for stage in wanted:
                self.runner(stage)

    def runner(self, stage: str) -> TrtRunner:
        r = self._runners.get(stage)
        if r is not None:
            return r
        with torch.cuda.device(self.device):
            opened = open_engine(self.store, stage, self.device.index or 0, strict_gpu_name=self.strict_gpu_name)
            memory = self.memory
            if not self.shared_memory:
                memory = SharedDeviceMemory(self.device)
                self._memories.append(memory)
            r = TrtRunner(stage, opened.engine, opened.trt, memory, device=self.device, use_cuda_graph=self.use_cuda_graph, keepalive=opened.keepalive)
        self._runners[stage] = r
        return r

    @property
    def device_memory_bytes(self) -> int:
        """Activation memory reserved for all engines (one shared block unless ``shared_memory=False``)."""
        return sum(m.required for m in self._memories)

    def run(self, stage: str, feeds: dict[str, torch.Tensor], stream: "torch.cuda.Stream | None" = None) -> dict[str, torch.Tensor]:
        if N.CACHE_DEPTH in feeds:
            check_cache_depth(stage, feeds)
            feeds = {k: v for k, v in feeds.items() if k != N.CACHE_DEPTH}
        return self.runner(stage).run(feeds, stream=stream)

    def cache_depths(self) -> tuple[int, ...]:
        """The deep-feature cache depths this backend runs: the engines' one depth when the folder
        has both cached-step engines, else none (nothing is loaded to answer)."""
        return (GRAPH_CACHE_DEPTH,) if set(CACHE_STAGES) <= set(self.store.stages()) else ()

    def release(self, stage: str) -> None:
        """Unload ``stage``'s engine after its in-flight work; its next run loads it again."""
        r = self._runners.pop(stage, None)
        if r is not None:
            r.close()

    def synchronize(self) -> None:
        """Wait for everything the engines enqueued."""
        for r in self._runners.values():
            r.synchronize()

    def close(self) -> None:
        self.synchronize()  # in-flight work first: contexts and the block are released after it
        for r in self._runners.values():
            r.close()
        self._runners.clear()
        for m in self._memories:
            m.free()
