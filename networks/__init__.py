"""Road networks: the registry of named scenarios, generators, and net-file reading."""

from networks.errors import NetworkError
from networks.netinfo import Lane, Link, NetInfo, Phase, Program, read_net
from networks.registry import DEFAULT_NETWORK, Scenario, demand, describe, from_files, get, names

__all__ = [
    "DEFAULT_NETWORK",
    "Lane",
    "Link",
    "NetInfo",
    "NetworkError",
    "Phase",
    "Program",
    "Scenario",
    "demand",
    "describe",
    "from_files",
    "get",
    "names",
    "read_net",
]
