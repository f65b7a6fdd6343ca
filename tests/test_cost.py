"""Cost model v2 (docs/cost.md): adc.bits auto never clips and equals the integer reference bit
for bit; the ISAAC comparison's our-side figures, worked by hand; every scheme's logic is
charged (events x their constants, units in the area); the timing rule shortens time for fewer
ADC bits, terminated columns and skipped OUs alike."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sparsexbar
from sparsexbar.core.config import preset
from sparsexbar.core.cost import ENERGY_COMPONENTS, full_use_power_mw
from sparsexbar.core.frontend import quantize_model
from sparsexbar.core.mapping import map_dense
from sparsexbar.studies.isaac_check import TOLERANCE, isaac_comparison
from tests import nets
from tests.test_sre import prune_blocks


# ---- adc.bits auto ---------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(ou_rows=st.integers(1, 24), cell_bits=st.integers(1, 4), dac_bits=st.integers(1, 3),
       array_rows=st.sampled_from([8, 16, 32]), seed=st.integers(0, 1000),
       step=st.sampled_from([1.0, 1.0, 2.0]))
def test_auto_bits_never_clip_and_equal_the_integer_reference(
        ou_rows: int, cell_bits: int, dac_bits: int, array_rows: int, seed: int,
        step: float) -> None:
    ou_rows = min(ou_rows, array_rows)
    hw = preset("isaac").with_overrides({
        "array.rows": array_rows, "array.cols": 16, "ou.rows": ou_rows, "ou.cols": 4,
        "cell.bits": cell_bits, "dac.bits": dac_bits, "adc.bits": "auto", "adc.step": step})
    model = nets.tiny_cnn(1, 10, 6, 3, seed=seed)
    x = nets.random_images(3, 1, 6, seed=seed)
    qmodel = quantize_model(model, x, 8, 8)
    for layer in qmodel.layers:
        mapped = map_dense(layer, hw)
        bits = mapped.hw.adc_bits
        rows = min(ou_rows, array_rows, layer.rows)
        worst = rows * (2**cell_bits - 1) * (2**dac_bits - 1)  # any weights, any inputs
        # never clips: the exact largest partial sum of these weights fits, and so does the
        # worst case of any weights; the fewest such bits: one fewer cannot hold the worst
        assert mapped.max_partial_sum() <= worst <= (2**bits - 1) * step
        assert bits == 1 or (2 ** (bits - 1) - 1) * step < worst
        assert not mapped.adc_can_clip()
    if step == 1.0:  # a unit step is lossless: the integer reference, bit for bit
        res = sparsexbar.simulate(model, (x, torch.zeros(3, dtype=torch.int64)), hw=hw,
                                  scheme="dense", options=sparsexbar.EngineOptions(
                                      exact_shortcut=False))
        assert res.outputs is not None
        assert torch.equal(res.outputs, qmodel.run_reference(x))


def test_fixed_bits_stay_fixed_and_may_clip() -> None:
    hw = preset("isaac").with_overrides({"adc.bits": 3})
    model = nets.tiny_cnn(1, 10, 8, 4, seed=2)
    x = nets.random_images(2, 1, 8, seed=2)
    layer = quantize_model(model, x, 8, 8).layers[1]
    mapped = map_dense(layer, hw)
    assert mapped.hw.adc_bits == 3 and mapped.adc_can_clip()


# ---- the ISAAC comparison --------------------------------------------------------------------
def test_isaac_full_use_power_worked_by_hand() -> None:
    """isaac-paper, 96 arrays (one tile), every array reading whole (128 rows, 128 columns):
    one activation takes max(100 ns read, 128 rounds x 8 / (8 x 1.2) ns) = 106.67 ns."""
    hw = preset("isaac-paper")
    act_ns = max(100.0, 128 * 8 / (8 * 1.2))
    assert act_ns == pytest.approx(106.6667, rel=1e-5)
    power = full_use_power_mw(hw, 96)
    per_act = {"adc": 128 * 1.6667, "dac": 128 * 0.39, "crossbar": 128 * 128 * 0.00183,
               "shift_add": 128 * 0.0208}
    for name, pj in per_act.items():
        assert power[name] == pytest.approx(96 * pj / act_ns, rel=1e-9), name
    # buffer: 128 words of 2 bytes read per 16 activations (16-bit inputs, 1-bit DAC), and
    # 128 / 8 output words of 2 bytes written, 0.64 pJ per byte
    buffer_pj = (128 * 2 * 0.64 + 16 * 2 * 0.64) / 16
    assert power["buffer"] == pytest.approx(96 * buffer_pj / act_ns, rel=1e-9)
    assert power["adc"] == pytest.approx(192.0, rel=1e-3)  # ISAAC: 16 mW x 12 IMAs


def test_isaac_comparison_within_tolerance_or_explained() -> None:
    rows = {r.component.split(" (")[0]: r for r in isaac_comparison()}
    ours = {name: (r.ours_mw, r.ours_mm2) for name, r in rows.items()}
    assert ours["ADC"] == (pytest.approx(192.0, rel=1e-3), pytest.approx(0.1152, rel=1e-6))
    assert ours["DAC"] == (pytest.approx(44.928, rel=1e-3), pytest.approx(0.0020398, rel=1e-3))
    assert ours["memristor arrays"] == (pytest.approx(26.984, rel=1e-3),
                                        pytest.approx(0.002406, rel=1e-3))
    assert ours["shift-and-add"] == (pytest.approx(2.396, rel=1e-3),
                                     pytest.approx(0.00288, rel=1e-6))
    assert ours["eDRAM buffer"] == (pytest.approx(10.368, rel=1e-3),
                                    pytest.approx(0.083008, rel=1e-6))
    for r in rows.values():
        if r.ours_mw is None:
            assert r.note  # not modelled: the reason is given
            continue
        assert r.power_ratio is not None and r.area_ratio is not None
        within = abs(r.power_ratio - 1) <= TOLERANCE and abs(r.area_ratio - 1) <= TOLERANCE
        assert within or r.note, r.component


# ---- every unit charged ----------------------------------------------------------------------
def _pruned_case() -> tuple[Any, tuple[torch.Tensor, torch.Tensor]]:
    net = prune_blocks(nets.tiny_cnn(1, 10, 8, 6, seed=4), 0.4, 4)
    x = nets.random_images(3, 1, 8, seed=4)
    x = torch.where(torch.rand(x.shape, generator=torch.Generator().manual_seed(4)) < 0.3,
                    torch.zeros_like(x), x)
    return net, (x, torch.zeros(3, dtype=torch.int64))


@pytest.mark.parametrize(("scheme", "units"), [
    ("sre", {"zero_detect": "zero_checks", "ou_forming": "ou_forms", "index": "index_reads"}),
    ("pattern", {"gather": "gathers", "routing": "routes", "zero_detect": "zero_checks"}),
    ("encoding", {"encoder": "encodes", "decoder": "decodes", "zero_detect": "zero_checks"}),
    ("comprrae", {"comparator": "comparisons", "lut": "lut_reads"}),
])
def test_scheme_logic_is_charged(scheme: str, units: dict[str, str]) -> None:
    net, data = _pruned_case()
    hw = preset("isaac").with_overrides({"array.rows": 32, "array.cols": 32, "ou.rows": 8,
                                         "ou.cols": 8})
    if scheme == "pattern":
        from sparsexbar.training.prune import pattern_prune_model
        net = nets.tiny_cnn(1, 10, 8, 6, seed=4)
        pattern_prune_model(net, None, 4, 3, 0.5, steps=1, epochs=0)
        net.eval()
    res = sparsexbar.simulate(net, data, hw=hw, scheme=scheme).to_json()
    e = hw.energy
    per_event = {"zero_checks": e.zero_check_pj, "ou_forms": e.ou_form_pj,
                 "index_reads": e.index_read_pj_per_bit + e.index_decode_pj_per_bit,
                 "gathers": e.gather_pj, "routes": e.route_pj, "encodes": e.encode_pj,
                 "decodes": e.decode_pj, "comparisons": e.comparison_pj,
                 "lut_reads": e.lut_read_pj}
    charged = False
    for lay in res["layers"]:
        assert set(lay["energy_pj"]) == {*ENERGY_COMPONENTS, "total"}
        for component, event in units.items():
            count = lay["events"][event]
            assert lay["energy_pj"][component] == pytest.approx(count * per_event[event],
                                                                rel=1e-12)
            charged |= count > 0
    assert charged
    area = res["totals"]["area_um2"]
    if scheme in ("sre", "pattern", "encoding"):  # logic units beside the arrays
        assert area["logic"] > 0 and area["logic"] % hw.area.logic_unit_um2 == pytest.approx(0)


# ---- the timing rule, end to end -------------------------------------------------------------
def test_fewer_adc_bits_and_terminated_columns_shorten_time() -> None:
    """On an ADC-bound design (short read), dense with a 4-bit ADC takes half the time of an
    8-bit one when nothing clips; comprrae's terminated columns shorten it further."""
    net = nets.tiny_cnn(1, 10, 8, 4, seed=6)
    x = nets.random_images(4, 1, 8, seed=6)
    data = (x, torch.zeros(4, dtype=torch.int64))
    base = {"array.rows": 32, "array.cols": 32, "ou.rows": 1, "ou.cols": 16,
            "timing.read_ns": 0.01, "dac.bits": 1, "cell.bits": 2}
    eight = sparsexbar.simulate(net, data, "isaac", "dense", overrides={**base, "adc.bits": 8})
    four = sparsexbar.simulate(net, data, "isaac", "dense", overrides={**base, "adc.bits": 4})
    assert all(lay["time_bound"] == "adc" for lay in eight.to_json()["layers"])
    assert four.totals.latency_s == pytest.approx(eight.totals.latency_s / 2, rel=1e-12)
    assert torch.equal(four.outputs, eight.outputs)  # 1 row x level 3: 4 bits cannot clip
    comp = sparsexbar.simulate(net, data, "isaac", "comprrae", overrides={**base, "adc.bits": 8})
    assert comp.to_json()["vs_dense"]["computation_reduction"]["adc_conversions"] > 0
    assert comp.totals.latency_s < eight.totals.latency_s
    assert math.isclose(comp.to_json()["vs_dense"]["speedup"],
                        eight.totals.latency_s / comp.totals.latency_s, rel_tol=1e-12)
