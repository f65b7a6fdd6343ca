"""Hardware config: exact YAML/JSON round trips, dotted overrides, validation naming the field,
enums stored by name, every field documented, derived quantities (DESIGN.md 2.2-2.5, 4)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sparsexbar.core.config import (
    CROSS_FIELD_RULES,
    BitOrder,
    HardwareConfig,
    SignEncoding,
    Variation,
    describe_fields,
    dotted,
    load_config,
    preset,
    preset_names,
    reference_markdown,
)
from sparsexbar.core.cost import activation_timing
from sparsexbar.core.errors import ConfigError, SparsexbarError


def _leaves(d: dict[str, Any]) -> dict[str, Any]:
    return dotted(d)


def _assert_same(a: HardwareConfig, b: HardwareConfig) -> None:
    assert a == b
    assert a.to_dict() == b.to_dict()
    assert a.to_json() == b.to_json()
    assert a.to_yaml() == b.to_yaml()


# ---- presets and round trips ----------------------------------------------------------------
def test_preset_names_include_the_published_designs() -> None:
    names = preset_names()
    assert "isaac" in names and "pattern-nvmsa" in names
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("name", preset_names())
def test_preset_round_trips_exactly_through_yaml_and_json(name: str, tmp_path: Path) -> None:
    cfg = preset(name)
    assert cfg.name == name
    _assert_same(HardwareConfig.from_dict(yaml.safe_load(cfg.to_yaml())), cfg)
    _assert_same(HardwareConfig.from_dict(json.loads(cfg.to_json())), cfg)
    for suffix in (".yaml", ".yml", ".json"):
        path = tmp_path / f"hw{suffix}"
        cfg.save(path)
        _assert_same(load_config(path), cfg)
        _assert_same(load_config(str(path)), cfg)
    # Saving is atomic: only the three files, no temporary left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hw.json", "hw.yaml", "hw.yml"]
    assert json.loads((tmp_path / "hw.json").read_text()) == cfg.to_dict()


@pytest.mark.parametrize("name", preset_names())
def test_preset_round_trips_after_overrides(name: str, tmp_path: Path) -> None:
    overrides = {
        "ou.rows": "4",
        "ou.cols": 2,
        "cell.sign": "offset",
        "cell.bits": 3,
        "cell.slices": 3,
        "numbers.weight_bits": 8,
        "numbers.bit_order": "msb_first",
        "device.variation": "lognormal",
        "device.variation_sigma": "0.125",
        "adc.step": 2,
        "timing.read_ns": "12.5",
        "adc.bits": "auto",
        "adc.kind": "flash",
        "energy.leakage_mw": 0.1 + 0.2,  # a float with no short decimal form
        "name": "custom-x",
    }
    cfg = preset(name).with_overrides(overrides)
    assert cfg.ou.rows == 4 and cfg.ou.cols == 2
    assert cfg.cell.sign is SignEncoding.offset
    assert cfg.numbers.bit_order is BitOrder.msb_first
    assert cfg.device.variation is Variation.lognormal
    assert cfg.device.variation_sigma == 0.125
    assert cfg.energy.leakage_mw == 0.1 + 0.2
    assert cfg.timing.read_ns == 12.5
    assert cfg.adc.bits == "auto" and cfg.adc.kind.value == "flash"
    for suffix in (".yaml", ".json"):
        path = tmp_path / f"o{suffix}"
        cfg.save(path)
        _assert_same(load_config(path), cfg)
    _assert_same(HardwareConfig.from_dict(yaml.safe_load(cfg.to_yaml())), cfg)
    _assert_same(HardwareConfig.from_dict(json.loads(cfg.to_json())), cfg)
    # Overrides also go through load_config (as the CLI's --set does).
    _assert_same(load_config(name, overrides), cfg)


_finite = dict(allow_nan=False, allow_infinity=False)


@settings(max_examples=40, deadline=None)
@given(
    array_rows=st.integers(1, 4096),
    array_cols=st.integers(1, 4096),
    ou_frac=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    cell_bits=st.integers(1, 8),
    sign=st.sampled_from(["differential", "offset"]),
    weight_bits=st.integers(2, 16),
    input_bits=st.integers(1, 16),
    bit_order=st.sampled_from(["msb_first", "lsb_first"]),
    adc_bits=st.integers(1, 16),
    step=st.floats(1e-6, 1e6, **_finite),
    energy=st.floats(0, 1e9, **_finite),
    sigma=st.floats(0, 2, **_finite),
    seed=st.integers(0, 2**31 - 1),
    name=st.text(min_size=0, max_size=12),
)
def test_random_valid_configs_round_trip_exactly(array_rows: int, array_cols: int,
                                                 ou_frac: tuple[float, float], cell_bits: int,
                                                 sign: str, weight_bits: int, input_bits: int,
                                                 bit_order: str, adc_bits: int, step: float,
                                                 energy: float, sigma: float, seed: int,
                                                 name: str) -> None:
    ou_rows = max(1, math.floor(ou_frac[0] * array_rows))
    ou_cols = max(1, math.floor(ou_frac[1] * array_cols))
    cfg = HardwareConfig.from_dict({
        "name": name,
        "array": {"rows": array_rows, "cols": array_cols},
        "ou": {"rows": ou_rows, "cols": ou_cols},
        "cell": {"bits": cell_bits, "sign": sign},
        "dac": {"bits": min(cell_bits, input_bits)},
        "adc": {"bits": adc_bits, "step": step, "energy_pj": energy},
        "numbers": {"weight_bits": weight_bits, "input_bits": input_bits,
                    "bit_order": bit_order},
        "device": {"variation": "normal", "variation_sigma": sigma, "seed": seed},
    })
    _assert_same(HardwareConfig.from_dict(yaml.safe_load(cfg.to_yaml())), cfg)
    _assert_same(HardwareConfig.from_dict(json.loads(cfg.to_json())), cfg)
    assert cfg.adc.step == step and cfg.adc.energy_pj == energy and cfg.name == name


def test_enums_are_stored_by_name() -> None:
    cfg = preset("isaac").with_overrides({"cell.sign": "offset", "numbers.bit_order": "msb_first",
                                          "device.variation": "normal"})
    d = cfg.to_dict()
    assert d["cell"]["sign"] == "offset" and type(d["cell"]["sign"]) is str
    assert d["numbers"]["bit_order"] == "msb_first" and type(d["numbers"]["bit_order"]) is str
    assert d["device"]["variation"] == "normal" and type(d["device"]["variation"]) is str
    text = cfg.to_yaml()
    assert "sign: offset" in text and "bit_order: msb_first" in text
    assert "variation: normal" in text and "!!python" not in text
    assert '"sign": "offset"' in cfg.to_json()
    # yaml.safe_load can read it back: no Python-specific tags.
    assert yaml.safe_load(text)["cell"]["sign"] == "offset"


# ---- overrides --------------------------------------------------------------------------------
def test_with_overrides_sets_dotted_keys_and_nothing_else() -> None:
    base = preset("isaac")
    before = base.to_dict()
    cfg = base.with_overrides({"ou.rows": 9, "ou.cols": "8", "array.rows": "512",
                               "cell.slices": "null", "adc.step": "0.5", "device.seed": "7"})
    assert base.to_dict() == before  # the original is untouched
    assert (cfg.ou.rows, cfg.ou.cols, cfg.array.rows) == (9, 8, 512)
    assert cfg.cell.slices is None and cfg.adc.step == 0.5 and cfg.device.seed == 7
    changed = {k for k, v in _leaves(cfg.to_dict()).items() if _leaves(before)[k] != v}
    assert changed == {"ou.rows", "ou.cols", "array.rows", "adc.step", "device.seed"}
    assert base.with_overrides({}) == base


def test_load_config_accepts_every_source_kind() -> None:
    isaac = preset("isaac")
    assert load_config() == isaac
    assert load_config("isaac") == isaac
    # a config object is checked whole again and the run gets its own copy
    assert load_config(isaac) == isaac and load_config(isaac) is not isaac
    assert load_config(isaac.to_dict()) == isaac
    assert load_config(isaac, {"ou.rows": 8}).ou.rows == 8


# ---- validation -------------------------------------------------------------------------------
def _refused(overrides: dict[str, Any], *fragments: str) -> str:
    with pytest.raises(ConfigError) as info:
        preset("isaac").with_overrides(overrides)
    msg = str(info.value)
    assert "\n" not in msg
    for frag in fragments:
        assert frag in msg, (frag, msg)
    assert isinstance(info.value, SparsexbarError) and isinstance(info.value, ValueError)
    return msg


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        ({"ou.rows": 129}, ("ou.rows", "array.rows")),
        ({"ou.cols": 999}, ("ou.cols", "array.cols")),
        ({"array.rows": 8}, ("ou.rows", "array.rows")),  # shrinking the array below the OU
        ({"array.cols": 15}, ("ou.cols", "array.cols")),
        ({"cell.bits": 0}, ("cell.bits",)),
        ({"cell.bits": -1}, ("cell.bits",)),
        ({"adc.bits": 0}, ("adc.bits",)),
        ({"adc.bits": -3}, ("adc.bits",)),
        ({"dac.bits": 0}, ("dac.bits",)),
        ({"numbers.weight_bits": 0}, ("numbers.weight_bits",)),
        ({"numbers.weight_bits": -8}, ("numbers.weight_bits",)),
        ({"numbers.input_bits": 0}, ("numbers.input_bits",)),
        ({"numbers.input_bits": 40}, ("numbers.input_bits",)),
        ({"adc.bits": 17}, ("adc.bits",)),
        ({"ou.rows": 0}, ("ou.rows",)),
        ({"array.rows": 0}, ("array.rows",)),
        ({"adc.step": 0}, ("adc.step",)),
        ({"dac.bits": 8, "numbers.input_bits": 4}, ("dac.bits", "numbers.input_bits")),
        ({"cell.slices": 1}, ("cell.slices",)),  # 1 x 2 bits cannot hold 7 magnitude bits
        ({"cell.slices": 3}, ("cell.slices",)),  # 3 x 2 = 6 < 7
        ({"cell.sign": "offset", "cell.slices": 3, "cell.bits": 2}, ("cell.slices",)),  # 6 < 8
        ({"cell.sign": "ones-complement"}, ("cell.sign",)),
        ({"numbers.bit_order": "middle_out"}, ("numbers.bit_order",)),
        ({"device.variation": "gaussian"}, ("device.variation",)),
        ({"device.variation_sigma": -0.1}, ("device.variation_sigma",)),
        ({"device.stuck_at_off_rate": 0.6, "device.stuck_at_on_rate": 0.6},
         ("stuck_at_off_rate", "stuck_at_on_rate")),
        ({"ou.rows": "many"}, ("ou.rows",)),
        ({"ou": 3}, ("ou",)),
    ],
)
def test_invalid_values_are_refused_naming_the_field(overrides: dict[str, Any],
                                                     fragments: tuple[str, ...]) -> None:
    _refused(overrides, *fragments)


def _float_leaves() -> list[str]:
    return [k for k, v in _leaves(preset("isaac").to_dict()).items() if isinstance(v, float)]


def test_nan_is_refused_for_every_float_field() -> None:
    keys = _float_leaves()
    assert "adc.step" in keys and "energy.leakage_mw" in keys
    for key in keys:
        _refused({key: float("nan")}, key)
        _refused({key: ".nan"}, key)  # as the CLI's --set passes it


def test_infinity_is_refused_for_every_float_field() -> None:
    accepted = []
    for key in _float_leaves():
        try:
            preset("isaac").with_overrides({key: float("inf")})
        except ConfigError as exc:
            assert key in str(exc)
        else:
            accepted.append(key)
    assert accepted == []


def test_slices_that_cover_the_bits_are_accepted() -> None:
    cfg = preset("isaac").with_overrides({"cell.slices": 4})  # 4 x 2 >= 7
    assert cfg.slices == 4
    off = preset("isaac").with_overrides({"cell.sign": "offset", "cell.slices": 4})  # 8 >= 8
    assert off.slices == 4


@pytest.mark.parametrize("key", ["ou.row", "foo", "foo.bar", "array.rows.x", "cell.bits.low",
                                 "name.first", "adc..bits"])
def test_unknown_keys_are_refused_naming_the_key(key: str) -> None:
    with pytest.raises(ConfigError) as info:
        preset("isaac").with_overrides({key: 1})
    assert f"'{key}'" in str(info.value) and "unknown config key" in str(info.value)


def test_unknown_key_in_a_file_or_dict_is_refused(tmp_path: Path) -> None:
    data = preset("isaac").to_dict()
    data["ou"]["depth"] = 3
    with pytest.raises(ConfigError, match=r"ou\.depth"):
        HardwareConfig.from_dict(data)
    path = tmp_path / "extra.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"ou\.depth"):
        load_config(path)
    data = preset("isaac").to_dict()
    data["turbo"] = True
    with pytest.raises(ConfigError, match="turbo"):
        HardwareConfig.from_dict(data)


def test_unknown_preset_is_refused_listing_the_known_ones() -> None:
    for call in (lambda: preset("nope"), lambda: load_config("nope")):
        with pytest.raises(ConfigError) as info:
            call()
        msg = str(info.value)
        assert "'nope'" in msg and "isaac" in msg and "pattern-nvmsa" in msg


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "just a string\n", "42\n", "", "null\n"])
def test_yaml_file_that_is_not_a_mapping_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "hw.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "hw.yaml" in str(info.value) and "mapping" in str(info.value)


def test_json_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hw.json"
    path.write_text("[1, 2, 3]")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "absent.yaml" in str(info.value) and "not found" in str(info.value)


def test_invalid_value_in_a_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "hw.yaml"
    path.write_text("array:\n  rows: 16\nou:\n  rows: 32\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "ou.rows" in str(info.value) and "hw.yaml" in str(info.value)
    path.write_text("adc:\n  bits: 0\n")
    with pytest.raises(ConfigError, match=r"adc\.bits"):
        load_config(path)


def test_unparsable_yaml_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "hw.yaml"
    path.write_text("array: [1, 2\nou: {rows: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "hw.yaml" in str(info.value)
    assert "\n" not in str(info.value)


def test_numbers_with_an_exponent_and_no_dot_are_numbers(tmp_path: Path) -> None:
    """YAML 1.1 read `1e-3` as text, refused as "must be a number, not text ('1e-3')" from
    --set and from a YAML file; a quoted number stays text, and refused."""
    cfg = load_config("isaac", {"energy.leakage_mw": "1e-3", "area.buffer_kb": "5E2",
                                "energy.digital_op_pj": "1.5e-1", "array.rows": "2e2"})
    assert cfg.energy.leakage_mw == 0.001 and cfg.area.buffer_kb == 500.0
    assert cfg.energy.digital_op_pj == 0.15 and cfg.array.rows == 200
    path = tmp_path / "hw.yaml"
    path.write_text("energy:\n  leakage_mw: 1e-3\n  cell_read_pj: -2e+1\n")
    with pytest.raises(ConfigError, match=r"energy\.cell_read_pj: .*greater than or equal"):
        load_config(path)  # read as -20.0: refused for its range, not for being text
    path.write_text("energy:\n  leakage_mw: 1e-3\n  cell_read_pj: 2E-3\ntiming:\n"
                    "  read_ns: 5e1\n")
    cfg = load_config(path)
    assert (cfg.energy.leakage_mw, cfg.energy.cell_read_pj, cfg.timing.read_ns) == (
        0.001, 0.002, 50.0)
    path.write_text('energy:\n  leakage_mw: "1e-3"\n')
    with pytest.raises(ConfigError, match=r"energy\.leakage_mw: must be a number, not text"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"adc\.bits: must be .*not text \('5'\)"):
        load_config("isaac", {"adc.bits": '"5"'})
    assert load_config("isaac", {"name": "1e3x"}).name == "1e3x"  # text that is no number


# ---- documentation ----------------------------------------------------------------------------
def test_every_leaf_field_is_documented() -> None:
    described = dict(describe_fields())
    leaves = _leaves(preset("isaac").to_dict())
    assert set(described) == set(leaves)
    assert len(describe_fields()) == len(described)  # no duplicates
    for key, text in described.items():
        assert text.strip(), f"{key} has no description"
    for key in ("array.rows", "array.cols", "cell.bits", "cell.sign", "ou.rows", "ou.cols",
                "dac.bits", "adc.bits", "adc.step", "numbers.weight_bits", "numbers.input_bits",
                "numbers.bit_order"):  # the keys DESIGN.md 4 promises
        assert key in described


def _reference_table() -> dict[str, list[str]]:
    """docs/config.md's table (reference_markdown): key -> its cells."""
    rows = {}
    for line in reference_markdown().splitlines():
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if line.startswith("| `"):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_the_reference_gives_every_fields_valid_values() -> None:
    """docs/config.md stated five ranges; the rest (array.rows 1..4096, weight_bits 2..16, the
    stuck-at rates 0..1, read_ns > 0, ...) were in the code only."""
    valid = {key: cells[1] for key, cells in _reference_table().items()}
    assert set(valid) == {key for key, _ in describe_fields()}
    assert valid["array.rows"] == valid["array.cols"] == "integer 1..4096"
    assert (valid["cell.bits"], valid["dac.bits"], valid["cell.slices"]) == (
        "integer 1..8", "integer 1..8", "integer 1..16 or null")
    assert (valid["numbers.weight_bits"], valid["numbers.input_bits"]) == (
        "integer 2..16", "integer 1..16")
    assert valid["adc.bits"] == "integer 1..16 or `auto`"
    assert valid["adc.ref_bits"] == "integer 1..16"
    assert valid["ou.rows"] == valid["adc.per_array"] == "integer >= 1"
    assert valid["device.stuck_at_on_rate"] == "number 0..1"
    assert valid["device.seed"] == "integer 0..2147483647"
    assert valid["adc.step"] == valid["timing.read_ns"] == "number > 0"
    assert all(valid[k] == "number >= 0" for k in valid if k.startswith(("energy.", "area.")))
    assert (valid["cell.sign"], valid["name"]) == ("`differential` or `offset`", "text")


