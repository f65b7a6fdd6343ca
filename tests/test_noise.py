"""The full path's counter-based draws (core/engine/noise.py) against a plain torch reference.

Per effect (programmed variation, read noise, accumulated deviation, both noises together):
the conversion errors (ADC code - partial sum) of the engine's draws and of a reference that
draws z with `torch.randn` have the same mean and variance and pass a two-sample
Kolmogorov-Smirnov test. Every code equals clamp(round(p + s Phi^-1(u))) for the
conversion's own 48-bit uniform u (the table and the refinement are exact), and the draws do
not depend on how a call is cut into tasks, slices and threads.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from sparsexbar import EngineOptions
from sparsexbar.core.config import preset
from sparsexbar.core.engine import LayerKernel, native, noise
from sparsexbar.core.engine.native import NativeHead
from sparsexbar.core.errors import SparsexbarWarning
from sparsexbar.core.frontend import quantize_model
from sparsexbar.core.mapping import map_dense, program_conductance
from tests import nets

TOP = 31.0  # a 5-bit ADC
SLOTS, COLS = 6000, 40  # conversions per case: 240,000 (odd half-count of columns: 20 pairs)
P_VALUES = (0.3, 2.5, 7.49, 13.0, 29.6, 40.2)  # per slot, cyclically; 2.5: on a boundary,
# 29.6 and 40.2: clipped at TOP
KS_C = 1.95  # two-sample KS critical coefficient at alpha = 0.001 (conservative for ties)


def ks_statistic(a: Tensor, b: Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic sup |F_a - F_b| (ties handled exactly)."""
    a, b = a.double().sort().values, b.double().sort().values
    grid = torch.cat([a, b]).unique()
    fa = torch.searchsorted(a, grid, right=True).double() / a.numel()
    fb = torch.searchsorted(b, grid, right=True).double() / b.numel()
    return float((fa - fb).abs().max())


def assert_same_distribution(got: Tensor, ref: Tensor, what: str) -> None:
    """Mean within 5 standard errors, variance within 3%, KS below its 0.001 critical value."""
    n, m = got.numel(), ref.numel()
    var = float(ref.double().var())
    se = math.sqrt(var / n + var / m) if var > 0 else 1e-12
    assert abs(float(got.double().mean() - ref.double().mean())) < 5 * se + 1e-12, what
    if var > 0:
        assert 0.97 < float(got.double().var()) / var < 1.03, what
    assert ks_statistic(got, ref) < KS_C * math.sqrt((n + m) / (n * m)), what


