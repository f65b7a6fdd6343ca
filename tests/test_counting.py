"""The early-termination slot counter (`counting.count_slots` with executed cycles).

It accumulates, cycle by cycle, the OUs per (position, slot) and the conversions and rows per
(position, column class) under per-cycle live masks, in cache-sized image chunks on CPU. The
tests check it against the formulation it replaced, written here: per (position, slot) prefix
sums over the MSB-first cycles of OUs and rows, gathered at each output's executed cycles.
Every total (OUs, conversions, DAC activations, cell reads, busiest-array cycles) must be
equal, on the slot tables of real layouts (SRE row tiles: several slots per class; pattern
units; zero-plane skipping; with act, also with one domain per slot as `combined` counts
them with early termination), one and two passes, bit and word granularity, 1- and 2-bit DACs,
random executed cycles, and any image chunking.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from sparsexbar.core.config import HardwareConfig, preset
from sparsexbar.core.cost import activation_timing
from sparsexbar.core.frontend import QuantLayer, quantize_model
from sparsexbar.schemes import counting
from sparsexbar.schemes.combined import CombinedKernel, CombinedScheme, pattern_slots, sre_slots
from sparsexbar.schemes.counting import (
    RowSetCounter,
    SlotCounts,
    SlotTable,
    count_slots,
    narrow_magnitudes,
    slot_domains,
)
from sparsexbar.schemes.pattern import PatternKernel
from sparsexbar.training.prune import pattern_prune_model
from tests import nets
from tests.test_sre import prune_blocks
from tests.timing_ref import Timing

CPU = torch.device("cpu")
IMAGES = 5


class ConvRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 5 * 5, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


def _layer(signed: bool, seed: int) -> tuple[QuantLayer, Tensor]:
    """A pattern- and block-pruned 3x3 conv and its quantized input (30% zeros)."""
    net = nets.seeded_init(ConvRelu(), seed).eval()
    pattern_prune_model(net, None, 4, 3, 0.6, steps=1, epochs=0)
    net = prune_blocks(net, 0.3, seed)
    x = nets.random_images(IMAGES, channels=4, size=5, seed=seed, signed=signed)
    x = torch.where(torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) < 0.3,
                    torch.zeros_like(x), x)
    layer = quantize_model(net, x, 8, 8).layers[0]
    return layer, layer.quantize_input(x)


def prefix_sum_reference(table: SlotTable, counter: RowSetCounter | None, parts: list[Tensor],
                         images: int, positions: int, cycles: int, dac_bits: int,
                         ou_rows: int, word: bool, executed: Tensor,
                         timing: Timing) -> SlotCounts:
    """The replaced formulation, all images at once, float64: per (position, slot), the
    prefix sums over the MSB-first cycles of the per-cycle OUs and rows, gathered at each
    output's executed cycles (E_max of the slot's class for OUs and rows, each channel's own
    for its columns' conversions). Time and ADC rounds, cycle by cycle: the OUs of cycle t
    each convert W_t = the class's columns whose channel runs past t."""
    reps, g_count = table.repeats, table.classes
    static_ou = table.static_ou(ou_rows).view(reps, g_count)
    width = table.slot_width.view(reps, g_count)
    e = executed.reshape(-1, executed.shape[-1]).to(torch.int64)
    e = torch.cat([e, torch.zeros_like(e[:, :1])], dim=1)  # padding channel: never runs
    runs = [e[:, table.class_channels[:, k]] for k in range(table.class_channels.shape[1])]
    e_max = torch.stack(runs).amax(dim=0)
    per_image_ou = torch.zeros((images, table.slots), dtype=torch.float64)
    per_image_ns = torch.zeros_like(per_image_ou)
    totals = torch.zeros(5, dtype=torch.float64)
    act = table.skip == "act"
    most = int(table.slot_width.max())
    time_of = torch.tensor([timing.ns(c) for c in range(most + 1)], dtype=torch.float64)
    rounds_of = torch.tensor([timing.rounds(c) for c in range(most + 1)], dtype=torch.float64)

    def gathered(cum: Tensor, at: Tensor) -> Tensor:  # (M, reps, G) cum at each class's index
        return cum.gather(0, at.unsqueeze(1).expand(-1, reps, -1).unsqueeze(0)).squeeze(0)

    for part in parts:
        m = int(e.shape[0])
        cum_ou = torch.zeros((cycles + 1, m, reps, g_count), dtype=torch.float64)
        cum_rows = torch.zeros_like(cum_ou)
        if table.skip == "none":  # every slot whole in every cycle its class runs
            cum_ou[1:] = static_ou.to(torch.float64)
            cum_rows[1:] = table.slot_rows.view(reps, g_count)
        chunked = ([] if counter is None or table.skip == "none"
                   else counter.chunk_counts(part, cycles, dac_bits, word))
        for chunks, counts in chunked:
            counts = counts.to(torch.float64)
            if act:
                n = counts[:, table.slot_set].view(-1, reps, g_count)
                ou = torch.ceil(n / ou_rows)
            else:
                ran = (counts > 0).to(torch.float64)[:, table.gate].view(-1, reps, g_count)
                ou = ran * static_ou
                n = ran * table.slot_rows.view(reps, g_count)
            for k in chunks:
                cum_ou[cycles - k] = ou
                cum_rows[cycles - k] = n
        for t in range(cycles):  # MSB-first cycle t: its OUs at index t + 1
            w_t = sum((r > t).to(torch.float64) * c.to(torch.float64)
                      for r, c in zip(runs, table.class_channel_cols.t(), strict=True))
            assert isinstance(w_t, Tensor)
            idx = w_t.to(torch.int64).unsqueeze(1)  # (M, 1, G)
            per_image_ns += (cum_ou[t + 1] * time_of[idx]).view(images, positions, -1).sum(1)
            totals[4] += (cum_ou[t + 1] * rounds_of[idx]).sum()
        cum_ou, cum_rows = cum_ou.cumsum(dim=0), cum_rows.cumsum(dim=0)
        ou_run = gathered(cum_ou, e_max)
        per_image_ou += ou_run.view(images, positions, -1).sum(dim=1)
        totals[0] += ou_run.sum()
        for r, c in zip(runs, table.class_channel_cols.t(), strict=True):
            totals[1] += (gathered(cum_ou, r) * c.to(torch.float64)).sum()
        rows_run = gathered(cum_rows, e_max).sum(dim=0)  # (reps, G)
        totals[2] += rows_run.sum()
        totals[3] += (rows_run * width).sum()
    onehot = torch.nn.functional.one_hot(table.slot_array, max(table.arrays, 1)).to(
        torch.float64)  # (J, A): which array holds each slot
    busiest = (per_image_ou @ onehot).amax(dim=1).sum()
    busiest_ns = (per_image_ns @ onehot).amax(dim=1).sum()
    ou_t, adc_t, dac_t, cell_t, rounds_t = (float(v) for v in totals)
    return SlotCounts(ou_t, adc_t, dac_t, cell_t, float(busiest), rounds_t, float(busiest_ns))


