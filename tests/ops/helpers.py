"""Random paged-KV batches for the op tests (CPU and GPU): fresh random data, never zeros."""
from __future__ import annotations

import torch

from continuum.layers.attention import AttentionMetadata


def random_caches(num_blocks: int, block_size: int, hkv: int, d: int, dtype, device, gen: torch.Generator):
    """K/V caches filled entirely with random values (unused blocks too: a kernel that reads
    past a sequence's end sees plausible numbers, not zeros that would hide the bug)."""
    shape = (num_blocks, block_size, hkv, d)
    k = torch.randn(shape, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    v = torch.randn(shape, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    return k, v


def random_block_tables(seq_lens: list[int], block_size: int, num_blocks: int, gen: torch.Generator,
                        device) -> torch.Tensor:
    """Distinct random physical blocks per sequence (a permutation slice), padded with junk ids."""
    need = [-(-max(L, 1) // block_size) for L in seq_lens]
    width = max(need)
    assert sum(need) <= num_blocks, "pool too small for these sequences"
    perm = torch.randperm(num_blocks, generator=gen)
    rows, at = [], 0
    for n in need:
        row = perm[at:at + n].tolist()
        at += n
        # padding entries: valid ids (reads would not fault) that belong to other sequences
        row += torch.randint(0, num_blocks, (width - n,), generator=gen).tolist()
        rows.append(row)
    return torch.tensor(rows, dtype=torch.long, device=device)


def metadata(query_lens: list[int], seq_lens: list[int], block_tables: torch.Tensor, block_size: int,
             device) -> AttentionMetadata:
    """Metadata of a step where sequence i adds query_lens[i] tokens ending at seq_lens[i]."""
    slots = []
    for i, (ql, sl) in enumerate(zip(query_lens, seq_lens)):
        for pos in range(sl - ql, sl):
            slots.append(int(block_tables[i, pos // block_size]) * block_size + pos % block_size)
    qsl = [0]
    for q in query_lens:
        qsl.append(qsl[-1] + q)
    kw = dict(dtype=torch.long, device=device)
    return AttentionMetadata(slot_mapping=torch.tensor(slots, **kw), block_tables=block_tables,
                             seq_lens=torch.tensor(seq_lens, **kw), query_start_loc=torch.tensor(qsl, **kw),
                             seq_lens_list=list(seq_lens), query_lens_list=list(query_lens),
                             block_size=block_size)


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.double(), ref.double()
    return float((x - ref).norm() / ref.norm().clamp_min(1e-30))