def draw_case(read: float, deviation: float, step: float = 1.0, seed: int = 7
              ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(p, s, engine codes, keys) of SLOTS x COLS conversions: p from P_VALUES by slot,
    s = sqrt((read p)^2 + deviation^2), keys of the slots of one stream."""
    p = torch.tensor(P_VALUES, dtype=torch.float32).repeat(SLOTS // len(P_VALUES) + 1)[:SLOTS]
    p = p.unsqueeze(1).expand(SLOTS, COLS).contiguous()
    stream = noise.Stream(noise.stream_salt(seed, 0, 0), 0)
    keys = stream.keys(0, torch.arange(SLOTS), torch.zeros(SLOTS, dtype=torch.int64), 1)
    dev = torch.full((SLOTS, 1), deviation) if deviation > 0 else None
    ws = noise.Workspace(SLOTS * COLS, p.device)
    code = noise.noisy_adc(p, keys, read, dev, TOP, step, ws, noise.margin(2 * 81)).clone()
    s = torch.sqrt((read * p) ** 2 + deviation**2)
    return p, s, code, keys


EFFECTS = {  # name: (read noise sigma, accumulated deviation sigma x active rows, ADC step)
    "read noise": (0.05, 0.0, 1.0),
    "accumulated deviation": (0.0, 0.3, 1.0),
    "accumulated deviation, wide": (0.0, 1.7, 1.0),
    "read noise + accumulated deviation": (0.03, 0.2, 1.0),
    "read noise + accumulated deviation, step 2": (0.03, 0.6, 2.0),
}


@pytest.mark.parametrize("effect", list(EFFECTS))
def test_conversion_errors_match_a_torch_randn_reference(effect: str) -> None:
    """Per partial sum, the engine's conversion errors and those of z = torch.randn: same mean,
    variance and distribution (KS)."""
    read, deviation, step = EFFECTS[effect]
    p, s, code, _ = draw_case(read, deviation, step)
    gen = torch.Generator().manual_seed(11)
    z = torch.randn(p.shape, generator=gen)
    ref = torch.round((p + s * z) / step).clamp_(0, TOP) * step
    assert not torch.equal(code, ref)
    spread = 0
    for value in P_VALUES:
        rows = p[:, 0] == torch.tensor(value, dtype=torch.float32)
        err, ref_err = (code[rows] - p[rows]).reshape(-1), (ref[rows] - p[rows]).reshape(-1)
        spread += int(float(ref_err.var()) > 0)
        assert_same_distribution(err, ref_err, f"{effect}, p = {value}")
    assert spread >= 3  # the noise moves the codes of most partial sums


@pytest.mark.parametrize("effect", list(EFFECTS))
def test_every_code_is_the_exact_conversion_of_its_own_uniform(effect: str) -> None:
    """code = clamp(round((p + s Phi^-1(u)) / step)) x step for every conversion, u its 48-bit
    uniform (16 bucket bits + 32 refinement bits): the table's midpoint gives the exact code
    wherever it is used, and some conversions take the refinement."""
    read, deviation, step = EFFECTS[effect]
    p, s, code, keys = draw_case(read, deviation, step)
    mix = noise.column_mix(COLS, p.device)
    ws = noise.Workspace(SLOTS * COLS, p.device)
    idx = noise.bucket_indices(keys, COLS, mix, ws).clone()
    row = torch.arange(SLOTS).repeat_interleave(COLS)
    col = torch.arange(COLS).repeat(SLOTS)
    u = noise.refine_bits(keys.index_select(0, row), mix, col).add_(idx.view(-1).double()) \
        .div_(2**16)
    z = torch.special.ndtri(u).view(SLOTS, COLS)
    v = (p.double() + s.double() * z) / step
    exact = torch.round(v).clamp_(0, TOP) * step
    near = (v - v.round()).abs() > 0.5 - 1e-5  # float32 rounding may go either way there
    assert bool((code == exact)[~near].all()), effect
    mid = noise.NormalTable.on(p.device).mid.index_select(0, idx.view(-1)).view(SLOTS, COLS)
    coarse = torch.round((p + s * mid) / step).clamp_(0, TOP) * step
    assert int((coarse != code).sum()) > 0  # the refinement changed some codes


def test_variation_matches_a_torch_randn_reference() -> None:
    """Programmed variation (applied once, when a layer is mapped): the factors
    conductance / level of the nonzero cells, lognormal and normal, against exp(sigma z) and
    1 + sigma z with z = torch.randn."""
    levels = torch.randint(1, 4, (300, 400), generator=torch.Generator().manual_seed(3))
    for kind, sigma in (("lognormal", 0.08), ("normal", 0.05)):
        hw = preset("isaac").with_overrides({"device.variation": kind,
                                             "device.variation_sigma": sigma,
                                             "device.seed": 4})
        factor = (program_conductance(levels, hw, "layer") / levels).reshape(-1)
        z = torch.randn(factor.shape, generator=torch.Generator().manual_seed(5)) * sigma
        ref = torch.exp(z) if kind == "lognormal" else (1 + z).clamp(min=0)
        assert_same_distribution(factor, ref, kind)


def test_the_draws_are_quantile_buckets_of_equal_probability() -> None:
    """The 16-bit bucket indices are uniform (chi-square over 256 bins of the top 8 bits)
    and the midpoints of the used buckets are those of the standard normal."""
    _, _, _, keys = draw_case(0.05, 0.0)
    ws = noise.Workspace(SLOTS * COLS, torch.device("cpu"))
    idx = noise.bucket_indices(keys, COLS, noise.column_mix(COLS, keys.device), ws)
    counts = torch.bincount((idx.reshape(-1) >> 8).long(), minlength=256).double()
    expected = idx.numel() / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 255 + 5 * math.sqrt(2 * 255)  # 255 degrees of freedom, ~5 sigma
    table = noise.NormalTable.on(torch.device("cpu"))
    assert table.narrow_fraction > 0.99  # midpoints used for > 99% of the draws
    finite = table.mid[table.mid.isfinite()]
    assert abs(float(finite.mean())) < 1e-3 and abs(float(finite.var()) - 1) < 0.02


def _noisy_layer(seed: int = 2, step: float = 1.0, **device: object
                 ) -> tuple[LayerKernel, Tensor]:
    """A small conv layer on a noisy device (variation, read noise, accumulated deviation;
    `device`: overrides of those, `device.` left out of the keys; `step`: the ADC's)."""
    effects = {"variation": "lognormal", "variation_sigma": 0.05, "read_noise_sigma": 0.02,
               "accumulated_deviation_sigma": 0.05, **device}
    hw = preset("isaac").with_overrides({
        "array.rows": 40, "array.cols": 48, "ou.rows": 9, "ou.cols": 8, "adc.bits": 5,
        "dac.bits": 2, "adc.step": step, "device.seed": seed,
        **{f"device.{key}": value for key, value in effects.items()}})
    net = nets.single_conv(in_ch=6, out_ch=8, k=3, stride=1, padding=1, seed=13)
    x = nets.random_images(9, 6, 6, seed=13, signed=True)
    layer = quantize_model(nn.Sequential(net), x, 8, 8).layers[0]
    return LayerKernel(map_dense(layer, hw), torch.device("cpu")), layer.quantize_input(x)


def test_draws_do_not_depend_on_tasks_slices_or_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A seeded noisy call gives the same accumulator on 1 and 2 threads, with the images cut
    into 1, 2 or many tasks (memory budget) and the candidates into tiny slices, with the
    compiled per-conversion kernel and without; a second call (the next batch) draws anew;
    the same seed gives the same result in a new kernel."""
    from sparsexbar.core.engine import plan

    results = []
    for threads, budget, slice_outputs, compiled in (
            (1, 512.0, plan.SLICE_OUTPUTS, True), (1, 512.0, plan.SLICE_OUTPUTS, False),
            (2, 512.0, plan.SLICE_OUTPUTS, True), (2, 0.05, plan.SLICE_OUTPUTS, True),
            (1, 512.0, 64, True), (2, 512.0, 64, False)):
        monkeypatch.setattr(plan, "SLICE_OUTPUTS", slice_outputs)
        kernel, x_int = _noisy_layer()
        assert not kernel.clip_path and not kernel.deviation_only
        opts = EngineOptions(exact_shortcut=False, threads=threads, memory_budget_mb=budget,
                             compiled_noise=compiled)
        if budget < 1:
            assert len(kernel.task_spans(9, tuple(x_int.shape[1:]), budget, 2)) > 2
        first = kernel.accumulate(x_int, opts)
        second = kernel.accumulate(x_int, opts)
        assert not torch.equal(first, second)  # the next call draws anew
        results.append((first, second))
    for first, second in results[1:]:
        assert torch.equal(first, results[0][0]) and torch.equal(second, results[0][1])
    other, x_int = _noisy_layer(seed=3)
    assert not torch.equal(other.accumulate(x_int, EngineOptions(exact_shortcut=False)),
                           results[0][0])


def test_flagged_finds_every_gap_above_the_limit_and_every_nan() -> None:
    """`_flagged`'s CPU search (numpy, the whole slice) and its segment search (used where the
    gaps are not a contiguous CPU tensor, as on CUDA) give the same ascending indices: every
    gap above the limit and every NaN, a length that is not a multiple of the segment."""
    gen = torch.Generator().manual_seed(3)
    n = 100 * noise.SEGMENT + 7
    gap = torch.rand(n, generator=gen) * 0.45
    picked = torch.randperm(n, generator=gen)[:300]
    gap[picked[:250]] = 0.5 + torch.rand(250, generator=gen)
    gap[picked[250:]] = float("nan")
    gap[-1] = 0.6  # in the tail past the last whole segment
    expected = torch.sort(torch.cat([picked, torch.tensor([n - 1])]).unique()).values
    limit = 0.4999
    assert torch.equal(noise._flagged(gap, limit), expected)
    spaced = torch.zeros(2 * n)[::2]  # a strided view: the segment search
    spaced.copy_(gap)
    assert not spaced.is_contiguous()
    assert torch.equal(noise._flagged(spaced, limit), expected)


@pytest.mark.parametrize("effect", list(EFFECTS))
def test_deferred_refinements_give_the_same_codes(effect: str) -> None:
    """With `deferred`, the flagged conversions' codes read 0 and `Refinements.codes()` gives
    exactly the codes `noisy_adc` computes in place, in the order of their (row, column),
    over several calls (the full path refines a cycle's slices together)."""
    read, deviation, step = EFFECTS[effect]
    p, _, code, keys = draw_case(read, deviation, step)
    dev = torch.full((SLOTS, 1), deviation) if deviation > 0 else None
    deferred = noise.Refinements(read, TOP, step)
    half = SLOTS // 2
    ws = noise.Workspace(SLOTS * COLS, p.device)
    parts = []
    for rows in (slice(0, half), slice(half, SLOTS)):  # two calls, as two slices
        part = noise.noisy_adc(p[rows].contiguous(), keys[rows].contiguous(), read,
                               None if dev is None else dev[rows], TOP, step, ws,
                               noise.margin(2 * 81), deferred).clone()
        parts.append(part)
    deferred.rows[1] = deferred.rows[1] + half  # the second call's rows in the whole
    got = torch.cat(parts)
    flat = torch.cat(deferred.rows) * COLS + torch.cat(deferred.cols)
    assert flat.numel() > 0 and bool((got.view(-1)[flat] == 0).all())
    got.view(-1).index_copy_(0, flat, deferred.codes())
    assert torch.equal(got, code)


def _eager_and_compiled(p: Tensor, keys: Tensor, read: float, dev: Tensor | None, step: float,
                        deferred: bool, top: float = TOP) -> tuple[Tensor, Tensor]:
    """`noisy_adc`'s codes without and with the compiled loop (`native.NativeHead`); with
    `deferred`, the refinements added where they belong."""
    rows, k = (int(v) for v in p.shape)
    codes = []
    for compiled in (None, NativeHead.run):
        batch = noise.Refinements(read, top, step) if deferred else None
        ws = noise.Workspace(rows * k, p.device)
        code = noise.noisy_adc(p, keys, read, dev, top, step, ws, noise.margin(2 * 81), batch,
                               compiled).clone()
        if batch is not None and batch.keys:
            flat = torch.cat(batch.rows) * k + torch.cat(batch.cols)
            code.view(-1).index_add_(0, flat, batch.codes())
        codes.append(code)
    return codes[0], codes[1]


@pytest.mark.parametrize("effect", [*EFFECTS, "read noise, step 3", "deviation only, step 0.7"])
def test_the_compiled_loop_gives_the_eager_codes(effect: str) -> None:
    """`noisy_adc` with the compiled per-conversion loop: every code equal to the eager
    passes' (refined in place and deferred), on the boundary-heavy partial sums of
    `draw_case` and on random ones (odd column count: a pair's high half unused; more
    columns than the loop's block of 128), with steps whose division is inexact; the
    compiled loop ran (no fallback warning) and flagged what the eager check flags, up to
    the few conversions an ulp of the check's left side moves across its bound."""
    read, deviation, step = EFFECTS.get(effect, (0.05, 0.0, 3.0) if "step 3" in effect
                                        else (0.0, 0.4, 0.7))
    top = TOP
    p, _, _, keys = draw_case(read, deviation, step)
    dev = torch.full((SLOTS, 1), deviation) if deviation > 0 else None
    gen = torch.Generator().manual_seed(11)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SparsexbarWarning)
        for rows, k in ((700, 37), (300, 301)):
            p_random = torch.rand((rows, k), generator=gen) * 45 * step
            keys_random = keys[:rows].contiguous()
            dev_random = None if dev is None else torch.rand((rows, 1), generator=gen) * deviation
            for deferred in (False, True):
                eager, compiled = _eager_and_compiled(p, keys, read, dev, step, deferred, top)
                assert torch.equal(eager, compiled), (effect, deferred)
                eager, compiled = _eager_and_compiled(p_random, keys_random, read, dev_random,
                                                      step, deferred, top)
                assert torch.equal(eager, compiled), (effect, deferred, "random", k)
        rows, k = (int(v) for v in p.shape)
        ws = noise.Workspace(rows * k, p.device)
        code, gap = noise._eager_head(p, keys, noise.column_mix(k, p.device),
                                      noise.NormalTable.on(p.device).mid, read, dev, top, step,
                                      ws)
        limit = 0.5 - noise.margin(2 * 81)
        eager_flagged = set(noise._flagged(gap.view(-1), limit).tolist())
        alpha = (read if dev is None else 1.0) * noise.NARROW / step
        got = NativeHead.run(p, keys, noise.column_mix(k, p.device),
                             dev, noise.NormalTable.on(p.device).mid, read, top, step, alpha,
                             limit, torch.empty_like(p), torch.empty(p.numel(), dtype=torch.int64))
    assert got is not None and len(eager_flagged) > 0
    assert len(set(got.tolist()) ^ eager_flagged) <= len(eager_flagged) // 1000 + 2


def test_conversion_buckets_are_the_bucket_indices_entries() -> None:
    """The buckets of single conversions (the flagged ones, refined) equal `bucket_indices`
    at their (row, column), even and odd columns, odd k."""
    _, _, _, keys = draw_case(0.05, 0.0)
    k = 37
    mix = noise.column_mix(k, keys.device)
    ws = noise.Workspace(SLOTS * k, keys.device)
    idx = noise.bucket_indices(keys, k, mix, ws)
    gen = torch.Generator().manual_seed(2)
    row = torch.randint(0, SLOTS, (5000,), generator=gen)
    col = torch.randint(0, k, (5000,), generator=gen)
    got = noise.conversion_buckets(keys.index_select(0, row), mix, col)
    assert torch.equal(got, idx[row, col])


def test_the_loop_is_loaded_only_from_a_folder_only_this_user_can_write(tmp_path: Path) -> None:
    """A library planted in a folder others may write into is never loaded: the loop is built
    in a fresh private folder instead; a private folder is used and reused."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    lib = native.build(folder=shared)
    assert not list(shared.glob("*.so")) and shared.resolve() not in Path(lib._name).parents
    own = tmp_path / "own"
    first = native.build(folder=own)
    assert Path(first._name).parent == own and (own.stat().st_mode & 0o777) == 0o700
    assert native.build(folder=own)._name == first._name


def test_a_compiler_failure_falls_back_to_the_eager_path(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    """With no working C compiler, building the loop raises naming the compiler and its
    first error line; `NativeHead.run` then warns once, with the reason, and returns None;
    `noisy_adc` gives the eager codes, and the engine's noisy call the eager accumulator."""
    fake = tmp_path / "cc"
    fake.write_text("#!/bin/sh\necho 'cc: error: no such compiler here' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(RuntimeError, match="no C compiler found"):
        native.build(("no-such-compiler-xyz",), tmp_path / "lib")
    with pytest.raises(RuntimeError, match="no such compiler here"):
        native.build((str(fake),), tmp_path / "lib")
    assert not list((tmp_path / "lib").glob("*.so"))  # nothing half-built left
    monkeypatch.setattr(NativeHead, "_lib", None)  # this process's library, restored after
    monkeypatch.setattr(NativeHead, "_failed", [])
    build = native.build
    monkeypatch.setattr(native, "build", lambda: build((str(fake),), tmp_path / "lib"))
    read, deviation, step = EFFECTS["read noise + accumulated deviation"]
    p, _, code, keys = draw_case(read, deviation, step)
    dev = torch.full((SLOTS, 1), deviation)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ws = noise.Workspace(SLOTS * COLS, p.device)
        got = noise.noisy_adc(p, keys, read, dev, TOP, step, ws, noise.margin(2 * 81), None,
                              NativeHead.run).clone()
        kernel, x_int = _noisy_layer()
        fallback = kernel.accumulate(x_int, EngineOptions(exact_shortcut=False))
    assert torch.equal(got, code)
    messages = [str(w.message) for w in caught if issubclass(w.category, SparsexbarWarning)]
    assert len(messages) == 1 and "no such compiler here" in messages[0]
    assert "\n" not in messages[0]
    assert NativeHead.library() is None
    eager, x_int = _noisy_layer()
    assert torch.equal(fallback,
                       eager.accumulate(x_int, EngineOptions(exact_shortcut=False,
                                                             compiled_noise=False)))


@pytest.mark.parametrize(("step", "device", "deviation_only"), [
    (1.0, {"accumulated_deviation_sigma": 0.0}, False),  # read noise alone: the read-only head
    # accumulated deviation alone: clip path, full path on noisy groups, tail events
    (1.0, {"variation": "none", "variation_sigma": 0.0, "read_noise_sigma": 0.0,
           "accumulated_deviation_sigma": 0.3}, True),
    (2.0, {}, False),  # read noise + deviation with a step of 2
], ids=["read noise", "accumulated deviation only", "step 2"])
def test_compiled_and_eager_noisy_calls_are_equal(step: float, device: dict[str, object],
                                                  deviation_only: bool) -> None:
    """A layer's noisy call with and without the compiled kernel gives the same accumulator,
    for the device settings that take the other heads and paths."""
    results = []
    for compiled in (True, False):
        kernel, x_int = _noisy_layer(step=step, **device)
        assert kernel.deviation_only == deviation_only
        opts = EngineOptions(exact_shortcut=False, compiled_noise=compiled)
        results.append(kernel.accumulate(x_int, opts))
    assert torch.equal(results[0], results[1])
    assert bool(results[0].isfinite().all())
