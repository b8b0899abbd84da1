"""A picture of a road network: its roads, and the signalised intersections marked and named.

Drawn from the net file with sumolib and matplotlib (no SUMO process, no
screen): every lane of every normal edge as a thin grey line, each traffic
light as a dot at the junction(s) it controls, labelled with its id, shortened.
"""

from __future__ import annotations

from pathlib import Path

from networks.errors import NetworkError
from networks.files import atomic_write
from networks.netinfo import read_net

ROAD_COLOUR = "#8c8c8c"
SIGNAL_COLOUR = "#d62728"
LABEL_CHARS = 14
"""Longer signal ids (``cluster_1098574052_...``) are cut to this many characters."""


class PictureError(NetworkError):
    """A network picture that cannot be drawn or written; the message is one line."""


def short_id(tls_id: str, chars: int = LABEL_CHARS) -> str:
    """A signal id cut to ``chars`` characters, with an ellipsis where it was cut."""
    return tls_id if len(tls_id) <= chars else tls_id[: chars - 1] + "…"


def _scale_bar_m(width_m: float) -> float:
    """The longest round length within a quarter of the picture's width."""
    lengths = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)
    return float(max([n for n in lengths if n <= width_m / 4] or [lengths[0]]))


def draw(net_file: Path, png: Path, *, title: str | None = None, dpi: int = 120) -> Path:
    """Draw a net file as a PNG: roads in grey, traffic lights as labelled red dots.

    Args:
        net_file: A SUMO ``.net.xml``.
        png: The picture to write (atomically: a temporary file, then a rename).
        title: A line above the picture; default: the file's name and its signal count.
        dpi: Resolution; the picture is 8 inches wide.

    Returns:
        ``png``.

    Raises:
        NetworkError: The net file is missing or malformed.
        PictureError: The picture cannot be written.
    """
    info = read_net(Path(net_file))  # one clear error for a bad net before sumolib reads it
    import sumolib
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    net = sumolib.net.readNet(str(net_file), withInternal=False)
    xmin, ymin, xmax, ymax = net.getBoundary()
    width, height = max(xmax - xmin, 1.0), max(ymax - ymin, 1.0)
    fig = Figure(figsize=(8.0, min(max(8.0 * height / width, 3.0), 12.0)), dpi=dpi)
    ax = fig.add_subplot()
    shapes = [lane.getShape() for edge in net.getEdges() for lane in edge.getLanes()]
    ax.add_collection(LineCollection(shapes, colors=ROAD_COLOUR, linewidths=0.6))

    signals = [tls for tls in net.getTrafficLights() if tls.getID() in info.tls_ids]
    for tls in signals:
        nodes = {conn[0].getEdge().getToNode() for conn in tls.getConnections()}
        x = sum(node.getCoord()[0] for node in nodes) / len(nodes)
        y = sum(node.getCoord()[1] for node in nodes) / len(nodes)
        ax.plot(x, y, "o", color=SIGNAL_COLOUR, markersize=6, markeredgecolor="white",
                markeredgewidth=0.8, zorder=3)
        ax.annotate(short_id(tls.getID()), (x, y), xytext=(5, 4), textcoords="offset points",
                    fontsize=7, color="#222222", zorder=4,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                          "alpha": 0.7})

    bar = _scale_bar_m(width)
    margin = 0.03 * max(width, height)
    bx, by = xmin + margin / 2, ymin - margin / 2
    ax.plot([bx, bx + bar], [by, by], color="black", linewidth=2, solid_capstyle="butt")
    ax.text(bx + bar / 2, by, f"{bar:g} m", ha="center", va="bottom", fontsize=7)
    ax.set_xlim(xmin - margin, xmax + margin)
    ax.set_ylim(ymin - margin, ymax + margin)
    ax.set_aspect("equal")
    ax.set_axis_off()
    n = len(signals)
    ax.set_title(title or f"{Path(net_file).name}: {n} signal{'s' if n != 1 else ''}",
                 fontsize=10)
    fig.tight_layout()

    png = Path(png)
    try:
        return atomic_write(png, lambda tmp: fig.savefig(tmp, format="png"))
    except OSError as err:
        raise PictureError(f"cannot write picture to {png}: {err.strerror or err}") from None
