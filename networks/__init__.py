"""Road networks: the registry of named scenarios, generators, and net-file reading."""

from networks.demand import Demand, DemandError, resample
from networks.drift import Drift, DriftError
from networks.errors import NetworkError
from networks.netinfo import Lane, Link, NetInfo, Phase, Program, read_net
from networks.registry import DEFAULT_NETWORK, Scenario, describe, from_files, get, names

__all__ = [
    "DEFAULT_NETWORK",
    "Demand",
    "DemandError",
    "Drift",
    "DriftError",
    "Lane",
    "Link",
    "NetInfo",
    "NetworkError",
    "Phase",
    "Program",
    "Scenario",
    "describe",
    "from_files",
    "get",
    "names",
    "read_net",
    "resample",
]
