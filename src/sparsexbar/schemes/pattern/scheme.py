"""`PatternScheme`: the pattern scheme (mapping with fallback, values, events, storage)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ...core.config import HardwareConfig, SignEncoding
from ...core.cost import Storage
from ...core.engine import EngineOptions, LayerKernel, accumulate
from ...core.errors import SparsexbarError
from ...core.events import Events
from ...core.frontend import QuantLayer
from ...core.mapping import MappedLayer, dense_events
from ...training.prune import KERNEL_POSITIONS
from ..base import Counted, LayerRun, Scheme
from ..counting import narrow_magnitudes
from .kernel import CODES, CYCLES_PER_WORD, MASKS_DIRECT, PatternKernel
from .mapping import PatternMappedLayer, index_bits, map_pattern

BYTE_SUM = 0x0101010101010101  # b x BYTE_SUM: the sum of b's 8 bytes in its top byte


class PatternScheme(Scheme):
    """Kernel-reordering mapping of pattern-pruned 3x3 convs with zero-input skipping."""

    name = "pattern"
    lossless = True

    def map_layer(self, layer: QuantLayer, hw: HardwareConfig) -> MappedLayer:
        mapped = map_pattern(layer, hw)
        if (isinstance(mapped, PatternMappedLayer) and hw.cell.sign == SignEncoding.offset
                and not hw.device.ideal):
            raise SparsexbarError(
                f"pattern with cell.sign=offset needs an ideal device (layer {layer.name}): the "
                "digital offset removal of unstored kernels is not modelled; use differential")
        return mapped

    def kernel(self, mapped: MappedLayer, device: torch.device) -> LayerKernel:
        return PatternKernel(mapped, device)

    def run_layer(self, kernel: LayerKernel, x_int: Tensor, options: EngineOptions) -> LayerRun:
        assert isinstance(kernel, PatternKernel)
        n = int(x_int.shape[0])
        if kernel.plan is None:  # dense mapping
            return self.dense_run(kernel.mapped, accumulate(kernel, x_int, options), n)
        if options.exact_shortcut and kernel.exact_linear:
            acc = accumulate(kernel, x_int, options)
        else:  # bounded memory: the engine keeps (positions x units x columns) sums
            step = self.images_per_call(kernel, options)
            acc = torch.cat([accumulate(kernel, x_int[a : a + step], options)
                             for a in range(0, n, step)])  # chunks of images
        return LayerRun(acc, *self.count(kernel, x_int, options))

    @staticmethod
    def images_per_call(kernel: PatternKernel, options: EngineOptions) -> int:
        mapped = kernel.mapped
        s, _, _, k = kernel.shape
        per_image = mapped.layer.positions * (s * k * 24 + (mapped.physical_cols + 1) * 16)
        return max(1, int(options.memory_budget_mb * 2**20 // max(per_image, 1)))

    def storage(self, mapped: MappedLayer) -> Storage:
        """Input index per block, output index per stored kernel, the pattern table; one zero
        detector per array; an input gather unit and an output router per array."""
        if not isinstance(mapped, PatternMappedLayer) or mapped.plan is None:
            return Storage()
        return Storage(index_bits=self.layer_index_bits(mapped)
                       + 9 * int(mapped.plan.patterns.numel()),
                       comparators=mapped.plan.arrays, logic_units=2 * mapped.plan.arrays)

    @staticmethod
    def layer_index_bits(mapped: PatternMappedLayer) -> int:
        """Index bits read per output position and pass (input + output indices)."""
        plan = mapped.plan
        assert plan is not None
        cout, cin = plan.kernel_pattern.shape
        in_bits = index_bits(int(cin)) + index_bits(int(plan.patterns.numel()))
        return plan.blocks * in_bits + plan.stored_kernels * index_bits(int(cout))

    # ---- event counting ---------------------------------------------------------------------
    def count(self, kernel: PatternKernel, x_int: Tensor, options: EngineOptions) -> Counted:
        """Exact events of one batch, and per image the busiest array's OU activations and
        time, summed over the images. An activated piece runs its units (one OU each), each
        converting its columns (`timing`)."""
        mapped = kernel.mapped
        plan = kernel.plan
        assert isinstance(mapped, PatternMappedLayer) and plan is not None
        hw, layer = mapped.hw, mapped.layer
        n = int(x_int.shape[0])
        base, _ = dense_events(mapped, n)
        positions = layer.positions
        # magnitudes as narrow integers (the flags' table index, or the flags themselves),
        # (N, Cin, H, W) row-major: the flag windows are views of each image
        parts = narrow_magnitudes(layer, x_int.to(kernel.device), channels_last=False)
        active = torch.zeros((n, plan.pieces), dtype=torch.float64, device=kernel.device)
        chunk = self._images_per_chunk(kernel, options)
        for part in parts:  # one or two passes
            for a in range(0, n, chunk):  # chunks of whole images (memory bound)
                active[a : a + chunk] += self._active_pieces(kernel, part[a : a + chunk])
        piece_rounds, piece_array_ns = kernel.piece_timing(self.timing(mapped))
        per_piece = active.sum(dim=0)
        totals = per_piece @ kernel.piece_weights  # (4,)
        ou, adc, dac, cells = (int(round(float(v))) for v in totals)
        steps = n * positions * layer.passes
        in_bytes = math.ceil(hw.numbers.input_bits / 8)
        events = Events(
            ou_activations=ou, adc_conversions=adc,
            adc_rounds=int(round(float(per_piece @ piece_rounds))), dac_activations=dac,
            cell_reads=cells, shift_adds=adc, index_reads=self.layer_index_bits(mapped) * steps,
            comparisons=plan.pieces * hw.cycles * steps,
            buffer_read_bytes=plan.used_rows * in_bytes * steps,
            buffer_write_bytes=base.buffer_write_bytes, digital_ops=base.digital_ops,
            # every fetched input chunk tested for zero; every block row gathers its input
            # word; every column result routed to its output channel
            zero_checks=plan.used_rows * hw.cycles * steps,
            gathers=int(plan.piece_height.sum()) * steps, routes=adc)
        if not n:
            return Counted(events, 0, 0.0)
        busiest = (active @ kernel.piece_arrays).amax(dim=1).sum()
        busiest_ns = (active @ piece_array_ns).amax(dim=1).sum()
        return Counted(events, int(round(float(busiest))), float(busiest_ns))

    @staticmethod
    def _images_per_chunk(kernel: PatternKernel, options: EngineOptions) -> int:
        """Whole images per counting chunk: the padded flag images, the (channels x positions)
        words and codes and the (channels x 512) code histogram of every image stay within
        the memory budget."""
        layer = kernel.mapped.layer
        cin, h, w = layer.input_shape
        ph, pw = layer.padding
        per_channel = ((h + 2 * ph) * (w + 2 * pw) * 8
                       + layer.positions * (16 + 16 * CYCLES_PER_WORD) + CODES * 16)
        return max(1, int(options.memory_budget_mb * 2**20 // max(cin * per_channel, 1)))

    @staticmethod
    def _active_pieces(kernel: PatternKernel, xc: Tensor) -> Tensor:
        """(images, pieces) float64: activations of every row piece of a batch of input
        magnitudes (images, Cin, H, W; uint8, or int32 beyond 255), summed over positions and
        cycles. A piece is active in
        a cycle when one of its rows has a nonzero chunk.

        With few distinct piece masks (pattern pruning: a handful per layer), mask by mask:
        every input pixel's nonzero chunks form one word (`cycle_flags`, bit t for cycle
        t); the OR of the shifted windows of the mask's kernel positions is, per (image,
        channel, output position), the word of the cycles in which a piece with that mask is
        active, and the sum of its set bits over the positions is the count. Otherwise, by
        the histogram of the 9-bit codes (`_code_counts`). Integers, exact in float64."""
        masks, mask_index = kernel.masks
        if len(masks) > MASKS_DIRECT:
            per_mask = PatternScheme._code_counts(kernel, xc)
        else:
            per_mask = PatternScheme._mask_counts(kernel, xc, masks)
        return per_mask[:, kernel.piece_channel, mask_index]

    @staticmethod
    def _windows(kernel: PatternKernel, flags: Tensor) -> list[Tensor]:
        """The 9 kernel positions' windows (views, im2col row order) of padded per-pixel
        values (images, Cin, H + 2 ph, W + 2 pw): (images, Cin, Ho, Wo) each."""
        layer = kernel.mapped.layer
        _, ho, wo = layer.output_shape
        (sh, sw), (dh, dw) = layer.stride, layer.dilation
        kw_size = layer.kernel_size[1]
        windows = []
        for k in range(KERNEL_POSITIONS):  # the 9 kernel positions
            r0, c0 = (k // kw_size) * dh, (k % kw_size) * dw
            windows.append(flags[:, :, r0 : r0 + (ho - 1) * sh + 1 : sh,
                                 c0 : c0 + (wo - 1) * sw + 1 : sw])
        return windows

    @staticmethod
    def _flat_windows(kernel: PatternKernel, flags: Tensor) -> tuple[list[Tensor], Tensor]:
        """Stride 1: the 9 kernel positions' windows of padded per-pixel values (images,
        Cin, Hp, Wp) as contiguous runs of the flattened image, (images, Cin, L) each with
        L = (Ho - 1) x Wp + Wo: output position (i, j) at i x Wp + j, the Wp - Wo entries
        after each output row reading past it (`keep`: (L,) bool, False there). A window
        is then one slice of each image's flat pixels, not a strided 2-D view."""
        layer = kernel.mapped.layer
        _, ho, wo = layer.output_shape
        (dh, dw), kw_size = layer.dilation, layer.kernel_size[1]
        images, cin, hp, wp = (int(v) for v in flags.shape)
        flat = flags.view(images, cin, hp * wp)
        length = (ho - 1) * wp + wo
        windows = []
        for k in range(KERNEL_POSITIONS):  # the 9 kernel positions
            start = (k // kw_size) * dh * wp + (k % kw_size) * dw
            windows.append(flat[:, :, start : start + length])
        keep = torch.arange(length, device=flags.device) % wp < wo
        return windows, keep

    @staticmethod
    def _mask_counts(kernel: PatternKernel, xc: Tensor, masks: list[int]) -> Tensor:
        """(images, Cin, masks) float64: active (position, cycle) pairs of a piece of each
        mask, by ORs of cycle-flag words and bit counts.

        The ORs of a mask's windows go into one reused buffer per (image, channel), padded
        with zeros to a multiple of 8 bytes: stride 1 ORs contiguous runs of the flat padded
        image (`_flat_windows`; the entries between output rows are cleared), other strides
        the strided windows. Bit counts: `_set_bits`."""
        layer = kernel.mapped.layer
        ph, pw = layer.padding
        images, cin = int(xc.shape[0]), int(xc.shape[1])
        flags = F.pad(kernel.flags_of(xc), (pw, pw, ph, ph))  # padding: no flags
        keep: Tensor | None = None
        if tuple(layer.stride) == (1, 1):
            windows, keep_mask = PatternScheme._flat_windows(kernel, flags)
            keep = torch.where(keep_mask, -1, 0).to(flags.dtype)  # all bits / none
            length = int(windows[0].shape[2])
        else:
            windows = PatternScheme._windows(kernel, flags)
            length = layer.positions
        per_word = 8 // flags.element_size()  # flags per int64 word
        padded = -(-length // per_word) * per_word
        buffer = torch.zeros((images, cin, padded), dtype=flags.dtype, device=xc.device)
        word = buffer[:, :, :length].view(windows[0].shape)  # the padding stays zero
        counts = torch.zeros((images, cin, len(masks)), dtype=torch.float64, device=xc.device)
        for d, mask in enumerate(masks):  # a handful of distinct masks
            bits = [k for k in range(KERNEL_POSITIONS) if mask >> k & 1]
            if not bits:
                continue
            if len(bits) == 1:
                word.copy_(windows[bits[0]])
            else:
                torch.bitwise_or(windows[bits[0]], windows[bits[1]], out=word)
            for k in bits[2:]:
                word |= windows[k]
            if keep is not None:
                word &= keep  # the entries between output rows count nothing
            counts[:, :, d] = _set_bits(buffer.view(torch.uint8).view(images, cin, -1))
        return counts

    @staticmethod
    def _code_counts(kernel: PatternKernel, xc: Tensor) -> Tensor:
        """(images, Cin, distinct masks) float64, by codes: per input channel, output position
        and cycle the 9 nonzero flags form a code, and `code & piece mask` tests them.

        The codes of several cycles are built at once, per input pixel rather than per im2col
        entry: each input value's flags come from a table (`flag_tables`), and kernel
        position k's shifted window of the flag image is added shifted by k, so that bits
        9j..9j+8 of the sum are cycle j's code. A histogram of the codes per (image, channel)
        - 512 bins - times a (code, mask) hit table gives the counts, so the work grows with
        channels, not with pieces; all counts are integers below 2^53, exact in float64.
        """
        layer = kernel.mapped.layer
        images, cin = int(xc.shape[0]), int(xc.shape[1])
        _, ho, wo = layer.output_shape
        ph, pw = layer.padding
        dev = xc.device
        lanes = torch.arange(KERNEL_POSITIONS, dtype=torch.int64, device=dev)
        cell = ((torch.arange(images, device=dev).view(-1, 1) * cin
                 + torch.arange(cin, device=dev).view(1, -1)) * CODES).view(images, cin, 1, 1)
        hist = torch.zeros(images * cin * CODES, dtype=torch.int64, device=dev)
        for table, count in kernel.flag_tables:  # one or a few words of cycles
            flags = F.pad(table.index_select(0, xc.reshape(-1).to(torch.int32)).view(
                xc.shape), (pw, pw, ph, ph))  # padding: zero inputs, no flags
            word = torch.zeros((images, cin, ho, wo), dtype=torch.int64, device=dev)
            for k, window in enumerate(PatternScheme._windows(kernel, flags)):
                word += window << k  # disjoint bits: sum == or
            codes = (word.view(images, cin, 1, ho * wo)
                     >> (lanes[:count] * KERNEL_POSITIONS).view(1, 1, -1, 1)) & (CODES - 1)
            hist += torch.bincount((codes + cell).flatten(), minlength=images * cin * CODES)
        table_hit, _ = kernel.code_hits
        return (hist.view(images * cin, CODES).to(torch.float64) @ table_hit).view(
            images, cin, -1)


def _set_bits(buffer: Tensor) -> Tensor:
    """(images, Cin) int64: the set bits of each (image, channel)'s bytes, buffer (images,
    Cin, bytes) uint8 with a multiple of 8 bytes per row. On CPU numpy's popcount of the
    int64 words (2.4 MB per mask: 0.19 ms against 1.7 ms for `_set_bits_swar`)."""
    if buffer.device.type == "cpu":
        per_word = np.bitwise_count(buffer.numpy().view(np.uint64))
        return torch.from_numpy(per_word.sum(axis=2, dtype=np.int64))
    return _set_bits_swar(buffer)


def _set_bits_swar(buffer: Tensor) -> Tensor:
    """`_set_bits` in torch operations (any device): SWAR on the bytes (each at most 8), then
    every 8 bytes summed by one int64 multiply (the top byte of b x 0x0101010101010101 is
    the sum of b's bytes, at most 64: no carries), and int64 sums over the words."""
    images, cin = int(buffer.shape[0]), int(buffer.shape[1])
    b = buffer - ((buffer >> 1) & 0x55)
    b = (b & 0x33).add_((b >> 2) & 0x33)
    b = b.add_(b >> 4).bitwise_and_(0x0F)
    words = b.view(images, cin, -1).view(torch.int64)  # 8 byte counts per word
    return words.mul_(BYTE_SUM).bitwise_right_shift_(56).sum(dim=2)
