"""Several simulations of one network stepped together, for a learner that acts for all.

Each :class:`~simulator.parallel.TrafficSignalParallelEnv` runs its episode in
its own child process (:mod:`simulator.isolation`). A step is split in two,
:meth:`SimulationVector.send` and :meth:`SimulationVector.receive`: sending
writes every simulation's greens to its child's pipe, and the children simulate
at the same time while the caller works (a learner's update); receiving reads
their states in order. Both run in the caller's thread, so the parent's share of
a step (mirroring the state, observations, rewards) never waits for the GIL.
Simulations in this process (the TraCI backend) step on one thread each instead.

The simulations are independent: each has its own observation and reward
objects, sensor model and seed, and the answers come back in simulation
order whatever order the threads finish in, so a run depends on its seeds
and its number of simulations only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import numpy as np

from simulator.parallel import TrafficSignalParallelEnv

T = TypeVar("T")

Step = tuple[dict[str, np.ndarray], dict[str, float], dict[str, bool], dict[str, bool],
             dict[str, dict[str, Any]]]
"""What :meth:`TrafficSignalParallelEnv.step` returns."""


class SimulationVector:
    """``count`` environments of one network; an episode round runs up to ``count`` at once.

    Args:
        make_env: builds one environment (called ``count`` times, so each gets its own
            observation and reward objects).
        count: how many simulations step at once.
    """

    def __init__(self, make_env: Callable[[], TrafficSignalParallelEnv], count: int) -> None:
        if count < 1:
            raise ValueError(f"simulations must be at least 1, got {count}")
        self.envs: list[TrafficSignalParallelEnv] = []
        try:
            for _ in range(count):
                self.envs.append(make_env())
        except BaseException:
            self.close()
            raise
        if count > 1 and any(env.sim.isolate for env in self.envs):
            from simulator.isolation import start_server

            start_server()  # here, so that no two threads start one each
        self._pool = ThreadPoolExecutor(count, "greenphase-sim") if count > 1 else None
        # isolated simulations step in their own processes: sent and received from here
        self._direct = all(env.sim.isolate for env in self.envs)
        self.active = 0
        """How many simulations the current round runs (the first ``active``)."""
        self._sent: list[Future[Step]] | None = None

    def __len__(self) -> int:
        return len(self.envs)

    @property
    def possible_agents(self) -> list[str]:
        """The signals of the network, the same in every simulation."""
        return self.envs[0].possible_agents

    @property
    def running(self) -> bool:
        """Whether the round's episodes have steps left (they all end at the horizon)."""
        return any(env.agents for env in self.envs[: self.active])

    def reset(self, seeds: Sequence[int]) -> list[dict[str, np.ndarray]]:
        """Start one episode per seed, in the first ``len(seeds)`` simulations; their observations.

        Raises:
            ValueError: more seeds than simulations, or none.
        """
        if not 1 <= len(seeds) <= len(self.envs):
            raise ValueError(f"expected 1 to {len(self.envs)} seeds, got {len(seeds)}")
        self.active = len(seeds)
        resets = self._each([partial(env.reset, seed=seed)
                             for env, seed in zip(self.envs, seeds)])
        return [obs for obs, _ in resets]

    def step(self, actions: Sequence[dict[str, int]]) -> list[Step]:
        """One decision step of every running simulation, ``actions[i]`` for simulation ``i``."""
        self.send(actions)
        return self.receive()

    def send(self, actions: Sequence[dict[str, int]]) -> None:
        """Begin :meth:`step` (in the background with several simulations); :meth:`receive`."""
        if len(actions) != self.active:
            raise ValueError(f"expected actions for {self.active} simulations, got {len(actions)}")
        if self._sent is not None:
            raise RuntimeError("a step is under way: receive() it first")
        if not self._direct:
            self._sent = self._start([partial(env.step, action)
                                      for env, action in zip(self.envs, actions)])
            return
        sent: list[Future[Step]] = []
        for env, action in zip(self.envs, actions):
            try:
                env.send(action)
                sent.append(Future())
            except Exception as err:  # noqa: BLE001 - raised once every sent step has ended
                sent.append(_failed(err))
        self._sent = sent

    def receive(self) -> list[Step]:
        """The answers of the step :meth:`send` began, in simulation order.

        Every simulation's step ends before the first error is raised.
        """
        sent, self._sent = self._sent, None
        if sent is None:
            raise RuntimeError("no step under way: send() one first")
        if self._direct:
            for env, future in zip(self.envs, sent):
                if not future.done():
                    _settle(future, env.receive)
        return self._gather(sent)

    def results(self) -> list[Any]:
        """The finished episodes' :class:`~simulator.core.EpisodeResult`, in simulation order."""
        return [env.result for env in self.envs[: self.active]]

    def _each(self, calls: list[Callable[[], T]]) -> list[T]:
        """Run the calls at once; every one finishes before the first error is raised."""
        return self._gather(self._start(calls))

    def _start(self, calls: list[Callable[[], T]]) -> list[Future[T]]:
        """The calls under way on the threads, or (one simulation) already done here."""
        if self._pool is not None:
            return [self._pool.submit(call) for call in calls]
        return [_done(call) for call in calls]

    @staticmethod
    def _gather(futures: list[Future[T]]) -> list[T]:
        """The futures' results, in order; all of them end before an error is raised."""
        errors = [f.exception() for f in futures]  # waits for each, in order
        for error in errors:
            if error is not None:
                raise error
        return [f.result() for f in futures]

    def close(self) -> None:
        """Stop every simulation."""
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        for env in self.envs:
            env.close()


def _done(call: Callable[[], T]) -> Future[T]:
    """A future of ``call`` run here and now."""
    future: Future[T] = Future()
    _settle(future, call)
    return future


def _settle(future: Future[T], call: Callable[[], T]) -> None:
    """Give ``future`` the result of ``call`` run here and now, or its error."""
    try:
        future.set_result(call())
    except Exception as err:  # noqa: BLE001 - raised again by whoever waits for it
        future.set_exception(err)


def _failed(err: Exception) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_exception(err)
    return future
