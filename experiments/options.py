"""Command-line values turned into the library's objects: scenarios, sensors, lists, folders.

Every function here raises :class:`BadInput` with a one-line message naming the option
for a value it cannot use; the command line prints that line and exits with status 2.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

import networks
from agents.named import split_names
from experiments.limits import TooLargeError, check_horizon
from networks import DEFAULT_NETWORK, Scenario
from networks.demand import Demand, DemandError
from networks.due import check_due
from simulator import protocols
from simulator.cleaning import CLEANINGS
from simulator.faults import FaultConfig, FaultConfigError
from simulator.options import SimulationOptions, validation_message

RUNS = Path("runs")
"""Where results folders go when a command is given no ``--out``."""


class BadInput(ValueError):
    """A command-line value that cannot be used; the message is one line naming the option."""


def default_folder(kind: str, *names: str) -> Path:
    """``runs/KIND-NAME...-YYYYmmdd-HHMMSS``: a new results folder for one invocation."""
    return RUNS / "-".join((kind, *names, time.strftime("%Y%m%d-%H%M%S")))


def sensor_options(faults: str, cleaning: str) -> tuple[FaultConfig, str]:
    """The parsed ``--faults`` and a checked ``--cleaning``."""
    try:
        config = FaultConfig.parse(faults)
    except FaultConfigError as err:
        raise BadInput(f"--faults: {err}") from None
    if cleaning not in CLEANINGS:
        raise BadInput(f"--cleaning: unknown {cleaning!r}; choose from {', '.join(CLEANINGS)}")
    return config, cleaning


def demand_option(text: str, default_mode: str) -> Demand:
    """The parsed ``--demand`` (``resample,scale=1.2``, ``fixed``, ``scale=1.2``, ...)."""
    try:
        return Demand.parse(text, mode=default_mode)
    except DemandError as err:
        raise BadInput(f"--demand: {str(err).removeprefix('demand: ')}") from None


def simulation_options(protocol: str, network: str | None, **explicit: Any) -> SimulationOptions:
    """The settings of ``--protocol`` on ``network``, the options given explicitly winning.

    Args:
        protocol: A protocol of :data:`simulator.protocols.NAMES`.
        network: The scenario's name (a protocol may have settings of its own for it).
        explicit: Settings the command was given (``None`` values are left to the protocol).
    """
    given = {k: v for k, v in explicit.items() if v is not None}
    try:
        return SimulationOptions.for_protocol(protocol, network, **given)
    except protocols.ProtocolError as err:
        raise BadInput(f"--protocol: {err}") from None
    except ValidationError as err:
        raise BadInput(validation_message(err)) from None


def scenario_from(
    network: str | None, net: Path | None, routes: list[Path] | None,
    begin: int | None, end: int | None, *, allow_large: bool = False,
) -> Scenario:
    """The scenario the options name: a registered network, or a user's net and routes.

    Checked before anything runs: a vehicle is due in the horizon, and the horizon is
    at most a day unless ``allow_large`` (:mod:`experiments.limits`).

    Raises:
        BadInput: Options that contradict each other, or a horizon above the limit.
        NetworkError: An unknown network, unreadable files, an impossible horizon, or one
            in which no vehicle is due (:class:`networks.demand.NoVehiclesError`).
    """
    scenario = _named_scenario(network, net, routes, begin, end)
    try:
        check_horizon(scenario.horizon_s, allow_large=allow_large)
    except TooLargeError as err:
        raise BadInput(f"--begin/--end: {err}") from None
    check_due(scenario)
    return scenario


def _named_scenario(network: str | None, net: Path | None, routes: list[Path] | None,
                    begin: int | None, end: int | None) -> Scenario:
    if net is not None:
        if network is not None:
            raise BadInput("give either --network or --net/--routes, not both")
        return networks.from_files(net, routes or [], begin, end)
    if routes:
        raise BadInput("--routes needs --net")
    scenario = networks.get(network or DEFAULT_NETWORK)
    if begin is None and end is None:
        return scenario
    b = scenario.begin if begin is None else begin
    e = scenario.end if end is None else end
    return Scenario(scenario.name, scenario.net_file, scenario.route_files, b, e,
                    scenario.description)


@dataclass(frozen=True)
class ScenarioOptions:
    """Where a command runs: a registered network, or a user's net and routes; and when."""

    network: str | None = None
    """A registered network or ``grid-RxC``."""
    net: Path | None = None
    """A SUMO net file of the user's own."""
    routes: Sequence[Path] | None = None
    """Route files for :attr:`net`."""
    begin: int | None = None
    """Simulated start in s (default: the network's)."""
    end: int | None = None
    """Simulated end in s (default: the network's)."""
    allow_large: bool | None = None
    """``--allow-large``: a horizon above a day is run (:mod:`experiments.limits`)."""

    def scenario(self, default: str | None = None) -> Scenario:
        """The scenario named; the ``default`` network when neither a network nor a net is."""
        named = self.network is not None or self.net is not None
        return scenario_from(self.network if named else default, self.net,
                             list(self.routes or []), self.begin, self.end,
                             allow_large=bool(self.allow_large))

    def scenario_if_named(self) -> Scenario | None:
        """:meth:`scenario` when the options name a network at all, else None (a run's own)."""
        if self.network is None and self.net is None and not self.routes:
            return None
        return self.scenario()


