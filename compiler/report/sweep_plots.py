"""Pictures of a sweep's rows: each figure against each swept name, and a Pareto front.

Every picture has a panel per workload (each combination of the swept model, phase, seq,
batch and dtype), since workloads differ by orders of magnitude, and in each panel a line
per combination of the other swept design values, coloured alike in every panel:

- ``time_vs_NAME.png``: modeled time against the swept name NAME;
- ``figures_vs_NAME.png``: every figure that varies (a column each) against NAME;
- ``pareto.png``: every fitting point on the sweep's two objectives, the front marked.

Names with fewer than two values among the fitting rows get no picture and no legend; a
name whose values are not numbers (model, phase, fusion, launch) is drawn at evenly
spaced places.
"""

from __future__ import annotations

from coec.report.plots import _figure_bytes, _pyplot
from coec.sweep.spec import AXES, FIGURES, WORKLOAD

#: at most this many lines get a legend
MAX_LEGEND = 40


def _numeric(values) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _axis(name: str) -> tuple[str, float]:
    return AXES.get(name, (name, 1))


def _key(values: tuple) -> tuple:
    """Numbers in numeric order, text after them in text order."""
    return tuple((0, v, "") if _numeric([v]) else (1, 0, str(v)) for v in values)


class _Layout:
    """One swept name's pictures: its x axis, the workload panels, the coloured lines."""

    def __init__(self, sweep, fitting: list[dict], name: str):
        varied = [n for n in sweep.grid if n != name and len({r[n] for r in fitting}) > 1]
        self.name, self.by = name, [n for n in varied if n in WORKLOAD]
        self.design = [n for n in varied if n not in WORKLOAD]
        values = list({r[name] for r in fitting})
        self.numeric = _numeric(values)
        self.values = sorted(values) if self.numeric else sorted(values, key=str)
        self.place = {v: (v if self.numeric else i) for i, v in enumerate(self.values)}
        self.panels: dict[tuple, list[dict]] = {}
        for r in sorted(fitting, key=lambda r: _key(tuple(r[n] for n in self.by))):
            self.panels.setdefault(tuple(r[n] for n in self.by), []).append(r)
        self.lines = sorted({tuple(r[n] for n in self.design) for r in fitting}, key=_key)

    def title(self, panel: tuple) -> str:
        return ", ".join(map(str, panel))

    def draw(self, plt, ax, rows: list[dict], figure: str) -> None:
        _, scale = _axis(figure)
        colours = plt.get_cmap("tab10" if len(self.lines) <= 10 else "tab20")
        for i, line in enumerate(self.lines):
            ours = [r for r in rows if tuple(r[n] for n in self.design) == line]
            if not ours:
                continue
            pts = sorted((self.place[r[self.name]], r[figure] * scale) for r in ours)
            colour = colours(i % colours.N)
            style = ("-", "--", ":", "-.")[(i // colours.N) % 4]
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker="o",
                ms=3,
                lw=1,
                ls=style,
                color=colour,
                label=", ".join(map(str, line)) or None,
            )
        ax.set_xlabel(self.name, fontsize=7)
        ax.tick_params(labelsize=6)
        if not self.numeric:
            ax.set_xticks(range(len(self.values)), [str(v) for v in self.values])

    @property
    def legend_inches(self) -> float:
        """The width the legend takes at the picture's right (0: none)."""
        if not self.design or len(self.lines) > MAX_LEGEND:
            return 0.0
        text = max(
            [len(", ".join(self.design))] + [len(", ".join(map(str, x))) for x in self.lines]
        )
        return 0.45 + text * 5 * 0.55 / 72  # 5 pt type, about 0.55 em a character

    def legend(self, fig, ax) -> bool:
        """One legend for the whole picture, at its right; whether there is one."""
        handles, labels = ax.get_legend_handles_labels()
        if not self.design or not handles or len(self.lines) > MAX_LEGEND:
            return False
        fig.legend(
            handles,
            labels,
            title=", ".join(self.design),
            fontsize=5,
            title_fontsize=5,
            loc="center right",
        )
        return True


def sweep_plots(sweep, rows: list[dict], front: list[dict] | None = None) -> dict[str, bytes]:
    """File name -> PNG bytes of every picture of ``rows``."""
    plt = _pyplot()
    fitting = [r for r in rows if r["fits"]]
    pictures: dict[str, bytes] = {}
    varying = [f for f in FIGURES if len({r[f] for r in fitting}) > 1]
    for name in sweep.grid:
        if len({r[name] for r in fitting}) < 2:
            continue
        lay, file = _Layout(sweep, fitting, name), name.replace(".", "_")
        n = len(lay.panels)
        cols = min(2, n)
        fig, axes = plt.subplots(
            -(-n // cols),
            cols,
            figsize=(4.2 * cols + lay.legend_inches, 2.8 * -(-n // cols)),
            squeeze=False,
        )
        flat = list(axes.flat)
        for ax, (panel, ours) in zip(flat, lay.panels.items(), strict=False):
            lay.draw(plt, ax, ours, "seconds")
            ax.set_ylabel(_axis("seconds")[0], fontsize=7)
            ax.set_title(lay.title(panel) or sweep.name, fontsize=8)
        for ax in flat[n:]:
            ax.set_visible(False)
        lay.legend(fig, flat[0])
        room = 1 - lay.legend_inches / fig.get_figwidth()
        fig.suptitle(f"{sweep.name}: modeled time against {name}", fontsize=9)
        fig.tight_layout(rect=(0, 0, room, 1))
        pictures[f"time_vs_{file}.png"] = _figure_bytes(fig, "png")
        plt.close(fig)

        if varying:
            cols = len(varying)
            fig, axes = plt.subplots(
                n, cols, figsize=(2.5 * cols + lay.legend_inches, 2.1 * n + 0.5), squeeze=False
            )
            for row, (panel, ours) in zip(axes, lay.panels.items(), strict=True):
                for ax, figure in zip(row, varying, strict=True):
                    lay.draw(plt, ax, ours, figure)
                    ax.set_title(_axis(figure)[0], fontsize=7)
                row[0].set_ylabel(lay.title(panel), fontsize=7)
            lay.legend(fig, axes[0][0])
            room = 1 - lay.legend_inches / fig.get_figwidth()
            fig.suptitle(f"{sweep.name}: each figure against {name}", fontsize=9)
            fig.tight_layout(rect=(0, 0, room, 1))
            pictures[f"figures_vs_{file}.png"] = _figure_bytes(fig, "png")
            plt.close(fig)
    if front is not None and fitting:
        pictures["pareto.png"] = _pareto(plt, sweep, fitting, front)
    return pictures


def _pareto(plt, sweep, fitting: list[dict], front: list[dict]) -> bytes:
    """A panel per workload: its fitting points on the two objectives, its front marked."""
    from coec.sweep.spec import workload

    a, b = sweep.pareto
    (xlabel, xs), (ylabel, ys) = _axis(a), _axis(b)
    by = workload(sweep)
    groups: dict[tuple, list[dict]] = {}
    for r in fitting:
        groups.setdefault(tuple(r[n] for n in by), []).append(r)
    cols = min(2, len(groups))
    rows_n = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5.2 * cols, 3.6 * rows_n), squeeze=False)
    flat = list(axes.flat)
    # the front's points are named by the design values that vary (not the objectives)
    varied = [
        n
        for n in sweep.grid
        if n not in by and n not in (a, b) and len({r[n] for r in fitting}) > 1
    ]
    for ax, (group, points) in zip(flat, groups.items(), strict=False):
        ours = [r for r in front if tuple(r[n] for n in by) == group]
        ax.scatter(
            [r[a] * xs for r in points],
            [r[b] * ys for r in points],
            s=12,
            c="0.7",
            label=f"{len(points)} points that fit",
        )
        ax.step(
            [r[a] * xs for r in ours],
            [r[b] * ys for r in ours],
            "-",
            where="post",
            c="tab:red",
            lw=1,
        )
        ax.scatter(
            [r[a] * xs for r in ours],
            [r[b] * ys for r in ours],
            s=22,
            c="tab:red",
            label=f"Pareto front ({len(ours)})",
            zorder=3,
        )
        spots: dict[tuple, list[dict]] = {}  # points of the front at one place: one label
        for r in ours:
            spots.setdefault((r[a], r[b]), []).append(r)
        if varied and len(spots) <= 12:
            for (x, y), here in spots.items():
                text = ", ".join(
                    "/".join(map(str, sorted({r[n] for r in here}, key=lambda v: _key((v,)))))
                    for n in varied
                )
                ax.annotate(
                    text, (x * xs, y * ys), fontsize=5, xytext=(4, 3), textcoords="offset points"
                )
        ax.set_title(", ".join(map(str, group)) or sweep.name, fontsize=8)
        ax.set_xlabel(f"{xlabel} (lower is better)", fontsize=7)
        ax.set_ylabel(f"{ylabel} (lower is better)", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(
            fontsize=5, title=f"labels: {', '.join(varied)}" if varied else None, title_fontsize=5
        )
    for ax in flat[len(groups) :]:
        ax.set_visible(False)
    fig.suptitle(f"{sweep.name}: Pareto front of {a} and {b}", fontsize=9)
    fig.tight_layout()
    png = _figure_bytes(fig, "png")
    plt.close(fig)
    return png
