"""sparsexbar: a bit-accurate simulator of sparsity-exploiting RRAM crossbar CNN accelerators.

Entry points: `simulate()` (Python) and the `sparsexbar` command line.
"""

__version__ = "0.1.0"

from .core.config import HardwareConfig, load_config, preset, preset_names  # noqa: E402
from .core.engine import EngineOptions  # noqa: E402
from .core.errors import SparsexbarError, SparsexbarNote, SparsexbarWarning  # noqa: E402
from .result import Result  # noqa: E402
from .simulate import simulate  # noqa: E402
from .training.inputs import InputSpec  # noqa: E402

__all__ = ["EngineOptions", "HardwareConfig", "InputSpec", "Result", "SparsexbarError",
           "SparsexbarNote", "SparsexbarWarning", "__version__", "load_config", "preset",
           "preset_names", "simulate"]