def controller_names(text: str, option: str = "--controllers") -> list[str]:
    """The names of a comma-separated ``--controllers`` (or of ``option``, which takes names)."""
    names = split_names(text)
    if not names:
        raise BadInput(f"{option} is empty")
    return names


def int_list(text: str, option: str) -> tuple[int, ...]:
    """Comma-separated integers, e.g. ``--hidden 64,64``."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise BadInput(f"{option} takes comma-separated integers, got {text!r}") from None
    if not values:
        raise BadInput(f"{option} is empty")
    return values


def dropout_rates(text: str) -> list[float]:
    """``--rates``: comma-separated dropout rates, each in [0, 1)."""
    try:
        rates = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BadInput(f"--rates takes comma-separated numbers, got {text!r}") from None
    if not rates:
        raise BadInput("--rates is empty")
    for rate in rates:
        if not 0 <= rate < 1:
            raise BadInput(f"--rates: dropout must be in [0, 1), got {rate:g}")
    return rates


def federated_settings(federated: bool, episodes: int | None, local_episodes: int | None,
                       rounds: int | None, proximal: float | None) -> dict[str, Any]:
    """The ``episodes`` and ``federated`` settings of a training spec from ``train``'s options.

    Without ``--federated`` the federated options are refused; with it, ``--rounds R``
    and ``--local-episodes K`` give ``R x K`` episodes, and ``--episodes`` must agree.
    """
    from agents.federated import FederatedConfig

    if not federated:
        if local_episodes is not None or rounds is not None or proximal is not None:
            raise BadInput("--local-episodes, --rounds and --proximal need --federated")
        return {"episodes": 100 if episodes is None else episodes, "federated": None}
    config = FederatedConfig(local_episodes=1 if local_episodes is None else local_episodes,
                             proximal_mu=0.0 if proximal is None else proximal)
    if rounds is None:
        return {"episodes": 100 if episodes is None else episodes, "federated": config}
    if rounds < 1:
        raise BadInput(f"--rounds must be at least 1, got {rounds}")
    if episodes is not None and episodes != rounds * config.local_episodes:
        raise BadInput(f"--episodes {episodes} is not --rounds {rounds} x --local-episodes "
                       f"{config.local_episodes}: give one or the other")
    return {"episodes": rounds * config.local_episodes, "federated": config}


def picture_source(name: str | None, net: Path | None) -> tuple[Path, str | None]:
    """The net file ``networks show`` draws and its title (none for a user's own net)."""
    if net is not None:
        if name is not None:
            raise BadInput("give either a network NAME or --net, not both")
        return net, None
    scenario = networks.get(name or DEFAULT_NETWORK)
    return scenario.net_file, f"{scenario.name}: {scenario.description}"
