"""The Python API's own checks, found by a probe of `simulate()` as a script would call it:
a config edited after it was made is checked whole, a `qmodel` of other bits is refused, a
scheme object is not changed by a run, booleans and text are not numbers, input sizes are
bounded. Each test fails on the code before the fix."""

from __future__ import annotations

import pytest
import torch

from sparsexbar import InputSpec, simulate
from sparsexbar.core.config import load_config, preset
from sparsexbar.core.errors import ConfigError, SparsexbarError
from sparsexbar.core.frontend import quantize_model
from sparsexbar.schemes import get_scheme
from sparsexbar.schemes.comprrae import CompRRAEScheme
from tests import nets

HW = preset("isaac").with_overrides({"array.rows": 32, "array.cols": 32, "ou.rows": 8,
                                     "ou.cols": 8})


def _data(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    return nets.random_images(n, 1, 8, seed=0), nets.random_labels(n, 10, seed=0)


def test_a_config_edited_after_it_was_made_is_checked_whole() -> None:
    """`cfg.array.rows = 8` with ou.rows 16 ran and was recorded (a machine the same setting
    as an override is refused as); the run checks the object again, and runs on a copy."""
    cfg = preset("isaac")
    cfg.array.rows = 8  # each field alone is valid
    with pytest.raises(ConfigError, match="ou.rows=16 is larger than array.rows=8"):
        simulate(nets.tiny_cnn(1, 10, 8, 4, seed=0), _data(), hw=cfg)
    assert load_config(HW) == HW and load_config(HW) is not HW


def test_setting_an_invalid_field_raises_one_line_config_error() -> None:
    cfg = preset("isaac")
    for section, field, value, words in (("ou", "rows", 0, "greater than or equal to 1"),
                                         ("cell", "sign", "foo", "'differential' or 'offset'"),
                                         ("adc", "bits", "6", "not text ('6')")):
        with pytest.raises(ConfigError) as info:
            setattr(getattr(cfg, section), field, value)
        assert words in str(info.value) and "\n" not in str(info.value)
    cfg.adc.bits = 6  # a valid value is set
    assert cfg.adc.bits == 6


def test_quoted_numbers_in_a_config_are_refused() -> None:
    """YAML's `bits: "5"` was taken as 5; the CLI's --set values are parsed before (5)."""
    for section, key in (("adc", "bits"), ("array", "rows"), ("timing", "read_ns")):
        with pytest.raises(ConfigError, match=rf"{section}\.{key}: must be .*not text"):
            load_config({section: {key: "5"}})
    assert load_config({"adc": {"bits": "auto"}}).adc.bits == "auto"
    assert load_config("isaac", {"adc.bits": "5"}).adc.bits == 5
    assert load_config({"cell": {"sign": "offset"}}).cell.sign.value == "offset"


def test_a_qmodel_of_other_bits_than_the_hardware_is_refused() -> None:
    """An 8-bit qmodel with numbers at 3 bits gave the 8-bit network's accuracy beside the
    3-bit schedule's events."""
    net = nets.tiny_cnn(1, 10, 8, 4, seed=0)
    x, y = _data()
    q8 = quantize_model(net, x, 8, 8)
    with pytest.raises(SparsexbarError, match="qmodel was quantized to 8-bit weights"):
        simulate(net, (x, y), hw=HW, qmodel=q8,
                 overrides={"numbers.weight_bits": 3, "numbers.input_bits": 3})
    assert simulate(net, (x, y), hw=HW, qmodel=q8).num_images == 4


def test_a_scheme_object_is_not_changed_by_a_run() -> None:
    """combined's per-layer choices (and encoding's ADC bits) stayed in the caller's object:
    a second model's result listed the first model's layers."""
    first = nets.tiny_cnn(1, 10, 8, 4, seed=0)
    torch.manual_seed(1)  # layers named otherwise ('0', '3'): the first's names would show
    second = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                 torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 10))
    for name in ("combined", "encoding"):
        scheme = get_scheme(name)
        before = scheme.options()
        simulate(first, _data(), hw=HW, scheme=scheme)
        assert scheme.options() == before
        two = simulate(second, _data(), hw=HW, scheme=scheme)
        alone = simulate(second, _data(), hw=HW, scheme=name)
        assert two.scheme.parameters == alone.scheme.parameters
        assert two.to_json()["totals"] == alone.to_json()["totals"]


def test_booleans_are_not_numbers_in_comprrae_and_input_specs() -> None:
    for kwargs in ({"alpha": True}, {"alpha": False}, {"beta": True},
                   {"alpha": {"conv1": True}}):
        with pytest.raises(SparsexbarError, match="comprrae (alpha|beta) must be"):
            CompRRAEScheme(**kwargs)  # type: ignore[arg-type]
    for kwargs in ({"channels": True}, {"size": True}, {"size": 2**40}, {"size": 100_000},
                   {"channels": 5000}, {"size": 0}):
        with pytest.raises(SparsexbarError, match="must be a whole number from 1 to"):
            InputSpec(**kwargs)  # type: ignore[arg-type]
    assert InputSpec(channels=3, size=4096).size == 4096


