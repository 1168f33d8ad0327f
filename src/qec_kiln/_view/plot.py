"""The threshold plot, drawn by sinter's own ``sinter plot`` code from merged-so-far rows.

The flags are ``sinter plot``'s (``--x_func``, ``--group_func``, ``--filter_func``, ``--xaxis``,
``--yaxis``, ``--fig_size``, ``--title``), parsed and compiled by sinter's own argument parser and
drawn by its own figure helper (``sinter._command._main_plot``; sinter is pinned to 1.16), so the
curves, likelihood bands, axes and legend are what ``sinter plot`` draws for the same CSV. Tasks
still short of their targets get a hollow ring on top ("still sampling" in the legend).

Example:
    >>> import sinter
    >>> stats = [sinter.TaskStats(strong_id=f"{d}-{p}", decoder="pymatching", shots=1000,
    ...                           errors=int(p * 10_000 * d), json_metadata={"d": d, "p": p})
    ...          for d in (3, 5) for p in (0.001, 0.01)]
    >>> spec = PlotSpec().with_defaults({"d", "p"}, ["pymatching"])
    >>> spec.x_func, spec.xaxis
    ('m.p', '[log]p')
    >>> svg = render(stats, reached=set(), spec=spec, fmt="svg")
    >>> b"still sampling" in svg, svg.count(b"<path") > 10
    (True, True)
"""

from __future__ import annotations

import dataclasses
import io
import threading
import warnings
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any

from qec_kiln._errors import KilnError

if TYPE_CHECKING:
    import sinter

#: sinter plot's flags that qec-kiln passes on (in sinter's spelling).
PLOT_FLAGS = ("x_func", "group_func", "filter_func", "xaxis", "yaxis", "fig_size", "title")
#: Output formats by file extension.
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
_LOCK = threading.Lock()  # pyplot's figure manager is not thread-safe


@dataclasses.dataclass(frozen=True)
class PlotSpec:
    """sinter plot's settings; None means sinter's default (or ours, see :meth:`with_defaults`)."""

    x_func: str | None = None
    group_func: str | None = None
    filter_func: str | None = None
    xaxis: str | None = None
    yaxis: str | None = None
    fig_size: tuple[int, int] | None = None
    title: str | None = None

    def with_defaults(self, keys: Collection[str], decoders: Iterable[str]) -> PlotSpec:
        """x = ``m.p`` (log axis "p") and one curve per ``m.d`` (and decoder, when there are
        several) where every task's metadata has them; the rest stays as given.

        >>> PlotSpec(x_func="m.noise").with_defaults({"d", "p"}, ["pymatching"]).xaxis is None
        True
        """
        x, group, xaxis = self.x_func, self.group_func, self.xaxis
        if x is None and "p" in keys:
            x = "m.p"
            xaxis = "[log]p" if xaxis is None else xaxis
        if group is None and "d" in keys:
            several = len(set(decoders)) > 1
            group = ("{'sort': (decoder, m.d), 'label': f'{decoder} d={m.d}'}" if several
                     else "{'sort': m.d, 'label': f'd={m.d}'}")
        return dataclasses.replace(self, x_func=x, group_func=group, xaxis=xaxis)

    def argv(self) -> list[str]:
        """These settings as ``sinter plot`` arguments."""
        out: list[str] = []
        for flag in PLOT_FLAGS:
            value = getattr(self, flag)
            if value is None:
                continue
            out += [f"--{flag}", *map(str, value)] if flag == "fig_size" else [f"--{flag}", value]
        return out


def _sinter_args(spec: PlotSpec) -> Any:
    """sinter plot's own parsing: its defaults, and its flags compiled into functions."""
    from sinter._command._main_plot import parse_args

    try:
        return parse_args(["--in", "-", *spec.argv()])
    except SystemExit:  # argparse already printed why
        raise KilnError("the plot flags are not valid for sinter plot: " + " ".join(spec.argv())) from None
    except (SyntaxError, ValueError) as ex:
        raise KilnError(f"plot flags: {type(ex).__name__}: {ex}") from None


