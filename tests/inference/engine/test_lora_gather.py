"""A decode loop's LoRA rows gather each projection's adapter matrices once, not at every forward (engine/lora.py)."""

from __future__ import annotations

import torch
from voicefinetune_inference.engine.lora import AdapterBank, AdapterRows, AdapterWeights, SlotAdapters

NAME = "model.layers.0.self_attn.q_proj"  # a projection the bank wraps


def talker() -> torch.nn.Module:
    root = torch.nn.Module()
    root.model = torch.nn.Module()
    root.model.layers = torch.nn.ModuleList([torch.nn.Module()])
    root.model.layers[0].self_attn = torch.nn.Module()
    root.model.layers[0].self_attn.q_proj = torch.nn.Linear(6, 5, bias=False)
    return root


def adapter(rank: int, seed: int) -> AdapterWeights:
    generator = torch.Generator().manual_seed(seed)
    return AdapterWeights(
        {NAME: (torch.randn(rank, 6, generator=generator), torch.randn(5, rank, generator=generator))}, 0.5
    )


def expected(
    weight: torch.Tensor, x: torch.Tensor, uses: list[tuple[AdapterWeights, float] | None]
) -> torch.Tensor:
    rows = []
    for row, use in enumerate(uses):
        y = x[row] @ weight.T
        if use is not None:
            weights, strength = use
            a, b = weights.modules[NAME]
            y = y + weights.scaling * strength * (x[row] @ a.T @ b.T)
        rows.append(y)
    return torch.stack(rows)


def test_slot_rows_gather_once_until_a_slot_changes_and_again_when_the_tables_grow():
    model = talker()
    weight = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    bank = AdapterBank.of(model, capacity=4)
    layer = bank.layers[NAME]
    hero, villain = adapter(2, 1), adapter(4, 2)
    slots = SlotAdapters(3)

    slots.assign(0, AdapterRows.of([bank.attach("hero", hero)], [hero.scaling * 1.5]), 0)
    x = torch.randn(3, 1, 6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        rows = slots.rows()
        assert rows is not None and slots.rows() is rows  # the same rows, frame after frame
        with bank.rows(rows):
            first = layer(x)
            gathered = rows.tables_for(layer, layer.tables, 3)
            second = layer(x)
        assert all(t is g for t, g in zip(rows.tables_for(layer, layer.tables, 3), gathered, strict=True))
        want = expected(weight, x, [(hero, 1.5), None, None])
        torch.testing.assert_close(first, want)
        torch.testing.assert_close(second, want)

        # a larger adapter grows (swaps) the tables: the same rows gather again, from the new tables
        slots.assign(2, AdapterRows.of([bank.attach("villain", villain)], [villain.scaling]), 0)
        with bank.rows(rows):
            torch.testing.assert_close(layer(x), want)
        changed = slots.rows()
        assert changed is not rows  # a slot changed: new rows
        with bank.rows(changed):
            torch.testing.assert_close(layer(x), expected(weight, x, [(hero, 1.5), None, (villain, 1.0)]))