def test_sre_and_combined_on_a_layer_whose_weights_are_all_zero() -> None:
    """Every row set of such a layer is empty: the counting's digit base was 1 and the search
    for digits per call ran for hours (a probe stopped it after 10 min of CPU). Now the layer
    runs no OU, and the outputs equal dense's."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 10))
    with torch.no_grad():  # a conv and the classifier (the case that hung) all zero
        net[2].weight.zero_()
        net[5].weight.zero_()
    dense = simulate(net, _data(), hw="isaac")
    for name in ("sre", "combined"):
        res = simulate(net, _data(), hw="isaac", scheme=name)
        assert dense.outputs is not None and res.outputs is not None
        assert torch.equal(res.outputs, dense.outputs)
        for lay in res.to_json()["layers"]:
            if lay["name"] in ("2", "5"):
                assert lay["events"]["ou_activations"] == 0 == lay["events"]["adc_conversions"]


def test_wrapped_models_are_refused_naming_the_module_inside() -> None:
    net = nets.tiny_cnn(1, 10, 8, 4, seed=0)
    for wrapper, inside in ((torch.nn.DataParallel(net), "model.module"),
                            (torch.compile(net), "model._orig_mod")):
        with pytest.raises(SparsexbarError, match=rf"pass the module inside \({inside}\)"):
            simulate(wrapper, _data(), hw=HW)


def test_limit_and_batch_size_messages_name_the_type() -> None:
    """`limit=np.int64(4)` read "must be a positive whole number, got 4"."""
    import numpy as np

    with pytest.raises(SparsexbarError, match=r"got np.int64\(4\) \(int64\)"):
        simulate(nets.tiny_cnn(1, 10, 8, 4, seed=0), _data(), hw=HW, limit=np.int64(4))
    with pytest.raises(SparsexbarError, match=r"got '2' \(str\)"):
        simulate(nets.tiny_cnn(1, 10, 8, 4, seed=0), _data(), hw=HW, batch_size="2")


def test_energy_plot_of_all_zero_energies_warns_nothing() -> None:
    """Every energy set to 0: matplotlib's "No artists with labels found to put in legend"
    reached the user as a two-line Python warning."""
    import json
    import warnings
    from pathlib import Path

    from sparsexbar.app.plotting import energy_by_component

    result = json.loads((Path(__file__).parent / "data" / "result_small.json").read_text())[
        "dense"]
    result["totals"]["energy_pj"] = {k: 0.0 for k in result["totals"]["energy_pj"]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        png = energy_by_component([result], ["dense"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_tables_on_a_narrow_terminal_fold_their_numbers() -> None:
    """On an 80-column terminal every figure was cut to 'featur…', '1,605,6…': the cells fold
    (wrap inside the cell) instead, so every digit is printed."""
    import io
    import json
    from pathlib import Path

    from rich.console import Console

    from sparsexbar.app.report import print_tables

    result = json.loads((Path(__file__).parent / "data" / "result_small.json").read_text())
    buf = io.StringIO()
    print_tables(list(result.values()), Console(file=buf, width=80))
    text = buf.getvalue()
    assert "…" not in text and "top-1" in text
    for layer in result["dense"]["layers"]:
        assert f"{layer['events']['ou_activations']:,}" in text


def test_pareto_title_counts_the_points_it_draws() -> None:
    """An infinite throughput (a run with no crossbar time) is not drawn: the title said 6
    points where 4 were drawn."""
    from sparsexbar.app.plotting import pareto_title

    rows = [{"a": 1.0, "b": v} for v in (1.0, 2.0, float("inf"), float("nan"))]
    assert pareto_title(rows, "a", "b", "b vs a", 1) == (
        "b vs a: 2 points (2 not drawn: infinite or undefined), 1 on the front")
    assert pareto_title(rows[:2], "a", "b", "b vs a", 2) == "b vs a: 2 points, 2 on the front"


def test_a_config_made_in_python_raises_one_line_config_error() -> None:
    """`HardwareConfig(ou={"rows": 1000})` raised pydantic's multi-line ValidationError;
    from_dict and load_config keep naming their source."""
    from sparsexbar import HardwareConfig

    for kwargs, words in (({"ou": {"rows": 1000}}, "ou.rows=1000 is larger than array.rows"),
                          ({"foo": 1}, "foo: Extra inputs"),
                          ({"adc": {"bits": 99}}, "adc.bits: Input should be less than")):
        with pytest.raises(ConfigError) as info:
            HardwareConfig(**kwargs)
        assert words in str(info.value) and "\n" not in str(info.value)
        assert str(info.value).startswith("invalid hardware HardwareConfig(...):")
    with pytest.raises(ConfigError, match="^invalid hardware config: ou.rows=1000"):
        load_config({"ou": {"rows": 1000}})
    assert HardwareConfig(ou={"rows": 4, "cols": 4}).ou.rows == 4


def test_input_spec_takes_means_as_arrays_and_tensors() -> None:
    """`InputSpec(mean=torch.tensor([0.5]))` was refused as "must be finite numbers, got
    (tensor([0.5000]),)"."""
    import numpy as np

    for mean in (torch.tensor([0.5, 0.25]), np.array([0.5, 0.25]), [np.float32(0.5), 0.25]):
        assert InputSpec(mean=mean, std=(0.5,)).mean == (0.5, 0.25)  # type: ignore[arg-type]
    with pytest.raises(SparsexbarError, match="must be finite numbers"):
        InputSpec(mean=torch.tensor([float("nan")]))  # type: ignore[arg-type]


