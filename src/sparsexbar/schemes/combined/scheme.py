"""`CombinedScheme`: a composition of techniques (`a+b+c`) or, named `combined`, the per-layer
best one; the events each technique adds (`layer_events`) and a layout's static cost."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ...core.config import HardwareConfig
from ...core.cost import Storage, activation_timing, energy_pj
from ...core.engine import EngineOptions, LayerKernel, accumulate, exact_from_magnitudes
from ...core.errors import SparsexbarError, require_choice
from ...core.events import Events
from ...core.frontend import QuantLayer
from ...core.intconv import as_uint8
from ...core.mapping import MappedLayer, dense_events
from ..base import LayerRun, Scheme, refuse_grouped
from ..comprrae import AlphaSpec, CompKernel, CompRRAEScheme
from ..counting import (
    SlotCounts,
    count_slots,
    narrow_magnitudes,
)
from ..encoding import (
    EncodingMappedLayer,
    EncodingScheme,
    lossless_adc_bits,
)
from ..pattern import PatternKernel, PatternMappedLayer, PatternScheme
from ..sre import (
    GRANULARITIES,
    SreKernel,
    SreScheme,
    dynamic_packing_lossless,
    group_partial_sum_bound,
    index_bits,
    map_sre,
)
from .kernel import CombinedKernel, LayerChoice, pattern_slots, sre_slots

LAYOUTS = ("dense", "sre-weight", "pattern")


RUNTIME = ("act", "comprrae", "encoding")


TECHNIQUES = (*LAYOUTS, *RUNTIME)


ALIASES = {"sre": ("sre-weight", "act")}


AUTO_RULE = ("per layer: the layout (dense, sre-weight, pattern) whose static events (every "
             "unit activated, the ADC bits the composition gets) score best on the objective "
             "(edp: energy x busiest-array cycles; energy; latency), ties to lower energy, "
             "fewer arrays, the simpler layout; act where the device "
             "is ideal; comprrae on ReLU layers whose conversions are exact; encoding's parts "
             "where they apply (ADC bits on every layer, bus-invert/complement and zero-plane "
             "skipping on the dense layout without act)")


OBJECTIVES = ("edp", "energy", "latency")


def parse_techniques(spec: str) -> tuple[str, ...]:
    """`a+b+c` -> the techniques in canonical order; unknown, empty or repeated tokens and two
    layouts raise with the reason."""
    tokens = [t.strip() for t in spec.split("+")]
    if any(not t for t in tokens):
        raise SparsexbarError(f"empty technique in scheme '{spec}' (write e.g. pattern+act)")
    seen: dict[str, str] = {}  # technique -> the token that brought it
    for token in tokens:
        expanded = ALIASES.get(token, (token,))
        for name in expanded:
            if name not in TECHNIQUES:
                raise SparsexbarError(
                    f"unknown technique '{token}' in scheme '{spec}' (known: "
                    f"{', '.join((*TECHNIQUES, *ALIASES))})")
            if name in seen:
                alias = next((t for t in (seen[name], token) if t != name), None)
                via = f" ('{alias}' includes {name})" if alias else ""
                raise SparsexbarError(f"technique '{name}' given twice in scheme '{spec}'{via}")
            seen[name] = token
    layouts = [t for t in seen if t in LAYOUTS]
    if len(layouts) > 1:
        raise SparsexbarError(
            f"scheme '{spec}' combines {' and '.join(layouts)}: both choose the weight layout "
            "(where each weight is stored); use one")
    return tuple(t for t in TECHNIQUES if t in seen)


class CombinedScheme(Scheme):
    """A composition of techniques (`a+b+c`), or, named `combined`, the per-layer best one.

    techniques: e.g. ("pattern", "act", "comprrae"); None: the named `combined`.
    alpha: comprrae's adaptive termination (None: early negative detection only; a float, or
    {layer name: float or None}); estimate: comprrae's value of a settled output;
    granularity: act's zero test, "bit" (the chunk of the cycle) or "word" (the whole input).
    """

    lossless = True

    def __init__(self, techniques: tuple[str, ...] | None = None, alpha: AlphaSpec = None,
                 estimate: str = "midpoint", granularity: str = "bit",
                 objective: str = "edp") -> None:
        require_choice("act granularity", granularity, GRANULARITIES)
        require_choice("combined objective", objective, OBJECTIVES)
        if techniques is not None and objective != "edp":
            raise SparsexbarError("objective picks the layout of the named 'combined' only")
        self.objective = objective
        self.auto = techniques is None
        self.techniques = (TECHNIQUES if techniques is None
                           else parse_techniques("+".join(techniques)))
        if not self.auto and alpha is not None and "comprrae" not in self.techniques:
            raise SparsexbarError("alpha is comprrae's parameter: add comprrae to the scheme")
        self.comprrae = CompRRAEScheme(alpha=alpha, estimate=estimate)
        self.granularity = granularity
        self.name = "combined" if self.auto else "+".join(self.techniques)
        self.lossless = self.comprrae.lossless
        self.choices: dict[str, LayerChoice] = {}
        # encoding's lossless encodings (its adc="fixed": the ADC bits are chosen here)
        self.encoding = EncodingScheme("bus-invert", "complement", "fixed",
                                       skip_zero_planes=True)

    # ---- parameters ---------------------------------------------------------------------------
    def options(self) -> dict[str, Any]:
        alpha = self.comprrae.alpha
        if isinstance(alpha, Mapping):
            raise SparsexbarError("a per-layer alpha has no text form")
        return {"alpha": alpha, "estimate": self.comprrae.estimate,
                "granularity": self.granularity, "objective": self.objective}

    def parameters(self) -> dict[str, Any]:
        comp = self.comprrae.parameters()
        techniques = (["layout per layer (dense | sre-weight | pattern)", *RUNTIME]
                      if self.auto else list(self.techniques))
        out: dict[str, Any] = {
            "techniques": techniques,
            "granularity": self.granularity if "act" in self.techniques else None,
            "alpha": comp["alpha"] if "comprrae" in self.techniques else None,
            "estimate": comp["estimate"] if "comprrae" in self.techniques else None,
            "layers": {name: c.to_json() for name, c in self.choices.items()},
        }
        if self.auto:
            out["objective"] = self.objective
            out["rule"] = AUTO_RULE
        return out

    # ---- mapping ------------------------------------------------------------------------------
    def overridden(self, hw: HardwareConfig) -> dict[str, str]:
        # ADC bits follow adc.bits (with auto, encoding's exact per-layer bits: the same rule
        # as the encoding scheme's, docs/cost.md): nothing to report there
        # and comprrae's bit order only where some layer ran comprrae (on a noisy device
        # none does: the override was reported with a reason that did not hold)
        if not (self.auto or "comprrae" in self.techniques):
            return {}
        if self.choices and not any(c.comprrae for c in self.choices.values()):
            return {}
        return self.comprrae.overridden(hw)

    def check_model(self, layers: Sequence[QuantLayer]) -> None:
        """A per-layer alpha names the model's comprrae layers (comprrae's own check)."""
        if self.auto or "comprrae" in self.techniques:
            self.comprrae.check_model(layers)

    def map_layer(self, layer: QuantLayer, hw: HardwareConfig) -> MappedLayer:
        refuse_grouped("combined", layer, "it composes the sre, comprrae and encoding "
                       "kernels, which are modelled for groups=1 layers")
        if self.auto:
            mapped, choice = self._auto_layer(layer, hw)
        else:
            mapped, choice = self._fixed_layer(layer, hw)
        self.choices[layer.name] = choice
        return mapped

    def _layout(self, layer: QuantLayer, hw: HardwareConfig, layout: str) -> MappedLayer:
        """The layer mapped with `layout`; pattern's dense fallback comes back as the dense
        layout cut into OU column groups (`map_sre(compress=False)`)."""
        if layout == "pattern":
            mapped = PatternScheme().map_layer(layer, hw)
            if isinstance(mapped, PatternMappedLayer):
                return mapped
        return map_sre(layer, hw, compress=layout == "sre-weight")

    @staticmethod
    def _layout_name(mapped: MappedLayer, asked: str) -> str:
        if asked == "pattern" and not isinstance(mapped, PatternMappedLayer):
            return "dense"
        return asked

    def _encode(self, layer: QuantLayer, hw: HardwareConfig, mapped: MappedLayer, layout: str,
                act: bool) -> tuple[MappedLayer, int | None, bool, bool, list[str]]:
        """encoding's parts on a composed layer: (mapped, ADC bits, zero-plane skipping,
        encodings, notes). Bus-invert and weight complement are defined on the dense
        layout's fixed OU row groups, without act; zero-plane skipping on the static
        SRE-style layouts (act and pattern units already skip what it would); the ADC bits on
        every layout, with an ideal device and a unit step, never above the configured."""
        notes = []
        encodings = layout == "dense" and not act and hw.device.ideal
        if encodings:
            mapped = self.encoding.map_layer(layer, hw)
        else:
            why = ("act repacks the rows every cycle" if act
                   else f"{layout} groups the rows otherwise" if layout != "dense"
                   else "they are modelled with an ideal device only")
            notes.append(f"bus-invert/complement off: they use the dense layout's fixed OU "
                         f"row groups ({why})")
        skip = layout in ("dense", "sre-weight") and not act
        bits, kept = self._lowered_bits(mapped, hw, act)
        if bits is None:
            notes.append(f"ADC bits kept: {kept}")
        elif isinstance(mapped, EncodingMappedLayer):
            mapped.layer_bits = bits
        return mapped, bits, skip, encodings, notes

    @staticmethod
    def _lowered_bits(mapped: MappedLayer, hw: HardwareConfig,
                      act: bool) -> tuple[int | None, str]:
        """encoding's ADC rule, with an ideal device and a unit ADC step (docs/schemes/
        combined.md): with adc.bits `auto`, the fewest bits that hold every partial sum of the
        composed layer (`composed_bound`, ideal levels), never above the layer's auto bits.
        Else (None, why the configured bits are kept): on a noisy device the sums leave the
        ideal bound, and the layouts other than encoding's convert at the configured bits
        (the lowered bits were reported and charged while the values were converted at the
        configured ones)."""
        if hw.adc.bits != "auto":
            return None, "adc.bits is fixed in the hardware config"
        if not hw.device.ideal or hw.adc.step != 1.0:
            return None, ("lowered only with an ideal device and adc.step 1 (noisy sums leave "
                          "the ideal bound)")
        return min(mapped.hw.adc_bits,
                   lossless_adc_bits(composed_bound(mapped, act), hw.adc.step)), ""

    def _fixed_layer(self, layer: QuantLayer, hw: HardwareConfig) -> tuple[MappedLayer,
                                                                              LayerChoice]:
        asked = next((t for t in self.techniques if t in LAYOUTS), "dense")
        mapped = self._layout(layer, hw, asked)
        layout = self._layout_name(mapped, asked)
        act = "act" in self.techniques
        if act and not hw.device.ideal:
            raise SparsexbarError(
                f"act needs an ideal device (layer {layer.name}): dynamic packing is modelled "
                f"with an ideal device only; drop act from '{self.name}'")
        comp = "comprrae" in self.techniques and layer.followed_by_relu
        if comp:
            why = _inexact_reason(mapped, act)
            if why:
                raise SparsexbarError(f"comprrae needs exact conversions: layer '{layer.name}' "
                                      f"with {layout}{'+act' if act else ''}: {why}")
        notes = ["pattern falls back to the dense layout here"] if layout != asked else []
        bits, skip, encodings = None, False, False
        if "encoding" in self.techniques:
            mapped, bits, skip, encodings, more = self._encode(layer, hw, mapped, layout, act)
            notes += more
        return mapped, LayerChoice(layout, act, comp, bits, skip, encodings, "; ".join(notes))

    def _auto_layer(self, layer: QuantLayer, hw: HardwareConfig) -> tuple[MappedLayer,
                                                                             LayerChoice]:
        act = hw.device.ideal
        candidates: list[tuple[tuple[float, float, int, int], str, MappedLayer]] = []
        for rank, asked in enumerate(LAYOUTS):
            try:
                mapped = self._layout(layer, hw, asked)
            except SparsexbarError:  # pattern refuses some configurations
                continue
            name = self._layout_name(mapped, asked)
            if name != asked:
                continue  # the dense candidate covers it
            energy, time_ns = static_cost(mapped, hw, name,
                                          self._lowered_bits(mapped, hw, act)[0])
            score = {"energy": energy, "latency": time_ns,
                     "edp": energy * time_ns}[self.objective]
            candidates.append(((score, energy, mapped.arrays, rank), name, mapped))
        _, layout, mapped = min(candidates, key=lambda c: c[0])
        notes = []
        if not act:
            notes.append("act off: the device is not ideal")
        comp = layer.followed_by_relu
        if comp:
            why = _inexact_reason(mapped, act)
            if why and act and not _inexact_reason(mapped, False):
                # exact conversions without act: keep comprrae, which skips more than act
                act = False
                notes.append(f"act off: with act {why}")
            elif why:
                comp = False
                notes.append(f"comprrae off: {why}")
        mapped, bits, skip, encodings, more = self._encode(layer, hw, mapped, layout, act)
        notes += more
        return mapped, LayerChoice(layout, act, comp, bits, skip, encodings, "; ".join(notes))

    def kernel(self, mapped: MappedLayer, device: torch.device) -> LayerKernel:
        choice = self.choices[mapped.layer.name]
        return CombinedKernel(mapped, device, choice,
                              self.comprrae.layer_alpha(mapped.layer.name),
                              self.encoding if choice.encodings else None)

    def adc_bits(self, mapped: MappedLayer) -> int:
        """encoding's per-layer resolution where it applies, else the configured."""
        choice = self.choices.get(mapped.layer.name)
        if choice is not None and choice.adc_bits is not None:
            return choice.adc_bits
        return mapped.hw.adc_bits

    def storage(self, mapped: MappedLayer) -> Storage:
        """The layout's index storage, comprrae's LUT and comparators, encoding's LUT (bus-
        invert constants, complement flags) and zero-plane detectors."""
        choice = self.choices.get(mapped.layer.name)
        parts = [PatternScheme().storage(mapped) if isinstance(mapped, PatternMappedLayer)
                 else SreScheme("weight").storage(mapped)
                 if choice is not None and choice.layout == "sre-weight" else Storage()]
        if choice is not None and choice.comprrae:
            parts.append(self.comprrae.storage(mapped))
        if choice is not None and choice.encodings:
            parts.append(self.encoding.storage(mapped))
        elif choice is not None and choice.skip_planes:
            parts.append(Storage(comparators=len(mapped.row_tiles)))
        if (choice is not None and choice.act
                and not isinstance(mapped, PatternMappedLayer)):
            parts.append(Storage(logic_units=2 * mapped.arrays))  # zero detector, OU former
        total = Storage()
        for part in parts:  # a handful
            total = total + part
        return total

    # ---- running ------------------------------------------------------------------------------
    def run_layer(self, kernel: LayerKernel, x_int: Tensor, options: EngineOptions) -> LayerRun:
        assert isinstance(kernel, CombinedKernel)
        layer = kernel.mapped.layer
        hw = kernel.mapped.hw
        n = int(x_int.shape[0])
        choice = kernel.choice
        parts = (narrow_magnitudes(layer, x_int)
                 if kernel.table.skip != "none" else [])
        extra = Events()
        acc: Tensor | None = None
        if kernel.enc is not None:  # encoding's values and its own events (decisions, LUT)
            assert kernel.encoding is not None
            acc, tally = kernel.encoding.execute(kernel.enc, x_int, options, count=True)
            assert tally is not None
            own = kernel.encoding.events(kernel.enc, tally, n).events
            base, _ = dense_events(kernel.mapped, n)
            extra = Events(comparisons=own.comparisons, lut_reads=own.lut_reads,
                           digital_ops=own.digital_ops - base.digital_ops,
                           zero_checks=own.zero_checks, decodes=own.decodes)
        elif choice.skip_planes:  # every row's chunk tested; a plane decision per window
            steps = n * layer.positions * layer.passes * hw.cycles
            extra = Events(comparisons=steps * len(kernel.mapped.row_tiles),
                           zero_checks=steps * layer.rows)
        if kernel.comp is not None:
            acc, executed, checks = self._terminate(kernel.comp, x_int, options)
        else:
            if acc is None:
                acc = self._values(kernel, parts, x_int, options)
            executed, checks = None, 0
        chunk = self._images_per_chunk(kernel, executed is not None, options)
        word = self.granularity == "word" and choice.act
        counts = count_slots(kernel.table, kernel.counter, parts, n, layer.positions,
                             layer.passes, hw.cycles, hw.dac.bits, hw.ou.rows, word, executed,
                             chunk, self.timing(kernel.mapped))
        alpha = self.comprrae.layer_alpha(layer.name) is not None
        events = layer_events(kernel.mapped, kernel.inner, choice.layout, counts, n, checks,
                              alpha, choice.act, word) + extra
        if kernel.enc is not None and kernel.encoding is not None \
                and kernel.encoding.bus_invert:
            events.encodes = events.dac_activations  # every driven row's chunk encoded
        return LayerRun(acc, events, int(round(counts.cycles)), counts.time_ns)

    def _values(self, kernel: CombinedKernel, parts: list[Tensor], x_int: Tensor,
                options: EngineOptions) -> Tensor:
        """The layout's values: the engine (static layouts, pattern units: dropping rows whose
        input is zero changes no partial sum), SRE's dynamic-packing path with act."""
        inner = kernel.inner
        if isinstance(inner, PatternKernel):
            if options.exact_shortcut and inner.exact_linear:
                return accumulate(inner, x_int, options)
            step = PatternScheme.images_per_call(inner, options)
            return torch.cat([accumulate(inner, x_int[a : a + step], options)
                              for a in range(0, int(x_int.shape[0]), step)])  # image chunks
        if not kernel.choice.act:
            return accumulate(inner, x_int, options)
        sre = SreScheme("joint", self.granularity)
        if dynamic_packing_lossless(inner.mapped):
            return exact_from_magnitudes(inner.mapped.layer, parts, x_int)
        return sre.packed_accumulate(inner, x_int, options)

    def _terminate(self, comp: CompKernel, x_int: Tensor,
                   options: EngineOptions) -> tuple[Tensor, Tensor, int]:
        """comprrae's values, each output's executed cycles (N, positions, Cout) and the
        checks made (one per output and cycle checked), in chunks of images."""
        layer = comp.mapped.layer
        n = int(x_int.shape[0])
        positions, cout = layer.positions, layer.out_channels
        chunk = self.comprrae.images_per_chunk(comp, options)
        # comprrae's (positions, Cout) rows as they come: values into its output (the rows'
        # layout), executed cycles as (N, positions, Cout): no transposition
        out = self.comprrae.value_output(comp, n, x_int.device)
        executed = torch.empty((n, positions, cout), dtype=torch.uint8,  # cycles: <= 255
                               device=x_int.device)
        checks = 0
        cycles = comp.mapped.hw.cycles
        for a in range(0, n, chunk):  # chunks of images (memory bound)
            value, run = self.comprrae.terminate_rows(comp, x_int[a : a + chunk])
            m = int(run.shape[0]) // positions
            out[a : a + m] = layer.fold_output(value, m)  # rows in out's own layout
            executed[a : a + m] = as_uint8(run).view(m, positions, cout)
            checks += int(run.clamp(max=cycles - 1).sum(dtype=torch.float64))
        return out, executed, checks

    @staticmethod
    def _images_per_chunk(kernel: CombinedKernel, live: bool, options: EngineOptions) -> int:
        """Whole images per counting chunk: inputs and planes, the (positions x domains)
        counts and, with early termination, the (positions x slots) products."""
        layer = kernel.mapped.layer
        inputs = int(torch.Size(layer.input_shape).numel()) if layer.input_shape else layer.rows
        per_image = (inputs * 12 + layer.positions * int(kernel.table.sets.shape[0]) * 32
                     + kernel.table.slots * 16)
        if live:  # per (position, slot): OU sums, a cycle's rows and OUs; per (position,
            # class): masks, conversion weights, sums, the OUs of every cycle; executed
            # cycles per channel
            table = kernel.table
            per_image += layer.positions * (
                table.slots * 12 + table.classes * (32 + 4 * (kernel.mapped.hw.cycles + 1))
                + layer.out_channels * 8)
        return max(1, int(options.memory_budget_mb * 2**20 // max(per_image, 1)))


def _inexact_reason(mapped: MappedLayer, act: bool) -> str:
    """Why the composed layout's conversions are not provably the identity ('' when they
    are): comprrae's bounds need the exact partial sums."""
    hw = mapped.hw
    if not hw.device.ideal:
        return "the device is not ideal"
    if hw.adc.step != 1.0:
        return f"adc.step={hw.adc.step} is not 1"
    if act and not isinstance(mapped, PatternMappedLayer):
        if not dynamic_packing_lossless(mapped):
            return (f"act packs any {hw.ou.rows} rows of an array together, whose partial sums "
                    f"can exceed the {hw.adc_bits}-bit ADC range")
        return ""
    if mapped.adc_can_clip():
        return (f"partial sums up to {mapped.max_partial_sum():g} exceed the {hw.adc_bits}-bit "
                "ADC range")
    return ""


def composed_bound(mapped: MappedLayer, act: bool) -> float:
    """Largest partial sum any conversion of the composed layer can see (ideal levels): the
    encoded bound, a pattern unit's, any `ou.rows` rows of an array (act packs any of them
    together), or the static groups' exact maximum."""
    hw = mapped.hw
    chunk_max = 2**hw.dac.bits - 1
    if isinstance(mapped, EncodingMappedLayer):
        return mapped.encoded_max
    if isinstance(mapped, PatternMappedLayer):
        return mapped.partial_sum_bound
    if act:
        worst = 0
        for a, b in mapped.row_tiles:  # row tiles: a few
            lv = mapped.levels[a:b].to(torch.int32)
            if lv.numel():
                k = min(hw.ou.rows, b - a)
                worst = max(worst, int(lv.topk(k, dim=0).values.sum(dim=0).max()))
        return float(worst * chunk_max)
    return group_partial_sum_bound(mapped.levels, mapped.group_rows, mapped.segment_cols, hw)


def layer_events(mapped: MappedLayer, inner: SreKernel | PatternKernel, layout: str,
                 counts: SlotCounts, images: int, checks: int, alpha: bool, act: bool = False,
                 word: bool = False) -> Events:
    """The crossbar counts plus what each technique adds: sre-weight's index reads, pattern's
    index reads, zero tests, gathered inputs and routed results, act's zero tests and formed
    OUs, comprrae's comparisons and LUT reads; buffer writes and digital work of `dense`.
    `checks`: comprrae's checks (outputs x cycles)."""
    hw, layer = mapped.hw, mapped.layer
    base, _ = dense_events(mapped, images)
    steps = images * layer.positions * layer.passes
    index = comparisons = zero_checks = gathers = routes = 0
    buffer_reads = base.buffer_read_bytes
    adc = int(round(counts.adc_conversions))
    if isinstance(mapped, PatternMappedLayer):
        plan = mapped.plan
        assert plan is not None
        index = PatternScheme.layer_index_bits(mapped) * steps
        comparisons = plan.pieces * hw.cycles * steps
        buffer_reads = plan.used_rows * math.ceil(hw.numbers.input_bits / 8) * steps
        zero_checks = plan.used_rows * hw.cycles * steps
        gathers = int(plan.piece_height.sum()) * steps
        routes = adc
    elif layout == "sre-weight":
        assert isinstance(inner, SreKernel)
        kept = int(round(float(inner.kept.sum())))
        index = kept * index_bits(hw) * steps
    ou = int(round(counts.ou_activations))
    if act and not isinstance(mapped, PatternMappedLayer):  # dynamic packing: SRE's logic
        zero_checks = layer.rows * steps * (1 if word else hw.cycles)
    return Events(
        ou_activations=ou, adc_conversions=adc, adc_rounds=int(round(counts.adc_rounds)),
        dac_activations=int(round(counts.dac_activations)),
        cell_reads=int(round(counts.cell_reads)), shift_adds=adc, index_reads=index,
        comparisons=comparisons + checks * (2 if alpha else 1), lut_reads=checks,
        buffer_read_bytes=buffer_reads, buffer_write_bytes=base.buffer_write_bytes,
        digital_ops=base.digital_ops, zero_checks=zero_checks,
        ou_forms=ou if act and not isinstance(mapped, PatternMappedLayer) else 0,
        gathers=gathers, routes=routes)


def static_cost(mapped: MappedLayer, hw: HardwareConfig, layout: str,
                adc_bits: int | None = None) -> tuple[float, float]:
    """(energy pJ, busiest-array time ns) of one image on a layout with every unit activated
    and no input skipping: the layout's own events (`layer_events` of the static counts) with
    conversions at `adc_bits` (None: the layer's), leakage excluded."""
    device = torch.device("cpu")
    inner: SreKernel | PatternKernel
    if isinstance(mapped, PatternMappedLayer):
        inner = PatternKernel(mapped, device)
        table, _ = pattern_slots(inner, False, device)
        table.skip = "none"
    else:
        inner = SreKernel(mapped, device)
        table = sre_slots(inner, device, "none")
    layer = mapped.layer
    counts = count_slots(table, None, [], 1, layer.positions, layer.passes, hw.cycles,
                         hw.dac.bits, hw.ou.rows, False, None, 1,
                         activation_timing(mapped.hw, adc_bits))
    events = layer_events(mapped, inner, layout, counts, 1, 0, False)
    return float(energy_pj(events, mapped.hw, 0.0, adc_bits)["total"]), counts.time_ns


def is_composition(name: str) -> bool:
    """`a+b+c`, or one technique that is no scheme of its own (`act`, `sre-weight`)."""
    return "+" in name or name in TECHNIQUES


def build_combined(name: str, **given: Any) -> CombinedScheme:
    """The named `combined` or the composition `name` (`a+b+c`) from parsed text options."""
    techniques = None if name == "combined" else parse_techniques(name)
    if techniques is not None:  # an option of a technique the composition lacks is refused
        for key, owner in (("estimate", "comprrae"), ("granularity", "act")):
            if key in given and owner not in techniques:
                raise SparsexbarError(f"{key} is {owner}'s parameter: add {owner} to the "
                                      f"scheme '{name}'")
    return CombinedScheme(techniques, **given)
