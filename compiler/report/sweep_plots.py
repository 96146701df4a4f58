"""Pictures of a sweep's rows: each figure against each swept name, and a Pareto front.

- ``time_vs_NAME.png``: modeled time against one swept name (log time axis), a line for
  each combination of the other swept names;
- ``figures_vs_NAME.png``: every figure that varies, one panel each, the same lines;
- ``pareto.png``: every fitting point on the sweep's two objectives, the front marked.

Names with fewer than two values among the fitting rows get no picture; a name whose
values are not numbers (model, phase, fusion, launch) is drawn at evenly spaced places.
"""

from __future__ import annotations

from coec.report.plots import _figure_bytes, _pyplot
from coec.sweep.results import AXES

#: at most this many lines get a legend entry
MAX_LEGEND = 32


def _numeric(values) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _axis(name: str) -> tuple[str, float]:
    return AXES.get(name, (name, 1))


class _X:
    """Where a swept name's values go on an x axis: themselves, or evenly spaced."""

    def __init__(self, values: list):
        self.numeric = _numeric(values)
        self.values = sorted(values) if self.numeric else sorted(values, key=str)
        self.place = {v: (v if self.numeric else i) for i, v in enumerate(self.values)}

    def label(self, ax, name: str) -> None:
        ax.set_xlabel(name, fontsize=7)
        if not self.numeric:
            ax.set_xticks(range(len(self.values)), [str(v) for v in self.values])


def _series(rows: list[dict], name: str, others: list[str]) -> list[tuple[str, list[dict]]]:
    """The rows in lines: one per combination of the other swept names, in a fixed order."""
    lines: dict[tuple, list[dict]] = {}
    for r in rows:
        lines.setdefault(tuple(r[n] for n in others), []).append(r)
    return [
        (", ".join(map(str, k)), v) for k, v in sorted(lines.items(), key=lambda kv: str(kv[0]))
    ]


def _draw(ax, x: _X, name: str, lines, figure: str, log: bool) -> None:
    _, scale = _axis(figure)
    for label, rows in lines:
        pts = sorted((x.place[r[name]], r[figure] * scale) for r in rows)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3, lw=1, label=label or None)
    if log and all(r[figure] > 0 for _, rows in lines for r in rows):
        ax.set_yscale("log")
    x.label(ax, name)


def _legend(fig_or_ax, lines, others: list[str]) -> None:
    if others and len(lines) <= MAX_LEGEND:
        fig_or_ax.legend(
            title=", ".join(others),
            fontsize=5,
            title_fontsize=5,
            loc="upper left",
            bbox_to_anchor=(1.01, 1),
        )


def sweep_plots(sweep, rows: list[dict], front: list[dict] | None = None) -> dict[str, bytes]:
    """File name -> PNG bytes of every picture of ``rows``."""
    from coec.sweep.spec import FIGURES

    plt = _pyplot()
    names = list(sweep.grid)
    fitting = [r for r in rows if r["fits"]]
    pictures: dict[str, bytes] = {}
    varying = [f for f in FIGURES if len({r[f] for r in fitting}) > 1]
    for name in names:
        values = {r[name] for r in fitting}
        if len(values) < 2:
            continue
        x, others = _X(list(values)), [n for n in names if n != name]
        lines = _series(fitting, name, others)
        file = name.replace(".", "_")

        fig, ax = plt.subplots(figsize=(7.5, 3.8))
        _draw(ax, x, name, lines, "seconds", log=True)
        ax.set_ylabel(_axis("seconds")[0])
        _legend(ax, lines, others)
        fig.tight_layout()
        pictures[f"time_vs_{file}.png"] = _figure_bytes(fig, "png")
        plt.close(fig)

        if varying:
            cols = min(3, len(varying))
            rows_n = -(-len(varying) // cols)
            fig, axes = plt.subplots(rows_n, cols, figsize=(3.3 * cols + 1.6, 2.5 * rows_n))
            flat = list(axes.flat) if hasattr(axes, "flat") else [axes]
            for ax, figure in zip(flat, varying, strict=False):
                _draw(ax, x, name, lines, figure, log=False)
                ax.set_title(_axis(figure)[0], fontsize=8)
                ax.tick_params(labelsize=6)
            for ax in flat[len(varying) :]:
                ax.set_visible(False)
            handles, labels = flat[0].get_legend_handles_labels()
            if others and handles and len(lines) <= MAX_LEGEND:
                fig.legend(
                    handles,
                    labels,
                    title=", ".join(others),
                    fontsize=5,
                    title_fontsize=5,
                    loc="center right",
                )
            fig.suptitle(f"{sweep.name}: each figure against {name}", fontsize=9)
            fig.tight_layout(rect=(0, 0, 0.8 if others else 1, 1))
            pictures[f"figures_vs_{file}.png"] = _figure_bytes(fig, "png")
            plt.close(fig)
    if front is not None and fitting:
        pictures["pareto.png"] = _pareto(plt, sweep, fitting, front)
    return pictures


def _pareto(plt, sweep, fitting: list[dict], front: list[dict]) -> bytes:
    a, b = sweep.pareto
    (xlabel, xs), (ylabel, ys) = _axis(a), _axis(b)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.scatter(
        [r[a] * xs for r in fitting],
        [r[b] * ys for r in fitting],
        s=12,
        c="0.7",
        label=f"{len(fitting)} points that fit",
    )
    ax.step(
        [r[a] * xs for r in front], [r[b] * ys for r in front], "-", where="post", c="tab:red", lw=1
    )
    ax.scatter(
        [r[a] * xs for r in front],
        [r[b] * ys for r in front],
        s=22,
        c="tab:red",
        label=f"Pareto front ({len(front)})",
        zorder=3,
    )
    if len(front) <= 12:  # name the front's points by what was swept
        varied = [n for n in sweep.grid if len({r[n] for r in fitting}) > 1 and n not in (a, b)]
        for r in front:
            text = ", ".join(str(r[n]) for n in varied)
            ax.annotate(
                text, (r[a] * xs, r[b] * ys), fontsize=5, xytext=(4, 3), textcoords="offset points"
            )
    ax.set_xlabel(f"{xlabel} (lower is better)", fontsize=8)
    ax.set_ylabel(f"{ylabel} (lower is better)", fontsize=8)
    ax.set_title(f"{sweep.name}: Pareto front of {a} and {b}", fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    png = _figure_bytes(fig, "png")
    plt.close(fig)
    return png