def test_a_model_that_is_neither_a_module_nor_text_is_refused_by_its_type() -> None:
    for model in (None, 123, 1.5):
        with pytest.raises(SparsexbarError, match="model must be an nn.Module or text"):
            simulate(model, _data(), hw=HW)  # type: ignore[arg-type]


def test_uniform_rows_give_every_row_every_key() -> None:
    """comprrae's study rows had three key sets (a setting's own keys missing elsewhere)."""
    from sparsexbar.studies.writers import uniform_rows

    rows = uniform_rows([{"run": "dense", "top1": 0.9}, {"run": "END", "lossless": True},
                         {"run": "alpha", "top1": 0.8, "in_budget": False}])
    assert [list(r) for r in rows] == [["run", "top1", "lossless", "in_budget"]] * 3
    assert rows[0]["lossless"] is None and rows[1]["top1"] is None
    assert rows[2] == {"run": "alpha", "top1": 0.8, "lossless": None, "in_budget": False}


def test_turning_variation_on_keeps_the_fault_map_of_the_seed() -> None:
    """The faults were drawn after the variation from one generator: with variation on, the
    same seed stuck other cells (9.6% overlap, chance level) and an ablation "stuck-at" vs
    "stuck-at + variation" compared two fault maps (found by a probe)."""
    from sparsexbar.core.mapping import program_conductance

    gen = torch.Generator().manual_seed(0)
    levels = torch.randint(1, 4, (128, 64), generator=gen, dtype=torch.uint8)
    faults = {"device.stuck_at_off_rate": 0.1, "device.stuck_at_on_rate": 0.05,
              "device.seed": 3}
    plain = program_conductance(levels, preset("isaac").with_overrides(faults), "fc")
    varied = program_conductance(levels, preset("isaac").with_overrides(
        {**faults, "device.variation": "lognormal", "device.variation_sigma": 0.1}), "fc")
    assert 0.08 < float((plain == 0).float().mean()) < 0.12
    below_top = levels < 3  # a cell stuck on reads 3; level-3 cells read 3 unless varied
    assert torch.equal(plain == 0, varied == 0)
    assert torch.equal((plain == 3) & below_top, (varied == 3) & below_top)
    assert int(((plain == 3) & below_top).sum()) > 100
    assert not torch.equal(plain, varied)  # the other cells do vary


def test_si_figures_keep_three_significant_digits() -> None:
    """'39 uJ' beside '19.6 uJ' read as two precisions; a value that rounds up to 1000 takes
    the next prefix."""
    from sparsexbar.app.report import _si

    cases = {39e-6: "39.0 uJ", 19.6e-6: "19.6 uJ", 194e-6: "194 uJ", 999.6e-6: "1.00 mJ",
             7.03e-3: "7.03 mJ", 0.0: "0 J", 74e9: "74.0 GJ",
             # below the smallest prefix: in it (0.5 pJ read "500 pJ" in 60384d7's version)
             5e-13: "0.500 pJ"}
    assert {v: _si(v, "J") for v in cases} == cases


def test_combined_on_a_noisy_device_reports_the_bits_it_converts_with() -> None:
    """combined and X+encoding lowered the reported (and charged) ADC bits on a noisy device
    while the values were converted at the configured bits; and combined reported comprrae's
    bit-order override where no layer ran comprrae (found by a probe)."""
    net = nets.tiny_cnn(1, 10, 8, 4, seed=0)
    noisy = {"device.stuck_at_on_rate": 0.3, "device.seed": 1}
    dense = simulate(net, _data(16), hw="isaac", overrides=noisy)
    dense_bits = [lay.adc_bits for lay in dense.layers]
    for name in ("sre-weight+encoding", "combined"):
        res = simulate(net, _data(16), hw="isaac", overrides=noisy, scheme=name)
        assert [lay.adc_bits for lay in res.layers] == dense_bits, name
        assert "numbers.bit_order" not in (res.scheme.overrides or {}), name
        assert res.outputs is not None and torch.isfinite(res.outputs).all()
    # with an ideal device the bits are lowered where that is exact, and comprrae runs
    ideal = simulate(net, _data(16), hw="isaac", scheme="sre-weight+encoding")
    assert sum(lay.adc_bits for lay in ideal.layers) < sum(dense_bits)
    ideal = simulate(net, _data(16), hw="isaac", scheme="combined")
    assert "numbers.bit_order" in (ideal.scheme.overrides or {})
