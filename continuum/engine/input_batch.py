"""The persistent batch: per-request rows of the block table, kept across steps.

vLLM v1's InputBatch/BlockTable shape. A step's batch is rows ``0..S-1`` of one preallocated
block table, in row order; the attention kernels read ``table[:S]`` in place. Between steps
only what changed is written:

- a request that stays scheduled keeps its row; the blocks appended to its table since the
  last step are written into the row (a decode step writes one id for one request in
  ``block_size``, usually none);
- a request that is no longer scheduled (finished, preempted, or just not scheduled this
  step) gives its row back, and the last rows move into the holes so rows stay dense;
- a request that enters (new, resumed, or back after a step without a chunk) gets a row
  filled from its whole table. Only this copy is as long as the context, and it happens
  once per entry, not once per step.

Which ids are new is read from the table itself: ``ScheduledRequest.block_ids`` is the KV
manager's live list for the request, which only ever grows while the request holds its
blocks and is replaced by a new list object when the blocks are freed and taken again
(preemption, failure). A row therefore records the list object it mirrors and how many of
its ids it holds; a different object means a full refill. No protocol between scheduler and
runner can go stale, and a runner that lost its state (``clear()``) rebuilds on the next step.

Invariants (``check()``): ``rows`` and ``row_ids`` are inverse maps over ``0..num_rows-1``;
row r holds exactly ``synced[r]`` leading ids of ``sources[r]``; the table is never read past
a row's ``synced`` count by anyone (kernels read ``ceil(seq_len / block_size)`` entries).
"""
from __future__ import annotations

import torch


class InputBatch:
    """Rows of the block table for the requests of the current step.

    ``width`` is the initial number of block slots per row (``ceil(max_model_len /
    block_size)``); both dimensions grow if a step needs more, which never happens when the
    engine sizes them from its limits.
    """

    def __init__(self, max_num_seqs: int = 8, width: int = 16):
        self.table = torch.zeros(max(1, max_num_seqs), max(1, width), dtype=torch.long)
        self.rows: dict[str, int] = {}          # request id -> row
        self.row_ids: list[str] = []            # row -> request id
        self.sources: list[list[int]] = []      # row -> the live block-id list it mirrors
        self.synced: list[int] = []             # row -> leading ids of the source in the row

    @property
    def num_rows(self) -> int:
        return len(self.row_ids)

    def clear(self) -> None:
        """Forget every row (the next ``update`` refills them); for a failed step."""
        self.rows.clear()
        self.row_ids.clear()
        self.sources.clear()
        self.synced.clear()

    def update(self, request_ids: list[str], block_ids: list[list[int]]) -> list[int]:
        """Make rows ``0..S-1`` hold exactly these requests' block tables (S = len(request_ids)).

        Returns ``order``: ``order[r]`` is the index (into the arguments) of the request in
        row r, i.e. the batch order. Host work is O(S + new ids + rows that moved), not
        O(context), except for requests that enter."""
        want = dict(zip(request_ids, range(len(request_ids))))
        assert len(want) == len(request_ids), "a request is scheduled twice in one step"
        # 1. Rows whose request left; the survivors from the end fill the holes.
        holes = [r for r, rid in enumerate(self.row_ids) if rid not in want]
        if holes:
            self._drop(holes)
        # 2. Requests that enter take rows at the end (filled in step 3 as a full sync).
        for rid in request_ids:
            if rid not in self.rows:
                self.rows[rid] = len(self.row_ids)
                self.row_ids.append(rid)
                self.sources.append(None)          # type: ignore[arg-type]
                self.synced.append(0)
        self._ensure(len(self.row_ids), max(len(b) for b in block_ids) if block_ids else 0)
        # 3. Write what each row lacks, in one indexed write.
        rr: list[int] = []
        cc: list[int] = []
        vv: list[int] = []
        order = [0] * len(self.row_ids)
        for r, rid in enumerate(self.row_ids):
            i = want[rid]
            order[r] = i
            live = block_ids[i]
            have = self.synced[r]
            if self.sources[r] is not live or len(live) < have:
                self.sources[r] = live
                have = 0
            n = len(live)
            if n > have:
                rr.extend([r] * (n - have))
                cc.extend(range(have, n))
                vv.extend(live[have:n])
                self.synced[r] = n
        if vv:
            self.table.index_put_((torch.tensor(rr), torch.tensor(cc)), torch.tensor(vv, dtype=torch.long))
        return order

    def _drop(self, holes: list[int]) -> None:
        """Free these rows; move the last surviving rows into them so rows stay dense."""
        gone = set(holes)
        for r in holes:
            del self.rows[self.row_ids[r]]
        last = len(self.row_ids) - 1
        for h in holes:                       # ascending: fill the lowest hole from the end
            while last > h and last in gone:
                last -= 1
            if last <= h:
                break
            rid, n = self.row_ids[last], self.synced[last]
            self.table[h, :n] = self.table[last, :n]
            self.row_ids[h], self.sources[h], self.synced[h] = rid, self.sources[last], n
            self.rows[rid] = h
            gone.add(last)
            last -= 1
        keep = len(self.row_ids) - len(holes)
        del self.row_ids[keep:], self.sources[keep:], self.synced[keep:]

    def _ensure(self, rows: int, width: int) -> None:
        cap, w = self.table.shape
        if rows <= cap and width <= w:
            return
        grown = torch.zeros(max(cap, 2 * cap if rows > cap else cap, rows),
                            max(w, 2 * w if width > w else w, width), dtype=torch.long)
        grown[:cap, :w] = self.table
        self.table = grown

    def check(self) -> None:
        """Assert the invariants (tests call this after every step)."""
        assert len(self.row_ids) == len(self.sources) == len(self.synced) == len(self.rows)
        for r, rid in enumerate(self.row_ids):
            assert self.rows[rid] == r, f"row map broken at {r}"
            n = self.synced[r]
            assert n <= len(self.sources[r])
            assert self.table[r, :n].tolist() == self.sources[r][:n], f"row {r} ({rid}) is stale"
