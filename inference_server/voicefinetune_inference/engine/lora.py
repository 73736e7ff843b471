"""Many LoRA voices on one resident base model, each batch row with its own adapter.

`AdapterBank.of(model)` wraps each targeted ``nn.Linear`` of the talker (its decoder layers' and its code predictor's
attention and MLP projections) once: ``y = base(x) + scale[r] * B[a_r](A[a_r](x))`` for batch row ``r`` with adapter
``a_r``. The adapters attached to the bank sit in stacked, zero-padded tables (``[slots, rank, in]`` and
``[slots, out, rank]``); a forward gathers each row's matrices and runs two batched matmuls, so rows of different
adapters and rows without one (the base model's clone voices) share one batch, with the same shapes every step. Rows
that keep their adapters across many forwards (a decode loop's slots: 15 code predictor steps per frame, frame after
frame) gather each projection's matrices once (`AdapterRows.reused`).
Slot 0 stays all zeros: adapter index -1 (or scale 0) is the base model itself.

Which adapter each row uses is set by whoever runs the forwards, for its own thread (the model lock's caller, or a
decode loop's thread), around them:

    bank = AdapterBank.of(model.talker)          # once per loaded model; attach() on a bank that has room
    index = bank.attach("voice:hero", weights)   # the adapter's slot (attaching again only refreshes its recency)
    with bank.rows(AdapterRows.of([index, -1], [1.0, 0.0])):
        ...talker forwards over a batch of 2...
        bank.keep(torch.tensor([1]))             # rows left the batch: the rest keep their adapters

A batch shorter than the rows set uses their first entries (a slot table of ``slots`` rows serves a step over
slots ``[0, bucket)``). No rows set: the base model, at the cost of one attribute read per projection.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from voicefinetune.lora_voice import target_pattern

BANK_ATTRIBUTE = "_vft_adapter_bank"


@dataclass(frozen=True)
class AdapterWeights:
    """One adapter as the bank takes it: per talker module name, ``(A [rank, in], B [out, rank])``; ``scaling`` is
    alpha / rank (the voice strength multiplies it per row)."""

    modules: Mapping[str, tuple[torch.Tensor, torch.Tensor]]
    scaling: float

    @property
    def rank(self) -> int:
        return max(a.shape[0] for a, _ in self.modules.values())

    @property
    def size_bytes(self) -> int:
        return sum(
            a.numel() * a.element_size() + b.numel() * b.element_size() for a, b in self.modules.values()
        )


@dataclass(frozen=True)
class AdapterRows:
    """Per batch row: the adapter slot (-1: none) and the scale (scaling × voice strength; 0: none).

    ``gathered`` (rows made `reused`) keeps what forwards gathered for these rows, per projection and batch size, and
    the rows' copy on each device: rows used for many forwards gather once."""

    indices: torch.Tensor  # long [rows]
    scales: torch.Tensor  # float32 [rows]
    gathered: dict[Any, Any] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, indices: Sequence[int], scales: Sequence[float]) -> AdapterRows:
        return cls(
            torch.tensor(list(indices), dtype=torch.long), torch.tensor(list(scales), dtype=torch.float32)
        )

    def reused(self) -> AdapterRows:
        return AdapterRows(self.indices, self.scales, gathered={})

    def to(self, device: torch.device) -> AdapterRows:
        if self.indices.device == device:
            return self
        if self.gathered is None:
            return AdapterRows(self.indices.to(device), self.scales.to(device))
        moved = self.gathered.get(device)
        if moved is None:
            moved = self.gathered[device] = AdapterRows(
                self.indices.to(device), self.scales.to(device)
            ).reused()
        return moved

    def tables_for(
        self, layer: MultiLoraLinear, tables: tuple[torch.Tensor, torch.Tensor], batch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``batch`` rows' matrices of ``layer``: ``A^T [batch, in, rank]`` and ``scale × B^T
        [batch, rank, out]``, gathered from its ``tables`` (again when the tables were swapped)."""
        key = (layer, batch)
        kept = None if self.gathered is None else self.gathered.get(key)
        if kept is not None and kept[0] is tables:
            return kept[1], kept[2]
        slots = (self.indices[:batch] + 1).clamp(min=0)  # -1 -> slot 0, the zero adapter
        scales = self.scales[:batch].to(tables[1].dtype).view(batch, 1, 1)
        a = tables[0].index_select(0, slots).transpose(1, 2)
        b = (tables[1].index_select(0, slots) * scales).transpose(1, 2)
        if self.gathered is not None:
            self.gathered[key] = (tables, a, b)
        return a, b

    def select(self, rows: torch.Tensor) -> AdapterRows:
        rows = rows.to(self.indices.device)
        return AdapterRows(self.indices.index_select(0, rows), self.scales.index_select(0, rows))


class MultiLoraLinear(torch.nn.Module):
    """A base ``nn.Linear`` plus, per batch row, the low-rank update of that row's adapter."""

    def __init__(self, base: torch.nn.Linear, bank: AdapterBank):
        super().__init__()
        self.base = base
        self.bank = bank
        # (A [slots, rank, in], B [slots, out, rank]), swapped whole when they grow: a forward in another thread
        # (a decode loop's) reads one consistent pair
        self.tables: tuple[torch.Tensor, torch.Tensor] | None = None
        # what code that reads a projection's shape or weights finds, as on the nn.Linear
        self.in_features, self.out_features = base.in_features, base.out_features

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        update = self.delta(x)
        return y if update is None else y + update.reshape(y.shape).to(y.dtype)

    def delta(self, x: torch.Tensor) -> torch.Tensor | None:
        """This thread's rows' low-rank updates for ``x`` [b, ..., in] as [b, n, out] in the tables' dtype; None
        without rows (a fused projection adds them on its slice of the fused output)."""
        rows, tables = self.bank.active(), self.tables
        if rows is None or tables is None:
            return None
        batch = x.shape[0]
        a, b = rows.tables_for(self, tables, batch)
        return torch.bmm(torch.bmm(x.reshape(batch, -1, x.shape[-1]).to(a.dtype), a), b)  # [b, n, out]

    def store(self, slot: int, a: torch.Tensor | None, b: torch.Tensor | None) -> None:
        """Write one adapter's matrices into table slot ``slot`` (zeros when this module has none)."""
        assert self.tables is not None
        table_a, table_b = self.tables
        table_a[slot].zero_()
        table_b[slot].zero_()
        if a is not None and b is not None:
            table_a[slot, : a.shape[0]] = a.to(table_a)
            table_b[slot, :, : b.shape[1]] = b.to(table_b)

    def move(self, source: int, target: int) -> None:
        assert self.tables is not None
        for table in self.tables:
            table[target] = table[source]
            table[source].zero_()

    def allocate(self, slots: int, rank: int) -> None:
        """(Re)size the tables to ``slots`` × ``rank``, keeping what they hold."""
        weight = self.base.weight
        a = torch.zeros(slots, rank, self.base.in_features, dtype=torch.float32, device=weight.device)
        b = torch.zeros(slots, self.base.out_features, rank, dtype=torch.float32, device=weight.device)
        if self.tables is not None:
            old_a, old_b = self.tables
            kept, kept_rank = min(slots, old_a.shape[0]), min(rank, old_a.shape[1])
            a[:kept, :kept_rank] = old_a[:kept, :kept_rank]
            b[:kept, :, :kept_rank] = old_b[:kept, :, :kept_rank]
        self.tables = (a, b)


class AdapterBank:
    """The adapters attached to one loaded model, least recently attached-or-used evicted beyond ``capacity``."""

    def __init__(self, talker: torch.nn.Module, capacity: int):
        if capacity < 1:
            raise ValueError("GPU_MAX_ADAPTERS must be at least 1")
        self.capacity = capacity
        self.layers: dict[str, MultiLoraLinear] = {}
        self._slots: OrderedDict[str, int] = (
            OrderedDict()
        )  # key -> table slot (1..capacity), least recent first
        self._free = list(range(capacity, 0, -1))  # slot 0 is the zero adapter
        self._held: Counter[str] = Counter()  # calls whose rows use each adapter now
        self._lock = threading.Lock()  # callers attach from their own threads
        self._info: dict[str, dict[str, Any]] = {}
        self._rank = 0
        self._local = threading.local()
        self.attaches = 0
        self.evictions = 0
        matcher = re.compile(target_pattern(None))
        for name, module in list(talker.named_modules()):
            if isinstance(module, torch.nn.Linear) and matcher.fullmatch(name):
                parent_name, _, child = name.rpartition(".")
                wrapped = MultiLoraLinear(module, self)
                setattr(talker.get_submodule(parent_name), child, wrapped)
                self.layers[name] = wrapped

    @classmethod
    def of(cls, talker: torch.nn.Module, capacity: int = 64) -> AdapterBank:
        """The bank of a Qwen3-TTS ``talker``, wrapping its projections on first use."""
        bank = getattr(talker, BANK_ATTRIBUTE, None)
        if bank is None:
            bank = cls(talker, capacity)
            setattr(talker, BANK_ATTRIBUTE, bank)
        return bank

    @staticmethod
    def existing(talker: Any) -> AdapterBank | None:
        return getattr(talker, BANK_ATTRIBUTE, None)

    # --- attaching -------------------------------------------------------------------------------------------

    def index_of(self, key: str) -> int | None:
        """The adapter index of an attached ``key`` (its slot - 1), None when it is not attached."""
        slot = self._slots.get(key)
        return None if slot is None else slot - 1

    def attach(self, key: str, weights: AdapterWeights) -> int:
        """Attach ``weights`` under ``key`` (or find them attached); returns the adapter index. When the bank is
        full the least recently used adapter that no call holds (`hold`) makes room."""
        with self._lock:
            if key in self._slots:
                self._slots.move_to_end(key)
                return self._slots[key] - 1
            unknown = sorted(set(weights.modules) - set(self.layers))
            if unknown:
                raise ValueError(f"the adapter targets modules this model does not have: {unknown[:3]}")
            if not self._free:
                victim = next((k for k in self._slots if not self._held[k]), None)
                if victim is None:
                    raise RuntimeError(f"all {self.capacity} adapter slots (GPU_MAX_ADAPTERS) are in use")
                self._release(victim)
                self.evictions += 1
            slot = self._free.pop()
            self._grow(weights.rank)
            for name, layer in self.layers.items():
                a, b = weights.modules.get(name, (None, None))
                layer.store(slot, a, b)
            self._slots[key] = slot
            self._info[key] = {"key": key, "rank": weights.rank, "size_bytes": weights.size_bytes}
            self.attaches += 1
            return slot - 1

    def detach(self, key: str) -> bool:
        """Drop ``key`` (once no call holds it: a held adapter stays until its rows are done)."""
        with self._lock:
            if key not in self._slots or self._held[key]:
                return False
            self._release(key)
            return True

    def _release(self, key: str) -> None:
        slot = self._slots.pop(key)
        self._info.pop(key, None)
        self._held.pop(key, None)
        for layer in self.layers.values():
            layer.store(slot, None, None)
        self._free.append(slot)

    @contextlib.contextmanager
    def hold(self, keys: Sequence[str]) -> Iterator[None]:
        """The adapters ``keys`` stay attached (at the same index) within the block."""
        with self._lock:
            for key in keys:
                self._held[key] += 1
        try:
            yield
        finally:
            with self._lock:
                for key in keys:
                    self._held[key] -= 1

    def _grow(self, rank: int) -> None:
        if rank <= self._rank and all(layer.tables is not None for layer in self.layers.values()):
            return
        self._rank = max(rank, self._rank)
        for layer in self.layers.values():
            layer.allocate(self.capacity + 1, self._rank)

    def describe(self) -> list[dict[str, Any]]:
        """The attached adapters, most recently used first."""
        with self._lock:
            return [dict(self._info[key], index=slot - 1) for key, slot in reversed(self._slots.items())]

    @property
    def size_bytes(self) -> int:
        return sum(
            table.numel() * table.element_size()
            for layer in self.layers.values()
            for table in (layer.tables or ())
        )

    # --- rows ------------------------------------------------------------------------------------------------

    def active(self) -> AdapterRows | None:
        return getattr(self._local, "rows", None)

    @contextlib.contextmanager
    def rows(self, rows: AdapterRows | None) -> Iterator[None]:
        """This thread's forwards within the block use ``rows`` (None: the base model)."""
        previous = self.active()
        if rows is not None and self.layers:
            rows = rows.to(next(iter(self.layers.values())).base.weight.device)
        self._local.rows = rows
        try:
            yield
        finally:
            self._local.rows = previous

    def keep(self, rows: torch.Tensor) -> None:
        """Only batch rows ``rows`` (indices into the current batch) go on, in that order."""
        current = self.active()
        if current is not None:
            self._local.rows = current.select(rows)


def current_rows(talker: Any) -> AdapterRows | None:
    """The rows this thread set on the talker's bank (a caller handing its rows to a decode loop)."""
    bank = AdapterBank.existing(talker)
    return None if bank is None else bank.active()


@contextlib.contextmanager
def using(talker: Any, rows: AdapterRows | None) -> Iterator[None]:
    """This thread's forwards of ``talker`` within the block use ``rows`` (a no-op for a talker without a bank)."""
    bank = AdapterBank.existing(talker)
    if bank is None:
        yield
        return
    with bank.rows(rows):
        yield


class SlotAdapters:
    """A continuous decode loop's adapter per slot: a request's rows take their adapters into the slots they join
    (`assign`) and leave them (`free`); `rows()` is what a step over slots ``[0, bucket)`` uses."""

    def __init__(self, slots: int):
        self.indices = torch.full((slots,), -1, dtype=torch.long)
        self.scales = torch.zeros(slots, dtype=torch.float32)
        self._rows: AdapterRows | None = None
        self._changed = False

    def assign(self, slot: int, rows: AdapterRows | None, row: int) -> None:
        self.indices[slot] = -1 if rows is None else int(rows.indices[row])
        self.scales[slot] = 0.0 if rows is None else float(rows.scales[row])
        self._changed = True

    def free(self, slot: int) -> None:
        self.indices[slot], self.scales[slot] = -1, 0.0
        self._changed = True

    def rows(self) -> AdapterRows | None:
        """None while no slot has an adapter (the step is the base model's alone); the same rows, with what their
        forwards gathered, until a slot changes."""
        if self._changed:
            self._changed = False
            self._rows = (
                None
                if bool((self.indices < 0).all())
                else AdapterRows(self.indices.clone(), self.scales.clone()).reused()
            )
        return self._rows


def rows_kept(talker: Any, rows: torch.Tensor) -> None:
    """Tell the talker's bank (if it has one) that only batch rows ``rows`` go on (the decode loop's hook)."""
    bank = AdapterBank.existing(talker)
    if bank is not None:
        bank.keep(rows)


@dataclass(frozen=True)
class AdapterUse:
    """A request row's LoRA voice: the bank key, its weights and the voice strength (0: the base model)."""

    key: str
    weights: AdapterWeights
    strength: float = 1.0


@contextlib.contextmanager
def adapters_for(talker: Any, uses: Sequence[AdapterUse | None]) -> Iterator[None]:
    """(holding the model) Attach the rows' adapters (None: a row without one) and make them this thread's rows
    for the block."""
    if all(use is None for use in uses):
        yield
        return
    bank = AdapterBank.existing(talker)
    if bank is None:
        raise ValueError("this model takes no LoRA adapters: only a Base model serves LoRA voices")
    keys = [use.key for use in uses if use is not None]
    with bank.hold(keys):
        indices = [-1 if use is None else bank.attach(use.key, use.weights) for use in uses]
        scales = [0.0 if use is None else use.weights.scaling * use.strength for use in uses]
        with bank.rows(AdapterRows.of(indices, scales)):
            yield


def read_peft_adapter(state: Mapping[str, torch.Tensor], scaling: float) -> AdapterWeights:
    """An adapter from PEFT's saved state (``base_model.model.<talker module>.lora_A.weight`` and ``lora_B``)."""
    modules: dict[str, list[torch.Tensor | None]] = {}
    for key, tensor in state.items():
        name, _, kind = key.rpartition(".lora_")
        name = name.removeprefix("base_model.model.")
        part = kind.split(".")[0]
        if part not in ("A", "B"):
            continue
        entry = modules.setdefault(name, [None, None])
        entry[0 if part == "A" else 1] = tensor.float()
    pairs = {}
    for name, (a, b) in modules.items():
        if a is None or b is None:
            raise ValueError(f"the adapter of {name} lacks its {'A' if a is None else 'B'} matrix")
        pairs[name] = (a, b)
    if not pairs:
        raise ValueError("the adapter file holds no LoRA matrices")
    return AdapterWeights(pairs, scaling)
