"""Generated scenarios: signalised grids built with SUMO's own tools, cached on disk.

A grid is made by ``netgenerate --grid`` (the net) and ``tools/randomTrips.py``
(the demand), both from the ``eclipse-sumo`` wheel, which is located when a grid
is built, never at import. Fixed options and seeds make the files the same on
every build; SUMO's header comment, which carries a timestamp, is replaced by a
stamp naming the recipe, so a cache written by another recipe is rebuilt.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from networks.errors import NetworkError
from networks.netinfo import read_net
from networks.scenario import Scenario
from networks.sumo_home import SumoError, sumo_home

MAX_SIDE = 10
"""Largest number of rows or columns of a generated grid."""
BLOCK_M = 200
"""Length of every street between two junctions, and of the dead-end arms outside the grid."""
LANES = 2
"""Lanes per direction on every street."""
VEH_PER_ARM_H = 140
"""Demand: vehicles an hour entering by each of the ``2 * (rows + cols)`` outer arms."""
SEED = 42
"""Seed of randomTrips, fixed so the demand is the same on every build."""
BEGIN = 0
"""Simulated start of a generated scenario, in seconds."""
END = 3600
"""Simulated end of a generated scenario, in seconds."""
TIMEOUT_S = 600
"""Longest a single SUMO tool may run before the build is abandoned."""


CACHE_VARIABLE = "GREENPHASE_CACHE"
"""The environment variable that names the cache root."""


def default_cache_dir() -> Path:
    """The cache root: ``$GREENPHASE_CACHE`` if set, else ``~/.cache/greenphase``.

    A folder the variable names is made if missing and must take files (it is checked
    with a probe file, which is removed).

    Raises:
        NetworkError: The variable names a file, or a folder that cannot be made or written.
    """
    env = os.environ.get(CACHE_VARIABLE)
    if not env:
        return Path.home() / ".cache" / "greenphase"
    path = Path(env).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise NetworkError(cache_problem(path, err)) from None
    return path


def cache_problem(path: Path, err: OSError) -> str:
    """One line: the cache folder ``path`` cannot be written, and what to do."""
    env = os.environ.get(CACHE_VARIABLE)
    if path.is_file() or isinstance(err, (NotADirectoryError, FileExistsError)):
        why = "is a file, not a folder" if path.is_file() else "lies under a file"
    else:
        why = f"cannot be written ({err.strerror or err})"
    named = bool(env) and Path(path).resolve().is_relative_to(Path(str(env)).expanduser().resolve())
    where = f"{CACHE_VARIABLE}={env}: the cache folder {path}" if named else \
        f"the cache folder {path}"
    return (f"{where} {why}; set {CACHE_VARIABLE} to a folder greenphase may write"
            + (", or unset it" if named else ""))


def _check_side(label: str, value: object) -> int:
    # bool is an int subclass, but grid(True, 2) is a mistake rather than a 1-row grid
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIDE:
        raise NetworkError(f"grid {label} must be an integer from 1 to {MAX_SIDE}, got {value!r}")
    return value


def _netgenerate_args(rows: int, cols: int, net: str) -> list[str]:
    # --grid.attach-length adds a dead-end arm on every outer side, so each of the
    # rows * cols crossings is a real four-arm junction; --tls.guess then signals
    # exactly those (a dead end's incoming lane speeds stay under the threshold).
    # netgenerate's program per signal: two opposing green phases (permissive left
    # turns, 'g', yield to oncoming traffic) each followed by a 3 s yellow.
    return [
        "--grid",
        "--grid.x-number", str(cols),
        "--grid.y-number", str(rows),
        "--grid.length", str(BLOCK_M),
        "--grid.attach-length", str(BLOCK_M),
        "--default.lanenumber", str(LANES),
        "--tls.guess", "true",
        "--no-turnarounds", "true",
        "--output-file", net,
    ]  # fmt: skip


def _randomtrips_args(rows: int, cols: int, net: str, routes: str) -> list[str]:
    # Fringe-to-fringe trips only, so every vehicle crosses the grid; --min-distance
    # drops trips that would leave by the arm they came in on. Departures are spread
    # at random over the hour; --validate (duarouter) keeps routable trips only, and
    # one thread keeps its output order fixed.
    return [
        "--net-file", net,
        "--output-trip-file", routes,
        "--seed", str(SEED),
        "--fringe-factor", "max",
        "--min-distance", str(BLOCK_M / 2),
        "--begin", str(BEGIN),
        "--end", str(END),
        "--insertion-rate", str(VEH_PER_ARM_H * 2 * (rows + cols)),
        "--random-depart",
        "--validate",
        "--threads", "1",
        "--prefix", "veh",
        "--trip-attributes", 'departLane="best" departSpeed="max"',
    ]  # fmt: skip


def _stamp(name: str, *recipe: list[str]) -> str:
    # a hash, not the command lines: an XML comment may not contain "--"
    digest = hashlib.sha256(repr(recipe).encode()).hexdigest()[:16]
    return f"<!-- greenphase {name}, recipe {digest} -->"


def _restamp(path: Path, stamp: str) -> None:
    """Replace the comments before the root element (SUMO's dated header) with ``stamp``."""
    text = path.read_text(encoding="utf-8")
    decl, sep, body = text.partition("?>")
    if not sep:
        decl, body = "", text
    else:
        decl += sep
    body = body.lstrip()
    while body.startswith("<!--"):
        end = body.find("-->")
        if end < 0:
            raise NetworkError(f"{path}: unterminated comment in SUMO output")
        body = body[end + 3 :].lstrip()
    path.write_text(f"{decl}\n{stamp}\n{body}", encoding="utf-8")


def _is_current(folder: Path, files: tuple[str, ...], stamp: str) -> bool:
    """Whether ``folder`` holds every file of the build, each made by this recipe."""
    for name in files:
        try:
            with open(folder / name, encoding="utf-8") as handle:
                head = handle.read(512)
        except OSError:
            return False
        if stamp not in head:
            return False
    return True


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    """Run one SUMO tool; a failure becomes a one-line :class:`NetworkError`."""
    tool = Path(cmd[1] if cmd[0] == sys.executable else cmd[0]).name
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise NetworkError(f"{tool} ran longer than {TIMEOUT_S} s") from None
    except OSError as err:
        raise NetworkError(f"cannot run {tool}: {err}") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines()]
        last = next((ln for ln in reversed(lines) if ln), "no error message")
        raise NetworkError(f"{tool} failed (exit {proc.returncode}): {last}")