def test_the_stated_bounds_are_the_enforced_ones() -> None:
    """Every `a..b`, `>= a` and `> a` of the table, at the edge, on the field's own section
    (so no rule between fields interferes)."""
    checked = 0
    for key, cells in _reference_table().items():
        if "." not in key:
            continue
        section, name = key.split(".")
        node = HardwareConfig.model_fields[section].annotation
        assert node is not None

        def ok(value: float, node: Any = node, name: str = name) -> bool:
            try:
                node.model_validate({name: value})
            except ValidationError:
                return False
            return True

        kind, _, bounds = cells[1].partition(" or ")[0].partition(" ")
        step = 1 if kind == "integer" else 1e-9
        if ".." in bounds:
            low, high = (float(v) for v in bounds.split(".."))
            assert ok(low) and ok(high) and not ok(low - step) and not ok(high + step), key
        elif bounds.startswith(">= "):
            low = float(bounds[3:])
            assert ok(low) and not ok(low - step), key
        elif bounds.startswith("> "):
            low = float(bounds[2:])
            assert ok(low + step) and not ok(low), key
        else:
            continue
        checked += 1
    assert checked == 52


RULE_BREAKERS = [  # one config breaking each rule between fields, in CROSS_FIELD_RULES' order
    ({"ou.rows": 256}, "ou.rows=256 is larger than array.rows=128"),
    ({"ou.cols": 256}, "ou.cols=256 is larger than array.cols=128"),
    ({"dac.bits": 4, "numbers.input_bits": 2}, "dac.bits=4 exceeds numbers.input_bits=2"),
    ({"cell.slices": 3}, "cell.slices=3 x cell.bits=2 cannot hold the 7 stored weight bits"),
    ({"device.stuck_at_off_rate": 0.6, "device.stuck_at_on_rate": 0.5},
     "stuck_at_off_rate + device.stuck_at_on_rate exceeds 1"),
    ({"device.variation_sigma": 0.1}, "device.variation_sigma=0.1 is set but device.variation "
     "is none"),
]


