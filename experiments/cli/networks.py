"""``networks list``, ``networks generate`` and ``networks show``: the scenario registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

import networks
from experiments.cli.common import JsonOpt, NetOpt, out_console, user_errors
from experiments.options import picture_source


def networks_table(rows: list[dict[str, Any]]) -> Table:
    """The registered networks as a table, one row each."""
    table = Table(title="networks")
    for col in ("name", "signals", "controlled lanes", "vehicles", "horizon s", "description"):
        table.add_column(col, justify="left" if col in ("name", "description") else "right")
    for r in rows:
        table.add_row(str(r["name"]), str(r["signals"]), str(r["controlled_lanes"]),
                      str(r["vehicles"]), f"{r['begin_s']}-{r['end_s']}", str(r["description"]))
    return table


def networks_list(json_out: JsonOpt = False) -> None:
    """The registered networks: signals, controlled lanes, vehicles, horizon."""
    with user_errors():
        rows = [networks.describe(networks.get(name)) for name in networks.names()]
    if json_out:
        typer.echo(json.dumps(rows))
    else:
        out_console.print(networks_table(rows))


def networks_generate(
    rows: Annotated[int, typer.Option("--rows", min=1, help="Intersections per column.")] = 3,
    cols: Annotated[int, typer.Option("--cols", min=1, help="Intersections per row.")] = 3,
) -> None:
    """Generate (and cache) a signalised grid with demand; print its files."""
    with user_errors():
        scenario = networks.get(f"grid-{rows}x{cols}")
    typer.echo(f"{scenario.name}: {scenario.net_file} {' '.join(map(str, scenario.route_files))}")


def networks_show(
    png: Annotated[Path, typer.Option("--png", help="The PNG file to write.")],
    name: Annotated[
        str | None, typer.Argument(help="Registered network or grid-RxC (default cologne1).")
    ] = None,
    net: NetOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --png if it exists.")
                         ] = False,
) -> None:
    """Draw a network as a PNG: its roads, and its traffic lights marked and labelled."""
    from experiments.layout import claim_files
    from networks.picture import draw

    with user_errors():
        claim_files([png], overwrite=overwrite)
        net_file, title = picture_source(name, net)
        draw(net_file, png, title=title)
    typer.echo(f"picture: {png}")
