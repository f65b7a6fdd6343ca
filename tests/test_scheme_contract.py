"""What every registered scheme promises, one body over the registry (a new scheme is checked
by being registered):

- in its lossless settings (its defaults, on an ideal device with a lossless ADC) its outputs
  equal the integer-quantized reference network's bit for bit;
- the `dense_events` it reports are the events the `dense` scheme does on the same inputs;
- its `name:key=value` text round-trips: text -> scheme -> canonical text -> an equal scheme,
  and the canonical text is a fixed point; every declared option takes a value;
- bad options (an unknown key, a repeated key, a value its option does not take, options for
  a scheme without any) end the CLI with exit code 2 and one line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import sparsexbar
from sparsexbar.core.errors import SparsexbarError
from sparsexbar.core.frontend import quantize_model
from sparsexbar.schemes import ENTRIES, Option, SchemeEntry, get_scheme, scheme_text
from tests import nets
from tests.test_cli_errors import assert_one_line_error, cli
from tests.test_combined import mixed_net

IDS = [e.name for e in ENTRIES]
# Several row and column tiles; no partial sum can clip (lossless).
HW = ("isaac", {"array.rows": 16, "array.cols": 24, "ou.rows": 4, "ou.cols": 8})


@pytest.fixture(scope="module", params=[False, True], ids=["unsigned", "signed"])
def case(request: pytest.FixtureRequest) -> dict[str, Any]:
    """A pattern- and block-pruned residual net (every layout has something to exploit), its
    inputs, its quantization, the reference logits and the dense run."""
    signed = bool(request.param)
    net = mixed_net(7, signed)
    x = nets.random_images(3, channels=2, size=6, seed=7, signed=signed)
    data = (x, nets.random_labels(3, classes=5, seed=7))
    qmodel = quantize_model(net, x, 8, 8)
    dense = sparsexbar.simulate(net, data, hw=HW[0], overrides=HW[1], scheme="dense",
                                qmodel=qmodel)
    return {"net": net, "data": data, "qmodel": qmodel, "dense": dense,
            "reference": qmodel.run_reference(x)}


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_lossless_settings_equal_the_integer_reference(entry: SchemeEntry,
                                                       case: dict[str, Any]) -> None:
    scheme = get_scheme(entry.name)
    assert scheme.lossless
    res = sparsexbar.simulate(case["net"], case["data"], hw=HW[0], overrides=HW[1],
                              scheme=scheme, qmodel=case["qmodel"])
    assert res.outputs is not None
    assert torch.equal(res.outputs, case["reference"])
    assert res.top1 == res.to_json()["accuracy"]["quantized_top1"]


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_dense_events_are_the_dense_schemes_events(entry: SchemeEntry,
                                                   case: dict[str, Any]) -> None:
    res = sparsexbar.simulate(case["net"], case["data"], hw=HW[0], overrides=HW[1],
                              scheme=entry.name, qmodel=case["qmodel"]).to_json()
    dense = case["dense"].to_json()
    for lay, ref in zip(res["layers"], dense["layers"], strict=True):
        assert lay["dense_events"] == ref["events"], (entry.name, lay["name"])
        assert lay["dense_cycles"] == ref["cycles"], (entry.name, lay["name"])
        assert lay["dense_arrays"] == ref["arrays"], (entry.name, lay["name"])
    assert res["dense_totals"]["events"] == dense["totals"]["events"]


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
@pytest.mark.parametrize("adc", [{}, {"adc.bits": 2}], ids=["lossless-adc", "clipping-adc"])
def test_image_tasks_give_the_whole_batchs_results(entry: SchemeEntry, adc: dict[str, int],
                                                   case: dict[str, Any]) -> None:
    """A layer's later calls run as image tasks (`LayerRecorder._split`; forced here for the
    schemes that opt out, `Scheme.image_tasks`): the same batch's second run (split) gives
    the first's (whole) outputs bit for bit and the same events, busiest-array cycles and
    time; one and two threads give the same results."""
    from sparsexbar.core.config import preset
    from sparsexbar.core.engine import EngineOptions
    from sparsexbar.simulate import LayerRecorder

    hw = preset(HW[0]).with_overrides({**HW[1], **adc})
    qmodel, (x, _) = case["qmodel"], case["data"]
    scheme = get_scheme(entry.name)
    declared = scheme.image_tasks
    scheme.image_tasks = True  # every scheme's images are independent, tasks or not
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            try:
                mapped = [scheme.map_layer(q, hw) for q in qmodel.layers]
            except SparsexbarError as exc:  # comprrae: a lossless ADC only
                assert adc and "lossless ADC" in str(exc)
                pytest.skip(f"{entry.name} refuses a clipping ADC")
            kernels = {m.layer.name: scheme.kernel(m, torch.device("cpu")) for m in mapped}
            assert all(k.exact_linear for k in kernels.values()) == (not adc)
            with LayerRecorder(scheme, kernels, EngineOptions(), torch.device("cpu")) as rec:
                whole = qmodel.run(x, rec)
                once = (dict(rec.events), dict(rec.cycles), dict(rec.time_ns))
                assert rec._split(kernels[qmodel.layers[0].name], x) == [(0, 1), (1, 3)]
                split = qmodel.run(x, rec)
            assert torch.equal(split, whole)
            for name in kernels:
                assert rec.events[name] == once[0][name].scaled(2), (entry.name, name)
                assert rec.cycles[name] == 2 * once[1][name], (entry.name, name)
                assert rec.time_ns[name] == pytest.approx(2 * once[2][name], rel=1e-12)
            results.append((split, rec.events, rec.cycles, rec.time_ns))
            scheme.image_tasks = declared  # the recorder honours the scheme's choice
            assert (len(rec._split(kernels[qmodel.layers[0].name], x)) == 2) == declared
            scheme.image_tasks = True
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[0][0], results[1][0])
    assert results[0][1:] == results[1][1:]  # time sums too: the split is the threads' own


# ---- name:key=value ------------------------------------------------------------------------------
def _files(tmp: Path) -> dict[str, str]:
    """An example file for every path option of the registered schemes (by key): a new path
    option needs its example here."""
    comprrae = tmp / "alphas.json"
    comprrae.write_text(json.dumps({"alphas": {"conv1": 0.4, "conv2": None}}))
    bits = tmp / "bits.json"
    bits.write_text(json.dumps({"adc_bits": {"conv1": 6, "conv2": 5}}))
    return {"calibration": str(comprrae), "adc_bits": str(bits)}


def _values(opt: Option, files: dict[str, str]) -> list[str]:
    """Texts of values other than the default that the option takes."""
    if opt.kind == "choice":
        return [c for c in opt.choices if c != opt.default]
    if opt.kind == "switch":
        return ["off" if opt.default else "on"]
    if opt.kind == "number":
        return ["0.5", *(["none"] if opt.default is not None and opt.none else [])]
    if opt.kind == "count":
        return ["2"]
    if opt.kind == "path":
        assert opt.key in files, f"add an example file for path option '{opt.key}'"
        return [files[opt.key]]
    raise AssertionError(f"no example values for a {opt.kind} option ({opt.key})")


def _examples(entry: SchemeEntry, files: dict[str, str]) -> dict[str, list[str]]:
    """Per option key: texts `name:key=value` of the entry (and of a composition for an
    entry that builds them), plus all-options-at-once texts under the key '*'."""
    names = [entry.name, *(["pattern+act+comprrae", "sre-weight+act"]
                           if entry.matches is not None else [])]
    out: dict[str, list[str]] = {"*": list(names)}
    for opt in entry.options:
        out[opt.key] = [f"{name}:{opt.key}={value}" for name in names
                        for value in _values(opt, files)]
    if entry.options:
        out["*"].append(entry.name + "".join(f":{o.key}={_values(o, files)[-1]}"
                                             for o in reversed(entry.options)))
    return out


def _same(a: sparsexbar.schemes.Scheme, b: sparsexbar.schemes.Scheme) -> bool:
    return (type(a) is type(b) and a.name == b.name and a.options() == b.options()
            and a.parameters() == b.parameters() and a.lossless == b.lossless)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_scheme_text_round_trips(entry: SchemeEntry, tmp_path: Path) -> None:
    assert scheme_text(entry.name) == entry.name  # defaults: the bare name
    for key, texts in _examples(entry, _files(tmp_path)).items():
        made = []
        for text in texts:
            try:
                scheme = get_scheme(text)
            except SparsexbarError:  # a combination the scheme refuses (e.g. adc=calibrated
                continue  # without its bits): the option must take some other value
            canonical = scheme_text(scheme)
            again = get_scheme(canonical)
            assert _same(again, scheme), (text, canonical)
            assert scheme_text(again) == canonical, text
            made.append(text)
        assert made, f"{entry.name}: no value of option '{key}' makes a scheme"


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_bad_options_give_exit_2_and_one_line(entry: SchemeEntry,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    bad: list[tuple[str, list[str]]] = [(f"{entry.name}:nope=1", ["nope"])]
    if entry.options:
        bad[0][1].append("unknown option")
        opt = next(o for o in entry.options if o.kind != "path")
        value = _values(opt, {})[0]
        bad.append((f"{entry.name}:{opt.key}={value}:{opt.key}={value}", [opt.key, "twice"]))
        if opt.kind in ("choice", "switch", "number", "count"):
            bad.append((f"{entry.name}:{opt.key}=not-a-value", [opt.key, "not-a-value"]))
        bad.append((f"{entry.name}:{opt.key}", ["key=value"]))
    else:
        bad[0][1].append("takes no options")
    for spec, fragments in bad:
        code, _, err = cli(capsys, "run", "--scheme", spec, "--limit", "1")
        assert_one_line_error(code, err, *fragments)