def test_the_rules_between_fields_are_listed_and_enforced() -> None:
    """docs/config.md did not state dac.bits <= input_bits, the stuck-at sum or the sigma
    that needs a variation; the list is made from the table the checks run."""
    doc = reference_markdown()
    rules = doc.split("## Rules between fields", 1)[1]
    assert len(CROSS_FIELD_RULES) == len(RULE_BREAKERS) == 6
    for text, _ in CROSS_FIELD_RULES:
        assert f"- {text}." in rules
    assert "`dac.bits` <= `numbers.input_bits`" in rules
    assert "`device.variation_sigma` > 0 needs `device.variation`" in rules
    for (overrides, message), (_, problem) in zip(RULE_BREAKERS, CROSS_FIELD_RULES, strict=True):
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config("isaac", overrides)
        assert problem(preset("isaac")) is None
    assert load_config("isaac", {"device.variation": "normal",
                                 "device.variation_sigma": 0.1}).device.variation_sigma == 0.1


# ---- derived quantities -----------------------------------------------------------------------
@pytest.mark.parametrize("weight_bits", [2, 4, 8, 9, 16])
@pytest.mark.parametrize("cell_bits", [1, 2, 3, 4, 8])
def test_slices_and_polarities(weight_bits: int, cell_bits: int) -> None:
    base = preset("isaac").with_overrides({"numbers.weight_bits": weight_bits,
                                           "cell.bits": cell_bits})
    assert base.slices == -(-(weight_bits - 1) // cell_bits)
    assert base.polarities == 2 and base.stored_bits == weight_bits - 1
    off = base.with_overrides({"cell.sign": "offset"})
    assert off.slices == -(-weight_bits // cell_bits)
    assert off.polarities == 1 and off.stored_bits == weight_bits


@pytest.mark.parametrize(("input_bits", "dac_bits", "cycles"),
                         [(8, 1, 8), (8, 2, 4), (8, 3, 3), (8, 4, 2), (8, 8, 1), (7, 2, 4),
                          (1, 1, 1), (16, 5, 4)])
def test_cycles(input_bits: int, dac_bits: int, cycles: int) -> None:
    cfg = preset("isaac").with_overrides({"numbers.input_bits": input_bits, "dac.bits": dac_bits})
    assert cfg.cycles == cycles


def test_sar_adc_energy_area_and_time_scale_with_bits() -> None:
    """SAR (docs/cost.md): energy and area (1 - share) x b / ref + share x 2^(b - ref) of the
    reference; conversion time b / (ref x rate): a 4-bit conversion takes half an 8-bit one."""
    cfg = preset("isaac")  # 8-bit reference: 1.6667 pJ, 1200 um^2, 1.2 GS/s
    e, a = cfg.adc.energy_capacitive_share, cfg.adc.area_capacitive_share
    for bits in range(1, 17):
        assert cfg.adc_energy_pj(bits) == pytest.approx(
            cfg.adc.energy_pj * ((1 - e) * bits / 8 + e * 2.0 ** (bits - 8)), rel=1e-12)
        assert cfg.adc_area_um2(bits) == pytest.approx(
            cfg.adc.area_um2 * ((1 - a) * bits / 8 + a * 2.0 ** (bits - 8)), rel=1e-12)
        assert cfg.adc_conversion_ns(bits) == pytest.approx(bits / (8 * 1.2), rel=1e-12)
    assert cfg.adc_energy_pj(8) == pytest.approx(1.6667, rel=1e-12)
    assert cfg.adc_conversion_ns(4) == pytest.approx(cfg.adc_conversion_ns(8) / 2, rel=1e-12)
    # the fit to the Saberi-scaled ISAAC ADC (4..10 bits, pJ and um^2), within 0.5%
    table = {4: (0.79, 361.04), 5: (0.99, 476.91), 6: (1.20, 626.91), 7: (1.42, 845.18),
             8: (1.67, 1200.0), 9: (1.969, 1827.9), 10: (2.379, 3002.0)}
    for bits, (pj, um2) in table.items():
        assert cfg.adc_energy_pj(bits) == pytest.approx(pj, rel=5e-3)
        assert cfg.adc_area_um2(bits) == pytest.approx(um2, rel=5e-3)
    # share 1: the Walden figure of merit, x2 per bit
    walden = cfg.with_overrides({"adc.energy_capacitive_share": 1, "adc.area_capacitive_share": 1,
                                 "adc.ref_bits": 4, "adc.energy_pj": 2.0, "adc.area_um2": 10})
    assert walden.adc_energy_pj(6) == pytest.approx(8.0, rel=1e-12)
    assert walden.adc_area_um2(2) == pytest.approx(2.5, rel=1e-12)
    # flash: 2^b - 1 comparators, constant time
    flash = cfg.with_overrides({"adc.kind": "flash"})
    assert flash.adc_energy_pj(4) == pytest.approx(cfg.adc.energy_pj * 15 / 255, rel=1e-12)
    assert flash.adc_area_um2(9) == pytest.approx(cfg.adc.area_um2 * 511 / 255, rel=1e-12)
    assert flash.adc_conversion_ns(4) == flash.adc_conversion_ns(8) == pytest.approx(1 / 1.2)


def test_activation_time_is_the_larger_of_read_and_adc_rounds() -> None:
    """The timing rule worked by hand: an OU with 3 of its 8 columns terminated (5 live)
    and 2 ADCs takes 3 rounds; 8 live columns 4 rounds; the read bounds short ones."""
    cfg = preset("isaac").with_overrides({"adc.bits": 8, "adc.per_array": 2,
                                          "timing.read_ns": 1.0})
    timing = activation_timing(cfg)
    conv = 8 / (8 * 1.2)  # ns, one 8-bit conversion
    assert timing.rounds(5) == 3 and timing.rounds(8) == 4 and timing.rounds(2) == 1
    assert timing.time_ns(5) == pytest.approx(3 * conv, rel=1e-12)
    assert timing.time_ns(8) == pytest.approx(4 * conv, rel=1e-12)
    assert timing.time_ns(1) == pytest.approx(1.0, rel=1e-12)  # one round < the 1 ns read
    assert timing.time_ns(0) == 0.0
    assert timing.bound(8) == "adc" and timing.bound(1) == "read"
    # a 4-bit ADC converts in half the time: the same 8 columns take 2 x 4 rounds x conv / 2
    four = activation_timing(cfg, adc_bits=4)
    assert four.time_ns(8) == pytest.approx(4 * conv / 2, rel=1e-12)
    # three of eight columns with 2 ADCs: 2 rounds (the worked case)
    assert timing.rounds(3) == 2


def test_auto_adc_bits_are_the_fewest_that_cannot_clip() -> None:
    cfg = preset("isaac")  # OU 16 rows, 2-bit cells, 1-bit DAC: at most 16 x 3 = 48 -> 6 bits
    assert cfg.adc.bits == "auto"
    assert cfg.auto_adc_bits(1152) == 6 and cfg.for_layer(1152).adc_bits == 6
    assert cfg.auto_adc_bits(9) == 5  # a 9-row layer: 27 -> 5 bits
    assert cfg.auto_adc_bits(1) == 2  # 3 -> 2 bits
    two = cfg.with_overrides({"dac.bits": 2, "ou.rows": 9, "cell.bits": 4})
    assert two.auto_adc_bits(100) == 9  # 9 x 15 x 3 = 405 <= 511
    stepped = cfg.with_overrides({"adc.step": 4})
    assert stepped.auto_adc_bits(100) == 4  # 48 / 4 = 12 -> (2^4 - 1) x 4 >= 48
    fixed = cfg.with_overrides({"adc.bits": 3})
    assert fixed.for_layer(1000) is fixed and fixed.adc_bits == 3
    with pytest.raises(ConfigError, match="auto"):
        _ = cfg.adc_max_code  # unresolved: a bug, named
    # beyond the ADC model's 16 bits: refused (the resolved copy skips the field's validation,
    # so a layer ran with a 17-22-bit ADC before)
    wide = cfg.with_overrides({"array.rows": 4096, "ou.rows": 4096, "dac.bits": 8,
                               "cell.bits": 4})
    assert wide.auto_adc_bits(18) == 17  # 18 x 15 x 255 = 68850 > 2^16 - 1
    with pytest.raises(ConfigError, match="needs 17 bits for a layer with 18 rows"):
        wide.for_layer(18)
    assert wide.for_layer(17).adc_bits == 16  # 17 x 15 x 255 = 65025: still 16 bits


def test_keys_left_out_are_isaacs() -> None:
    """A config file or mapping that leaves keys out gets isaac's values (docs/config.md's
    table): the class defaults had a fixed 8-bit ADC where isaac sizes it to need, so a file
    without an `adc:` section turned a clip-free ADC into one that can clip, silently."""
    isaac = preset("isaac").to_dict()
    assert {k: v for k, v in HardwareConfig().to_dict().items() if k != "name"} == {
        k: v for k, v in isaac.items() if k != "name"}
    partial = HardwareConfig.from_dict({"ou": {"rows": 8}})
    assert partial.adc.bits == "auto" and partial.with_overrides({"ou.rows": 16}).to_dict() == {
        **isaac, "name": "custom"}


def test_a_json_file_is_read_as_json(tmp_path: Path) -> None:
    """A .json config was parsed as YAML, which took a trailing comma (invalid JSON)."""
    bad = tmp_path / "hw.json"
    bad.write_text('{"ou": {"rows": 4},}')
    with pytest.raises(ConfigError, match="cannot parse hardware config .*hw.json"):
        load_config(str(bad))
    bad.write_text('{"ou": {"rows": 4}}')
    assert load_config(str(bad)).ou.rows == 4


def test_adc_max_code_and_device_ideal() -> None:
    cfg = preset("isaac")
    assert cfg.for_layer(1000).adc_max_code == 63
    assert cfg.with_overrides({"adc.bits": 8}).adc_max_code == 255
    assert cfg.device.ideal
    assert not cfg.with_overrides({"device.read_noise_sigma": 0.01}).device.ideal
    assert not cfg.with_overrides({"device.accumulated_deviation_sigma": 0.1}).device.ideal
    assert not cfg.with_overrides({"device.stuck_at_on_rate": 0.01}).device.ideal
    # A variation kind with sigma 0 changes nothing (a sweep over sigma may start at 0); a
    # sigma with kind none is refused (it read as a noisy device and ran ideal, silently).
    assert cfg.with_overrides({"device.variation": "lognormal"}).device.ideal
    with pytest.raises(ConfigError, match="variation_sigma=0.3 is set but device.variation is "
                                          "none: set device.variation to normal or lognormal"):
        cfg.with_overrides({"device.variation_sigma": 0.3})
    with pytest.raises(ConfigError, match="device.variation is none"):
        HardwareConfig.from_dict({"device": {"variation_sigma": 0.1}})
    assert not cfg.with_overrides({"device.variation": "normal",
                                   "device.variation_sigma": 0.3}).device.ideal
