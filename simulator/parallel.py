"""The PettingZoo environment: one agent per signal of a network, all acting at once.

Agents are named by their SUMO traffic-light ids. Each agent chooses the green
phase of its own signal (``Discrete``) and observes its own intersection's
detectors; each is rewarded for its own incoming lanes. Every agent is
truncated together at the scenario's horizon, when the episode's KPIs go into
every agent's ``info``.

What it shares with :class:`~simulator.env.TrafficSignalEnv` lives in
:mod:`simulator.envbase`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import ParallelEnv

from simulator.envbase import (
    SignalEnvBase,
    check_seed,
    integer_phases,
    joint_space,
    sumo_seed,
)


class TrafficSignalParallelEnv(SignalEnvBase, ParallelEnv[str, np.ndarray, int]):
    """A SUMO network as a PettingZoo parallel environment: one agent per signal.

    Takes the arguments of :class:`~simulator.envbase.SignalEnvBase`: the network, then
    ``options``, ``observation``, ``reward`` (one reward per signal), ``program``,
    ``exit_detectors``, ``sensor_model``, ``backend``, ``gui`` and any
    :class:`SimulationOptions` field by keyword.
    """

    metadata = {"name": "greenphase_v0", "render_modes": []}
    render_mode = None

    def _set_spaces(self, boxes: list[spaces.Box], phases: list[spaces.Discrete]) -> None:
        self.possible_agents: list[str] = list(self.sim.tls_ids)
        self.agents: list[str] = []
        self.observation_spaces: dict[str, spaces.Space[Any]] = dict(
            zip(self.possible_agents, boxes, strict=True)
        )
        self.action_spaces: dict[str, spaces.Space[Any]] = dict(
            zip(self.possible_agents, phases, strict=True)
        )
        self.state_space = joint_space(boxes)
        self._splits = np.cumsum([b.shape[0] for b in boxes])[:-1]
        self._np_random: np.random.Generator | None = None

    def observation_space(self, agent: str) -> spaces.Space[Any]:
        """The observation space of one signal (the same object on every call)."""
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space[Any]:
        """The green phases one signal chooses from (the same object on every call)."""
        return self.action_spaces[agent]

    def state(self) -> np.ndarray:
        """Every intersection's observation concatenated, in :attr:`possible_agents` order."""
        readings = self.sim.readings
        if readings is None:
            raise RuntimeError("no reading yet: call reset() first")
        return self.observation_fn.observe_all(self.sim.views, readings)

    def _observe(self) -> dict[str, np.ndarray]:
        parts = np.split(self.state(), self._splits)
        return dict(zip(self.possible_agents, parts, strict=True))

    def _infos(self) -> dict[str, dict[str, Any]]:
        readings = self.sim.true_readings  # the true queue, whatever the sensors say
        assert readings is not None
        return {
            agent: {"time": self.sim.time, "queue": float(readings.queue[view.entry].sum())}
            for agent, view in zip(self.possible_agents, self.sim.views, strict=True)
        }

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        """Start a new episode; ``seed`` (0 to 2**31 - 1) is also SUMO's random seed.

        Raises:
            ValueError: A seed that is not an integer SUMO takes.
        """
        seed = check_seed(seed)
        if seed is not None or self._np_random is None:
            self._np_random, _ = seeding.np_random(seed)
        self.result = None
        self.sim.start(sumo_seed(seed, self._np_random))
        self.agents = list(self.possible_agents)
        return self._observe(), self._infos()

    def step(
        self, actions: dict[str, Any]
    ) -> tuple[
        dict[str, np.ndarray],
        dict[str, float],
        dict[str, bool],
        dict[str, bool],
        dict[str, dict[str, Any]],
    ]:
        """Apply every signal's wished-for green for one decision interval.

        Under a SUMO program the actions are ignored (and may be empty).

        Raises:
            RuntimeError: no episode is running (call :meth:`reset`).
            ValueError: an agent is missing from ``actions``, or unknown, or its action is
                not one whole phase number.
        """
        self.send(actions)
        return self.receive()

    def send(self, actions: dict[str, Any]) -> None:
        """Begin :meth:`step`, finished by :meth:`receive`; raises as :meth:`step` does.

        The actions are checked, and the step is under way (in an isolated episode's own
        process) until :meth:`receive`.
        """
        if not self.agents:
            raise RuntimeError("no episode is running: call reset() first")
        phases = None
        if self.sim.program is None:
            missing = [a for a in self.agents if a not in actions]
            unknown = [a for a in actions if a not in self.action_spaces]
            if missing or unknown:
                raise ValueError(
                    f"actions must name every signal once: missing {missing}, unknown {unknown}"
                )
            phases = [self._phase(a, actions[a]) for a in self.possible_agents]
        self._started = self.sim.time
        self.sim.send(phases)

    def receive(self) -> tuple[
        dict[str, np.ndarray],
        dict[str, float],
        dict[str, bool],
        dict[str, bool],
        dict[str, dict[str, Any]],
    ]:
        """What :meth:`step` returns, for the step :meth:`send` began."""
        self.sim.receive()
        readings = self.sim.true_readings  # rewarded for what happened, not what sensors said
        assert readings is not None
        rewards = self.reward_fn.reward_all(self.sim.views, readings,
                                            self.sim.time - self._started)
        obs = self._observe()
        infos = self._infos()
        done = self.sim.done
        if done:
            self.result = self.sim.finish()
            for info in infos.values():
                info["episode_kpis"] = self.result.kpis
            self.agents = []
        agents = self.possible_agents
        return (
            obs,
            {a: float(r) for a, r in zip(agents, rewards, strict=True)},
            dict.fromkeys(agents, False),
            dict.fromkeys(agents, done),
            infos,
        )

    @staticmethod
    def _phase(agent: str, action: Any) -> int:
        phases = integer_phases(action, f"the action of {agent!r}")
        if phases.size != 1:
            raise ValueError(f"the action of {agent!r} must be one phase number, got {action!r}")
        return int(phases[0])

    def render(self) -> None:
        """Nothing to render: watch an episode with ``gui=True`` instead."""
        return None