def close(a: SlotCounts, b: SlotCounts) -> bool:
    """Every count equal, the times equal to float rounding (summed in another order)."""
    return (dataclasses.replace(a, time_ns=0.0) == dataclasses.replace(b, time_ns=0.0)
            and a.time_ns == pytest.approx(b.time_ns, rel=1e-12))


CASES = [  # (composition, signed input, hardware overrides, act granularity)
    ("sre-weight+act+comprrae", False, {}, "bit"),
    ("sre-weight+act+comprrae", True, {"dac.bits": 2}, "bit"),
    ("sre-weight+act+comprrae", False, {}, "word"),
    ("act+comprrae", True, {}, "bit"),
    ("pattern+act+comprrae", False, {}, "bit"),
    ("pattern+act+comprrae", True, {"dac.bits": 2}, "word"),
    ("sre-weight+comprrae+encoding", True, {}, "bit"),
    ("comprrae+encoding", False, {"dac.bits": 2}, "bit"),
]


# The timing rule's shapes (`cost.TimingShape`): ADC-bound activations (time and rounds
# looked up per cycle), every activation read-bound with one ADC per array (time = read x OUs,
# rounds = conversions) or with an ADC per column (rounds = OUs): (overrides, time, rounds).
TIMINGS = {
    "adc-bound": ({"timing.read_ns": 1.0}, None, "conversions"),
    "read-bound": ({"timing.read_ns": 100.0}, 100.0, "conversions"),
    "read-bound-adc-per-column": ({"timing.read_ns": 100.0, "adc.per_array": 8}, 100.0, "one"),
}