def _sumo_home() -> Path:
    try:
        return sumo_home()
    except SumoError as err:
        raise NetworkError(str(err)) from None


def _install(built: Path, final: Path, scratch: Path, files: tuple[str, ...], stamp: str) -> None:
    """Move a finished build into place in one rename; tolerate a racing builder."""
    try:
        os.rename(built, final)
        return
    except OSError:
        if _is_current(final, files, stamp):
            return  # another process finished the same build first
    # a stale or broken cache folder: move it aside, then put the new one in its place
    try:
        os.rename(final, scratch / "stale")
    except OSError:
        pass  # gone already
    try:
        os.rename(built, final)
    except OSError as err:
        if not _is_current(final, files, stamp):
            raise NetworkError(f"cannot write the network cache {final}: {err}") from None


def grid(rows: int, cols: int, *, cache_dir: Path | None = None) -> Scenario:
    """A ``rows`` x ``cols`` grid of signalised four-arm junctions with an hour of demand.

    Streets are 200 m long with two lanes each way; every junction runs netgenerate's
    fixed-time program (two green phases, each with a yellow). The demand is
    ``140 * 2 * (rows + cols)`` vehicles an hour as ``<trip>`` elements entering and
    leaving at the grid's edge (1680 an hour for 3x3): busy, but it clears under fixed
    timing. The files are cached in ``<cache>/networks/grid-RxC/`` and built only once.

    Args:
        rows: Junctions from south to north, 1 to 10.
        cols: Junctions from west to east, 1 to 10.
        cache_dir: Cache root; default :func:`default_cache_dir`.

    Returns:
        The scenario ``grid-RxC`` over the horizon 0 to 3600 s.

    Raises:
        NetworkError: A bad size, SUMO missing, or a SUMO tool that failed.
    """
    rows = _check_side("rows", rows)
    cols = _check_side("cols", cols)
    name = f"grid-{rows}x{cols}"
    net, routes = f"{name}.net.xml", f"{name}.rou.xml"
    files = (net, routes)
    net_args = _netgenerate_args(rows, cols, net)
    trip_args = _randomtrips_args(rows, cols, net, routes)
    stamp = _stamp(name, net_args, trip_args)
    root = (Path(cache_dir) if cache_dir is not None else default_cache_dir()).expanduser()
    final = root.resolve() / "networks" / name
    if not _is_current(final, files, stamp):
        _build(rows, cols, final, files, net_args, trip_args, stamp)
    rate = VEH_PER_ARM_H * 2 * (rows + cols)
    return Scenario(
        name,
        final / net,
        (final / routes,),
        BEGIN,
        END,
        f"synthetic {rows}x{cols} signalised grid, {BLOCK_M} m blocks, {rate} veh/h (generated)",
    )


def _build(
    rows: int,
    cols: int,
    final: Path,
    files: tuple[str, ...],
    net_args: list[str],
    trip_args: list[str],
    stamp: str,
) -> None:
    """Build the grid in a scratch folder beside ``final`` and rename it into place."""
    home = _sumo_home()
    env = {**os.environ, "SUMO_HOME": str(home)}
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    except OSError as err:
        raise NetworkError(cache_problem(final.parent, err)) from None
    try:
        _run([str(home / "bin" / "netgenerate"), *net_args], scratch, env)
        _run([sys.executable, str(home / "tools" / "randomTrips.py"), *trip_args], scratch, env)
        built = scratch / final.name
        built.mkdir()
        for file in files:  # randomTrips leaves duarouter's routes behind: not kept
            os.replace(scratch / file, built / file)
            _restamp(built / file, stamp)
        signals = read_net(built / files[0]).tls_ids
        if len(signals) != rows * cols:
            raise NetworkError(
                f"netgenerate built {len(signals)} signals for {final.name}, expected {rows * cols}"
            )
        _install(built, final, scratch, files, stamp)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