def highlight_factor(spec: PlotSpec) -> float:
    """The likelihood factor of the band ``sinter plot`` highlights around each point (its
    ``--highlight_max_likelihood_factor``, default 1000): the task table's interval uses it too.

    >>> highlight_factor(PlotSpec())
    1000.0
    """
    return float(_sinter_args(spec).highlight_max_likelihood_factor)


def check_spec(spec: PlotSpec) -> None:
    """Raise KilnError (one line) when sinter would refuse the flags, before any data is read."""
    _sinter_args(spec)


def render(stats: list[sinter.TaskStats], *, reached: Collection[str], spec: PlotSpec,
           fmt: str = "svg", dpi: float = 100) -> bytes:
    """The figure as ``fmt`` (png, svg or pdf) bytes. A function of the flags that fails on the
    data (a key some metadata lacks) is a KilnError naming the flag's text."""
    import matplotlib

    matplotlib.use("Agg")  # draw without a display; a no-op once pyplot runs on Agg
    import matplotlib.pyplot as plt
    from sinter._command._main_plot import _plot_helper

    args = _sinter_args(spec)
    with _LOCK, matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "qec-kiln"}), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", "No artists with labels found")  # no rows: no legend
        try:
            fig, axes = _plot_helper(
                samples=stats, group_func=args.group_func, x_func=args.x_func,
                point_label_func=args.point_label_func, y_func=args.y_func,
                filter_func=args.filter_func,
                failure_units_per_shot_func=args.failure_units_per_shot_func,
                failure_values_func=args.failure_values_func, plot_args_func=args.plot_args_func,
                failure_unit=args.failure_unit_name, plot_types=args.type, xaxis=args.xaxis,
                yaxis=args.yaxis, fig_size=args.fig_size, min_y=args.ymin, max_y=args.ymax,
                max_x=args.xmax, min_x=args.xmin,
                highlight_max_likelihood_factor=args.highlight_max_likelihood_factor,
                title=args.title, subtitle=args.subtitle, line_fits=args.line_fits,
                preprocess_stats_func=args.preprocess_stats_func, dpi=args.dpi)
        except KilnError:
            raise
        except Exception as ex:  # a user's expression failing on a row, as sinter plot would
            plt.close("all")
            raise KilnError(f"sinter plot {' '.join(spec.argv())}: {type(ex).__name__}: "
                            f"{ex}") from None
        try:
            _ring_unfinished(axes[0] if axes else None, stats, reached, args)
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, dpi=dpi, metadata=_no_date(fmt))
            return buf.getvalue()
        finally:
            plt.close(fig)


def _no_date(fmt: str) -> dict[str, Any] | None:
    """Leave the date out, so the same data gives the same bytes (and the page no flicker)."""
    return {"Date": None} if fmt in ("svg", "pdf") else None


def _ring_unfinished(ax: Any, stats: list[sinter.TaskStats], reached: Collection[str],
                     args: Any) -> None:
    """A hollow ring on each plotted point whose task is still sampling."""
    if ax is None:
        return
    xs, ys = [], []
    for st in stats:
        if st.strong_id in reached or st.shots <= st.discards or not args.filter_func(st):
            continue
        x = args.x_func(st)
        y = st.errors / (st.shots - st.discards)
        if isinstance(x, int | float) and y > 0:
            xs.append(x)
            ys.append(y)
    if xs:
        ax.scatter(xs, ys, s=160, facecolors="none", edgecolors="#555555", linewidths=1.2,
                   zorder=10, label=f"still sampling ({len(xs)})")
        ax.legend()


def format_of(path: str) -> str:
    """The output format of ``path`` by its extension.

    >>> format_of("threshold.SVG")
    'svg'
    """
    import os

    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise KilnError(f"--out {path}: give a .png, .svg or .pdf file name (the format comes "
                        "from the extension)")
    return FORMATS[ext]


__all__ = ["FORMATS", "PLOT_FLAGS", "PlotSpec", "check_spec", "format_of", "highlight_factor", "render"]