@pytest.mark.parametrize("timing_name", list(TIMINGS))
@pytest.mark.parametrize(("spec", "signed", "overrides", "granularity"), CASES)
def test_live_counts_equal_prefix_sum_formulation(spec: str, signed: bool,
                                                  overrides: dict[str, int], granularity: str,
                                                  timing_name: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    layer, x_int = _layer(signed, seed=len(spec) + 3 * signed)
    timing_overrides, shape_time, shape_rounds = TIMINGS[timing_name]
    hw: HardwareConfig = preset("isaac").with_overrides(
        {"array.rows": 16, "array.cols": 24, "ou.rows": 4, "ou.cols": 8, **timing_overrides,
         **overrides})
    scheme = CombinedScheme(tuple(spec.split("+")), granularity=granularity)
    kernel = scheme.kernel(scheme.map_layer(layer, hw), CPU)
    assert isinstance(kernel, CombinedKernel) and kernel.counter is not None
    table, counter = kernel.table, kernel.counter
    assert table.skip == ("act" if "act" in spec else "any")
    layouts = []  # the layout's own (table, counter), and one domain per slot
    if table.skip == "act":
        if isinstance(kernel.inner, PatternKernel):
            own, own_counter = pattern_slots(kernel.inner, True, CPU)
        else:
            own, own_counter = sre_slots(kernel.inner, CPU, "act"), kernel.inner.counter
        assert not torch.equal(own.slot_set, torch.arange(own.slots))  # a real reordering
        ordered = slot_domains(own, layer, CPU)
        assert torch.equal(ordered[0].slot_set, torch.arange(own.slots))
        layouts += [(own, own_counter), ordered]
        if 4 * own.slots <= 5 * own_counter.count:  # combined's kernel counts per slot
            assert torch.equal(kernel.table.slot_set, ordered[0].slot_set)
            assert torch.equal(kernel.table.sets, ordered[0].sets)
        table, counter = own, own_counter
    else:
        layouts.append((table, counter))
    if spec.startswith("sre"):  # row tiles: several slots per column class
        assert table.repeats > 1
    parts = narrow_magnitudes(layer, x_int)
    assert len(parts) == (2 if signed else 1)
    word = granularity == "word"
    gen = torch.Generator().manual_seed(7)
    executed = torch.randint(0, hw.cycles + 1, (IMAGES, layer.positions, layer.out_channels),
                             generator=gen, dtype=torch.int32)
    args = (parts, IMAGES, layer.positions, len(parts), hw.cycles, hw.dac.bits, hw.ou.rows,
            word, executed)
    bits = scheme.adc_bits(kernel.mapped)
    timing = activation_timing(kernel.mapped.hw, bits)
    expected = prefix_sum_reference(table, counter, parts, IMAGES, layer.positions, hw.cycles,
                                    hw.dac.bits, hw.ou.rows, word, executed,
                                    Timing(kernel.mapped.hw, bits))
    assert expected.ou_activations > 0 and expected.adc_conversions > 0
    shape = timing.shape(int(table.slot_width.max()))
    assert (shape.time_ns, shape.rounds) == (shape_time, shape_rounds)
    if shape_time is None:
        assert expected.cycles > 0 and expected.time_ns > expected.cycles * 1.0  # ADC-bound
    else:  # the shortcut: every activation read-bound
        assert expected.time_ns == pytest.approx(shape_time * expected.cycles, rel=1e-12)
    for slots, slot_counter in layouts:
        for chunk in (1, 2, IMAGES):  # the memory budget's image chunks
            assert close(count_slots(slots, slot_counter, *args, chunk, timing), expected), chunk
    # the cache-sized work on CPU, whatever the budget allows: row blocks of one row, with the
    # counter's convolutions on one image or on all at once
    monkeypatch.setattr(counting, "LIVE_CPU_CHUNK_VALUES", 1)
    for conv_rows in (1, counting.LIVE_CONV_ROWS, IMAGES * layer.positions):
        monkeypatch.setattr(counting, "LIVE_CONV_ROWS", conv_rows)
        for slots, slot_counter in layouts:
            assert close(count_slots(slots, slot_counter, *args, IMAGES, timing), expected)
    # nothing executed: no OUs, conversions or rows at all
    none_run = count_slots(table, counter, parts, IMAGES, layer.positions, len(parts),
                           hw.cycles, hw.dac.bits, hw.ou.rows, word,
                           torch.zeros_like(executed), IMAGES, timing)
    assert none_run == SlotCounts()


@pytest.mark.parametrize("timing_name", list(TIMINGS))
@pytest.mark.parametrize("signed", [False, True])
def test_static_slots_with_termination_equal_the_reference(signed: bool,
                                                           timing_name: str) -> None:
    """Skip rule `none` (every row of a slot every cycle) with early termination: OUs, rows,
    conversions, ADC rounds and time per cycle from the channels still running."""
    layer, x_int = _layer(signed, seed=19)
    hw = preset("isaac").with_overrides({"array.rows": 16, "array.cols": 24, "ou.rows": 4,
                                         "ou.cols": 8, **TIMINGS[timing_name][0]})
    scheme = CombinedScheme(("sre-weight", "comprrae"))
    kernel = scheme.kernel(scheme.map_layer(layer, hw), CPU)
    assert isinstance(kernel, CombinedKernel) and kernel.counter is None
    table = kernel.table
    assert table.skip == "none" and table.repeats > 1
    parts = narrow_magnitudes(layer, x_int)
    executed = torch.randint(0, hw.cycles + 1, (IMAGES, layer.positions, layer.out_channels),
                             generator=torch.Generator().manual_seed(3), dtype=torch.int32)
    bits = scheme.adc_bits(kernel.mapped)
    expected = prefix_sum_reference(table, None, parts, IMAGES, layer.positions,
                                    hw.cycles, hw.dac.bits, hw.ou.rows, False, executed,
                                    Timing(kernel.mapped.hw, bits))
    assert expected.time_ns > 0 and expected.adc_rounds > 0
    for chunk in (1, IMAGES):
        got = count_slots(table, None, parts, IMAGES, layer.positions, len(parts), hw.cycles,
                          hw.dac.bits, hw.ou.rows, False, executed, chunk,
                          activation_timing(kernel.mapped.hw, bits))
        assert close(got, expected), chunk


# ---- the counter's shortcuts: row blocks (grouped convolution) and per-value tables ---------
def _block_case(channels: int, k: int, stride: int, block_rows: int, sets_per_block: int,
                seed: int) -> tuple[QuantLayer, Tensor, list[tuple[int, int]], Tensor]:
    """A conv layer, random sets each inside one row block, the blocks, and an input with
    zeros, values up to 255."""
    net = nets.single_conv(channels, 3, k, stride=stride, padding=k // 2, seed=seed)
    x = nets.random_images(2, channels=channels, size=7, seed=seed)
    layer = quantize_model(net, x, 8, 8).layers[0]
    rows = layer.rows
    blocks = [(a, min(a + block_rows, rows)) for a in range(0, rows, block_rows)]
    gen = torch.Generator().manual_seed(seed)
    sets = torch.zeros((len(blocks) * sets_per_block, rows), dtype=torch.bool)
    for i, (a, b) in enumerate(blocks):
        pick = torch.rand((sets_per_block, b - a), generator=gen) < 0.6
        sets[i * sets_per_block : (i + 1) * sets_per_block, a:b] = pick
    sets = sets[torch.randperm(sets.shape[0], generator=gen)]  # blocks interleaved
    x_int = torch.randint(0, 256, (2, *layer.input_shape), generator=gen, dtype=torch.int64)
    x_int = torch.where(torch.rand(x_int.shape, generator=gen) < 0.4, 0, x_int)
    return layer, sets, blocks, x_int.to(torch.uint8).contiguous(
        memory_format=torch.channels_last)


@settings(max_examples=12, deadline=None)
@given(channels=st.integers(12, 40), k=st.sampled_from([1, 3]), stride=st.sampled_from([1, 2]),
       block_rows=st.sampled_from([8, 16, 36]), sets_per_block=st.integers(1, 6),
       dac=st.sampled_from([1, 2]), seed=st.integers(0, 50), int8=st.booleans())
def test_blocked_counter_equals_the_plain_convolution(
        channels: int, k: int, stride: int, block_rows: int, sets_per_block: int, dac: int,
        seed: int, int8: bool) -> None:
    """A counter split by row blocks (one grouped convolution over each block's channels)
    gives the plain counter's counts exactly, on both backends; it is used where it saves
    most of the work."""
    from sparsexbar.core import intconv

    layer, sets, blocks, x_int = _block_case(channels, k, stride, block_rows, sets_per_block,
                                             seed)
    available = intconv._int8_conv_available
    try:
        if not int8:
            intconv._int8_conv_available = lambda device: False  # type: ignore[assignment]
        plain = RowSetCounter(layer, sets, CPU)
        blocked = RowSetCounter(layer, sets, CPU, row_blocks=blocks)
        assert blocked.sets.dtype == torch.bool  # one byte per (set, row) kept for the run
        assert torch.equal(blocked.sets, sets.cpu() != 0)
        plan = counting.block_plan(layer, blocked.sets, blocks)
        expect_blocked = plan is not None
        assert isinstance(blocked.op(), counting.BlockedRows) == expect_blocked
        assert blocked.op().backend == plain.op().backend
        for word in (False, True):
            got = [(c, v.clone()) for c, v in blocked.chunk_counts(x_int, 8 // dac, dac, word)]
            want = [(c, v.clone()) for c, v in plain.chunk_counts(x_int, 8 // dac, dac, word)]
            assert [c for c, _ in got] == [c for c, _ in want]
            for (_, a), (_, b) in zip(got, want, strict=True):
                assert torch.equal(a, b)
    finally:
        intconv._int8_conv_available = available  # type: ignore[assignment]


def test_blocked_counter_is_used_on_many_row_tiles() -> None:
    """isaac-like tiles on a 32-channel 3x3 layer (288 rows, 9 blocks of 32): the grouped
    convolution does a fraction of the plain one's work, and is chosen."""
    layer, sets, blocks, _ = _block_case(32, 3, 1, 32, 4, seed=3)
    plan = counting.block_plan(layer, sets.to(torch.int64), blocks)
    assert plan is not None and plan.groups == 9
    assert int(plan.weight.shape[0]) == 9 * 4 and int(plan.weight.shape[1]) <= 5
    # a set spanning two blocks: no split
    spanning = sets.clone()
    spanning[0, :64] = True
    assert counting.block_plan(layer, spanning.to(torch.int64), blocks) is None


def test_blocked_counter_pads_large_blocks_to_aligned_channels() -> None:
    """Blocks of more than BLOCK_CHANNEL_ALIGN sets get a multiple of it as their output
    channels (all-zero filters on top: oneDNN's fast grouped kernels); the counts stay the
    plain counter's, with the padding columns reading zero."""
    layer, sets, blocks, x_int = _block_case(48, 3, 1, 36, 17, seed=4)
    plan = counting.block_plan(layer, sets.to(torch.int64), blocks)
    align = counting.BLOCK_CHANNEL_ALIGN
    assert plan is not None and plan.groups == len(blocks)
    assert int(plan.weight.shape[0]) == len(blocks) * 2 * align  # 17 sets -> 32 channels
    plain = RowSetCounter(layer, sets, CPU)
    blocked = RowSetCounter(layer, sets, CPU, row_blocks=blocks)
    op = blocked.op()
    assert isinstance(op, counting.BlockedRows) and op.width == len(blocks) * 2 * align
    for dac in (1, 2):
        got = list(blocked.chunk_counts(x_int, 8 // dac, dac, False))
        want = list(plain.chunk_counts(x_int, 8 // dac, dac, False))
        for (c1, a), (c2, b) in zip(got, want, strict=True):
            assert c1 == c2 and torch.equal(a, b)
    native = op.native_rows(x_int)
    padding = torch.ones(op.width, dtype=torch.bool)
    padding[op.select] = False
    assert bool(padding.any()) and not bool(native[:, padding].any())
    for ou_rows in (1, 4):
        assert all(torch.equal(g, w) for g, w in zip(
            blocked.image_sums(x_int, 8, 1, False, ou_rows),
            plain.image_sums(x_int, 8, 1, False, ou_rows), strict=True))


def _sums_from_chunks(counter: RowSetCounter, x_int: Tensor, cycles: int, dac: int,
                      word: bool, ou_rows: int, gate: bool) -> tuple[Tensor, Tensor]:
    """`image_sums` by its definition: per image, the sums over positions and cycles of
    f(count) and of the counts, from `chunk_counts`."""
    images = int(x_int.shape[0])
    ou = torch.zeros((images, counter.count), dtype=torch.float64)
    rows = torch.zeros_like(ou)
    for chunks, counts in counter.chunk_counts(x_int, cycles, dac, word):
        c = counts.to(torch.float64).view(images, -1, counter.count)
        f = (c > 0).to(torch.float64) if gate else torch.ceil(c / ou_rows)
        rows += c.sum(dim=1) * len(chunks)
        ou += f.sum(dim=1) * len(chunks)
    return ou, rows


@pytest.mark.parametrize("dac", [1, 2])
@pytest.mark.parametrize("word", [False, True])
@pytest.mark.parametrize("gate", [False, True])
@pytest.mark.parametrize("table_limit", [counting.LUT_ENTRIES, 64, 1])
@pytest.mark.parametrize("block_values", [counting.SUM_BLOCK_VALUES, 1])
@pytest.mark.parametrize("int32_limit", [counting.INT32_SUM_LIMIT, 1])
def test_image_sums_equal_the_sums_of_the_chunk_counts(dac: int, word: bool, gate: bool,
                                                       table_limit: int, block_values: int,
                                                       int32_limit: int,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-value tables (values of more digits than a table holds split into groups of
    digits, one gather each: `table_limit` 64; with no table at all, the digit split) give
    the OU activations
    (ceil(n / ou.rows), or [n > 0] for gated sets) and active rows of every image exactly,
    the table's gather and sum taken for all images at once or image by image
    (`block_values` 1), with int32 or (`int32_limit` 1) int64 tables and sums, on the plain
    and the row-blocked convolution (whose columns are put in the sets' order after the
    sums)."""
    monkeypatch.setattr(counting, "LUT_ENTRIES", table_limit)
    monkeypatch.setattr(counting, "INT32_SUM_LIMIT", int32_limit)
    monkeypatch.setattr(counting, "SUM_BLOCK_VALUES", block_values)
    layer, sets, blocks, x_int = _block_case(24, 3, 1, 36, 5, seed=7)
    for row_blocks in (None, blocks):
        counter = RowSetCounter(layer, sets, CPU, row_blocks=row_blocks)
        assert isinstance(counter.op(), counting.BlockedRows) == (row_blocks is not None)
        for ou_rows in (1, 3, 9):
            got = counter.image_sums(x_int, 8 // dac, dac, word, ou_rows, gate=gate)
            want = _sums_from_chunks(counter, x_int, 8 // dac, dac, word, ou_rows, gate)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
            assert float(want[1].sum()) > 0
        if table_limit == 64 and not word:  # values of several groups of digits
            assert counter.base ** counter.fields > 64 >= counter.base
