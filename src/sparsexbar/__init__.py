"""sparsexbar: a bit-accurate simulator of sparsity-exploiting RRAM crossbar CNN accelerators."""

__version__ = "0.1.0"
