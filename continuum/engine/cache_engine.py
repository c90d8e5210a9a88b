"""The KV tensors: one K and one V tensor per layer in the flash layout
``[num_blocks, block_size, num_kv_heads, head_size]``, bound to the model's Attention layers."""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Collection

import numpy as np
import torch
from torch import nn

from continuum import ops
from continuum.engine.prefault import prefault_in_background
from continuum.layers.attention import attention_layers

if TYPE_CHECKING:
    from continuum.scheduler.output import SchedulerOutput

logger = logging.getLogger(__name__)

DEFAULT_CPU_KV_BYTES = 2 * 2**30
_ALIGN = 64


def bytes_per_block(model: nn.Module, block_size: int, dtype: torch.dtype) -> int:
    layers = attention_layers(model)
    elem = torch.tensor([], dtype=dtype).element_size()
    return sum(2 * block_size * a.num_kv_heads * a.head_size * elem for a in layers)


def num_blocks_for(model: nn.Module, block_size: int, dtype: torch.dtype, device: torch.device,
                   kv_cache_memory: int | None, gpu_memory_utilization: float) -> int:
    """Blocks that fit the byte budget; on CUDA without a budget, the given fraction of total
    memory minus what is already in use (weights, activations)."""
    per_block = bytes_per_block(model, block_size, dtype)
    if kv_cache_memory is None:
        if device.type == "cuda":
            free, total = torch.cuda.mem_get_info(device)
            used = total - free
            kv_cache_memory = int(total * gpu_memory_utilization) - used
            if kv_cache_memory <= 0:
                raise RuntimeError(
                    f"no GPU memory left for the KV cache: {used / 2**30:.1f} GiB of {total / 2**30:.1f} GiB "
                    f"in use, gpu_memory_utilization={gpu_memory_utilization}")
        else:
            kv_cache_memory = DEFAULT_CPU_KV_BYTES
    n = kv_cache_memory // per_block
    if n < 1:
        raise RuntimeError(f"kv_cache_memory={kv_cache_memory} bytes holds no block "
                           f"(one block of {block_size} tokens needs {per_block} bytes)")
    return int(n)


def zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``torch.zeros``, but on the CPU without touching the memory: numpy's ``zeros`` is a
    ``calloc``, whose large blocks are fresh pages the OS hands out zeroed on first use.
    Writing 2 GiB of zeros up front cost 1.5-6 s of a start on the shared 2-core machine."""
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    nbytes = math.prod(shape) * torch.tensor([], dtype=dtype).element_size()
    buf = np.zeros(nbytes + _ALIGN, dtype=np.uint8)
    start = -buf.ctypes.data % _ALIGN            # calloc aligns to 16 bytes; torch uses 64
    return torch.from_numpy(buf[start:start + nbytes]).view(dtype).view(shape)


class CacheEngine:
    """Device KV tensors, and (with ``num_host_blocks``) the host tier's tensors of the same
    per-block shape in host memory (page-locked on CUDA, so copies can run at link speed)."""

    def __init__(self, model: nn.Module, num_blocks: int, block_size: int, dtype: torch.dtype,
                 device: torch.device, num_host_blocks: int = 0):
        self.num_blocks = num_blocks
        self.num_host_blocks = num_host_blocks
        self.block_size = block_size
        self.device = torch.device(device)
        # CUDA: swaps run on their own stream (created at the first swap), ordered by events.
        self._copy_stream = None
        # Swap-outs the compute stream has not waited for yet: (event after them, source blocks).
        self._pending_out: tuple[torch.cuda.Event, set[int]] | None = None
        self.k_caches: list[torch.Tensor] = []
        self.v_caches: list[torch.Tensor] = []
        self.host_k: list[torch.Tensor] = []
        self.host_v: list[torch.Tensor] = []
        pin = device.type == "cuda"
        for attn in attention_layers(model):
            shape = (num_blocks, block_size, attn.num_kv_heads, attn.head_size)
            # zeros, not empty: padded reads in the reference decode path must stay finite.
            k = zeros(shape, dtype, device)
            v = zeros(shape, dtype, device)
            attn.k_cache, attn.v_cache = k, v
            self.k_caches.append(k)
            self.v_caches.append(v)
            if num_host_blocks:
                hshape = (num_host_blocks,) + shape[1:]
                self.host_k.append(torch.zeros(hshape, dtype=dtype, pin_memory=pin))
                self.host_v.append(torch.zeros(hshape, dtype=dtype, pin_memory=pin))
        logger.info("KV cache: %d blocks x %d tokens, %.2f GiB; host tier %d blocks", num_blocks,
                    block_size, self.nbytes / 2**30, num_host_blocks)
        # Fault the CPU pages in from now on, first at normal priority (the engine is still
        # loading the model on one thread), at the lowest once ready() says it serves.
        self.prefault = prefault_in_background(self.k_caches + self.v_caches)

    def ready(self) -> None:
        """The engine starts serving: the page-populating thread (``engine/prefault.py``)
        takes only idle time from now on."""
        if self.prefault is not None:
            self.prefault.started.set()

    def swap(self, swap_out: list[tuple[int, int]], swap_in: list[tuple[int, int]],
             writes: Collection[int] | None = None) -> None:
        """Run one step's copies: swap-outs (device -> host) first, then swap-ins (host ->
        device), so a block evicted and refilled in the same step is saved before reuse.

        On CUDA they run on a dedicated copy stream, ordered by events: the copies wait for
        the work already queued on the compute stream (which may still write a swap-out's
        source or read a swap-in's destination); the compute stream waits for the swap-ins
        (the step reads them), and for the swap-outs only once a step writes one of their
        source blocks (``writes``: the device blocks this step's KV writes land in, see
        :func:`blocks_written`; None: assume any), see :meth:`before_compute`. On the CPU the
        copies run in place, in order."""
        if self.device.type == "cuda":
            self._swap_on_copy_stream(swap_out, swap_in)
            self.before_compute(writes)
        else:
            self._swap(swap_out, swap_in)

    @property
    def pending_swap_out(self) -> bool:
        """Swap-outs the compute stream has not been ordered after yet (CUDA only)."""
        return self._pending_out is not None

    def before_compute(self, writes: Collection[int] | None = None) -> None:
        """Before a step's compute is queued: make the compute stream wait for pending
        swap-outs if the step writes one of their source blocks (``None``: assume it does).
        A block freed by a swap-out may be reallocated to new tokens at once; its old
        contents must reach the host before the KV write overwrites them."""
        if self._pending_out is None:
            return
        event, blocks = self._pending_out
        if writes is None or not blocks.isdisjoint(writes):
            torch.cuda.current_stream(self.device).wait_event(event)
            self._pending_out = None
        elif event.query():                  # done already: nothing left to order against
            self._pending_out = None

    def _swap_on_copy_stream(self, swap_out, swap_in) -> None:
        compute = torch.cuda.current_stream(self.device)
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(self.device)
        copy = self._copy_stream
        copy.wait_stream(compute)
        with torch.cuda.stream(copy):
            self._swap(swap_out, swap_in)
        done = torch.cuda.Event()
        done.record(copy)
        if swap_in:
            # The step reads the swapped-in blocks; the swap-outs ran before them on this stream.
            compute.wait_event(done)
            self._pending_out = None
        elif swap_out:
            # A later event on the same stream covers the earlier pending swap-outs too.
            blocks = {src for src, _ in swap_out}
            if self._pending_out is not None:
                blocks |= self._pending_out[1]
            self._pending_out = (done, blocks)

    def _swap(self, swap_out, swap_in) -> None:
        # Every layer's K and V blocks in one launch (CUDA: a copy kernel reading/writing the
        # pinned host tier in place; elsewhere the torch reference with the same semantics).
        if swap_out:
            ops.swap_blocks_batched(self.k_caches + self.v_caches, self.host_k + self.host_v,
                                    torch.tensor(swap_out, dtype=torch.long))
        if swap_in:
            ops.swap_blocks_batched(self.host_k + self.host_v, self.k_caches + self.v_caches,
                                    torch.tensor(swap_in, dtype=torch.long))

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k_caches + self.v_caches)


def blocks_written(sched: "SchedulerOutput", block_size: int) -> set[int]:
    """The device blocks a step's KV writes land in: for each scheduled chunk, the blocks
    holding positions ``start .. start + num_new_tokens - 1``. O(new tokens / block_size)."""
    out: set[int] = set()
    for s in sched.scheduled:
        if s.num_new_tokens > 0:
            out.update(s.block_ids[s.start // block_size:(s.start + s.num_new_tokens - 1) // block_size + 1])
    return out
