"""`dense`: the OU-based baseline with the straightforward mapping; skips nothing."""

from .scheme import DenseScheme

__all__ = ["DenseScheme"]
