"""``coec sweep``: a design-space sweep over target keys, models and compile options.

- ``spec``: the sweep file (a grid or a seeded sample over any target key, the model,
  phase, seq, batch, dtype, sockets, fusion and launch), its points and their keys;
- ``compile``: a point compiled count-only, each model at each shape lowered once and
  only the target-dependent passes run per point (a point that does not fit is a row
  with the reason);
- ``runners``: where points run: this process, local worker processes, or Ray tasks;
- ``run``: the driver: resumes from ``results.jsonl``, logs each row as it comes back;
- ``results``: the tables (Parquet, CSV, JSON), the Pareto front, the plots.
"""

from coec.sweep.results import RESULTS, pareto_front, write_results
from coec.sweep.run import run_sweep
from coec.sweep.spec import FIGURES, FORMAT, Sweep, load_sweep, point_key

__all__ = [
    "FIGURES",
    "FORMAT",
    "RESULTS",
    "Sweep",
    "load_sweep",
    "pareto_front",
    "point_key",
    "run_sweep",
    "write_results",
]
