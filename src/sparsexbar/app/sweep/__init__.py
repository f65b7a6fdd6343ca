"""Design-space sweeps: models x schemes x hardware points, one `simulate()` run per point.

spec (the sweep file, its points and their keys) -> run (local process pool or Ray tasks)
-> store (one Parquet row per point, written atomically) -> analyze (Pareto fronts, the
summary table and CSV, plots). See docs/sweeps.md.
"""

from .analyze import (
    PARETO_PLOTS,
    failures,
    pareto_front,
    summarize,
    summary_table,
    varying_parameters,
)
from .run import (
    BACKENDS,
    SweepReport,
    WorkerEnvironmentError,
    check_device,
    load_inputs,
    run_point,
    run_sweep,
)
from .spec import (
    SchemeSpec,
    SweepFileError,
    SweepPoint,
    SweepSpec,
    canonical_json,
    expand_points,
    load_sweep,
    parse_sweep,
    point_key,
)
from .store import (
    RESULTS_DIR,
    RUN_INFO_COLUMNS,
    comparable,
    done_keys,
    failed_row,
    load_results,
    result_row,
    results_dir,
    row_table,
    write_row,
)

__all__ = ["BACKENDS", "PARETO_PLOTS", "RESULTS_DIR", "RUN_INFO_COLUMNS", "SchemeSpec",
           "SweepFileError", "SweepPoint", "SweepReport", "SweepSpec",
           "WorkerEnvironmentError", "canonical_json", "check_device", "comparable",
           "done_keys", "expand_points", "failed_row", "failures", "load_inputs",
           "load_results", "load_sweep", "pareto_front", "parse_sweep", "point_key",
           "result_row", "results_dir", "row_table", "run_point", "run_sweep", "summarize",
           "summary_table", "varying_parameters", "write_row"]
