"""The top-1 loop of the calibrations and studies: a quantized model run batch by batch
through an executor (or the exact integer reference), counting correct top-1 classes."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..core.frontend import LayerExecutor, QuantizedModel, accuracy


def predict(qmodel: QuantizedModel, executor: LayerExecutor, images: Tensor,
            batch_size: int) -> Tensor:
    """Top-1 class of every image."""
    preds = [qmodel.run(images[a : a + batch_size], executor).argmax(dim=1)
             for a in range(0, len(images), batch_size)]  # batches of images
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)


def top1(qmodel: QuantizedModel, executor: LayerExecutor | None, images: Tensor,
         labels: Tensor, batch_size: int,
         before_batch: Callable[[int], None] | None = None) -> float:
    """Top-1 (fraction) of `qmodel` run through `executor` (None: the exact integer
    reference); `before_batch(j)` is called before batch j."""
    correct = 0
    for j, a in enumerate(range(0, len(labels), batch_size)):  # batches of images
        if before_batch is not None:
            before_batch(j)
        batch = images[a : a + batch_size]
        logits = (qmodel.run_reference(batch) if executor is None
                  else qmodel.run(batch, executor))
        correct += accuracy(logits, labels[a : a + batch_size].to(logits.device))
    return correct / max(len(labels), 1)
