"""Federated training: each intersection trains its own copy of the policy; a server averages.

Every intersection is a :class:`Client` with its own copy of the network, its
own replay buffer and its own optimiser, and learns only from its own
detectors' transitions. Every ``local_episodes`` episodes each client sends
its weights to the :class:`~agents.fedavg.Server`, which averages them weighted by the
samples each client collected (FedAvg) and sends the average back. With
``proximal_mu > 0`` each client's loss gains ``mu/2 * ||w - w_global||^2``,
which keeps it near the last global weights (FedProx).

Only weights cross between a client and the server, never observations,
rewards or transitions. :class:`~agents.fedavg.Channel` is the one place where anything
crosses (:meth:`FederatedDQN.exchange` is its one user): it serialises a
state dict to bytes, counts them, and refuses any payload that is not
exactly the model's tensors under the model's names.

One simulation serves every client, so the clients' networks sit side by
side in :class:`ClientNetworks` and a decision step updates all of them in
one batched pass; each client's weights, target network, Adam moments,
gradient clipping and replay buffer stay its own (a test checks that every
client ends exactly where a DQN of its own, fed only its intersection's
transitions, would). On roadside hardware each client would run alone.
The exploration schedule and the double-DQN target are DQN's own
(:mod:`agents.dqn`), taken over whole client batches.

(McMahan et al., "Communication-Efficient Learning of Deep Networks from
Decentralized Data", AISTATS 2017; Li et al., "Federated Optimization in
Heterogeneous Networks", MLSys 2020.)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import AfterValidator, Field
from torch import nn

from agents.dqn import (
    DQNConfig,
    ReplayBuffer,
    epsilon_at,
    epsilon_greedy,
    td_target,
    update_due,
)
from agents.errors import ConfigError
from agents.fedavg import WEIGHTINGS, Channel, Server, WeightUpdate
from agents.learner import Learner
from agents.models import MASKED, SignalNetwork
from agents.optim import GradientStepper, OptimConfig, batch_size
from agents.settings import Settings, one_of


class FederatedConfig(Settings):
    """How often clients synchronise and how the server averages them."""

    section: ClassVar[str] = "federated"

    local_episodes: int = Field(default=1, ge=1)
    """Episodes each client trains on its own between two rounds (K); the run has
    ``episodes // local_episodes`` rounds."""
    proximal_mu: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    """FedProx coefficient: ``mu/2 * ||w - w_global||^2`` joins each client's loss; 0 is FedAvg."""
    weighting: Annotated[str, AfterValidator(one_of(WEIGHTINGS))] = "samples"
    """``samples``: the average is weighted by each client's transitions in the round;
    ``uniform``: every client counts the same."""

    def rounds(self, episodes: int) -> int:
        """Aggregation rounds in a run of ``episodes`` episodes."""
        return episodes // self.local_episodes


class ClientNetworks(nn.Module):
    """Every client's copy of the global network, side by side, for one batched pass.

    Client ``c`` owns slice ``c`` of every parameter: its layer ``l`` computes
    ``x @ weights[l][c] + biases[l].view(clients, -1)[c]``, and masks the
    phases its intersection lacks, as the shared network restricted to agent
    index ``c`` does. Rows of different clients never meet, so a loss that is
    the sum of the clients' own losses gives each slice exactly its client's
    gradient. Biases are kept flat so that the L1 penalty, which takes weight
    matrices only, leaves them alone as it does in a :class:`SignalNetwork`.

    Args:
        net: the global model (a shared-weights Q-network); every client starts as a copy.
        clients: how many clients.
    """

    def __init__(self, net: SignalNetwork, clients: int) -> None:
        super().__init__()
        if not net.shared or net.kind != "q":
            raise ConfigError("federated training needs a shared-weights Q-network")
        body = net.bodies[0]
        self.layers = [name for name, m in body.named_children() if isinstance(m, nn.Linear)]
        self.clients = clients
        self.max_phases = net.max_phases
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for weight, bias in self.stacked(net.state_dict()):
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(bias))
        valid: torch.Tensor = net.valid  # type: ignore[assignment]  # a registered buffer
        self.register_buffer("valid", valid.clone())

    def stacked(self, state: Mapping[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the (weight, bias) stacks that give every client the weights ``state``."""
        return [
            (state[f"bodies.0.{name}.weight"].detach().T.repeat(self.clients, 1, 1).contiguous(),
             state[f"bodies.0.{name}.bias"].detach().repeat(self.clients))
            for name in self.layers
        ]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Masked phase scores ``[clients, batch, phases]`` of ``obs [clients, batch, size]``."""
        x = obs
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            # bmm then add: baddbmm is 10x slower when threads compete for the cores
            x = torch.bmm(x, weight) + bias.view(self.clients, 1, -1)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        valid: torch.Tensor = self.valid  # type: ignore[assignment]  # a registered buffer
        return x[..., : self.max_phases].masked_fill(~valid[:, None, :], MASKED)

    def client_state(self, client: int) -> dict[str, torch.Tensor]:
        """Client ``client``'s weights as a state dict of the global :class:`SignalNetwork`."""
        state: dict[str, torch.Tensor] = {}
        for name, weight, bias in zip(self.layers, self.weights, self.biases, strict=True):
            state[f"bodies.0.{name}.weight"] = weight[client].detach().T.clone()
            state[f"bodies.0.{name}.bias"] = bias.detach().view(self.clients, -1)[client].clone()
        valid: torch.Tensor = self.valid  # type: ignore[assignment]  # a registered buffer
        state["valid"] = valid.clone()
        return state

    @torch.no_grad()
    def load_client_state(self, client: int, state: Mapping[str, torch.Tensor]) -> None:
        """Set client ``client``'s weights from a state dict of the global network."""
        for name, weight, bias in zip(self.layers, self.weights, self.biases, strict=True):
            weight[client].copy_(state[f"bodies.0.{name}.weight"].T)
            bias.view(self.clients, -1)[client].copy_(state[f"bodies.0.{name}.bias"])

    def client_grad_norms(self) -> torch.Tensor:
        """The gradient norm of each client over all its parameters (``[clients]``)."""
        squares = torch.zeros(self.clients)
        for p in self.parameters():
            if p.grad is not None:
                squares += p.grad.detach().reshape(self.clients, -1).pow(2).sum(dim=1)
        return squares.sqrt()


class Client:
    """One intersection: its slice of the client networks and its own replay buffer.

    Args:
        index: the intersection's index; its slice of ``online`` and ``target``.
        online: the clients' networks.
        target: the clients' target networks.
        buffer: its own replay buffer.
    """

    def __init__(self, index: int, online: ClientNetworks, target: ClientNetworks,
                 buffer: ReplayBuffer) -> None:
        self.index = index
        self.online, self.target, self.buffer = online, target, buffer
        self.samples = 0
        """Transitions collected since the last round."""

    def store(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray) -> None:
        """Keep one of this intersection's own transitions (``obs``: ``[1, obs_size]``)."""
        self.buffer.add(obs, np.array([self.index]), np.array([action]),
                        np.array([reward], dtype=np.float32), next_obs)
        self.samples += 1

    def update(self) -> WeightUpdate:
        """What this client sends at the end of a round: its weights and sample count."""
        return WeightUpdate(self.index, self.online.client_state(self.index), self.samples)

    def receive(self, weights: Mapping[str, torch.Tensor]) -> None:
        """Start the next round from the global weights (online and target network)."""
        self.online.load_client_state(self.index, weights)
        self.target.load_client_state(self.index, weights)
        self.samples = 0

    def state_dict(self) -> dict[str, Any]:
        """Its replay buffer and the round's sample count."""
        return {"buffer": self.buffer.state_dict(), "samples": self.samples}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.buffer.load_state_dict(dict(state["buffer"]))
        self.samples = int(state["samples"])


class FederatedDQN(Learner):
    """Federated double DQN over every intersection of a network, with DQN's learner interface.

    Each client acts from its own network, stores its own intersection's
    transitions in its own buffer and, at every decision step, takes one
    gradient step on a batch of its own transitions: the loss, the gradient
    clipping, the Adam moments, the target network are each client's own
    (computed for all clients at once by :class:`ClientNetworks`; Adam and
    weight decay work element by element, so one optimiser over the stacked
    slices is one optimiser per client). Greedy actions (evaluation) and
    :attr:`net` are the global model, which a run saves as its policy.

    Args:
        net: the global model: a shared-weights Q-network over every intersection.
        config: rounds, proximal term and weighting.
        dqn: DQN settings; each client keeps ``buffer_size / clients`` transitions and
            starts learning after ``learning_starts / clients`` of its own, so that all
            clients together hold as much as one shared learner.
        optim: optimiser settings of each client (``grad_clip`` applies per client).
        total_steps: decision steps of the whole run.
        rng: random generator for exploration and sampling.
    """

    def __init__(self, net: SignalNetwork, config: FederatedConfig, dqn: DQNConfig,
                 optim: OptimConfig, total_steps: int, rng: np.random.Generator) -> None:
        n = len(net.obs_dims)
        self.config, self.optim, self.rng = config, optim, rng
        self.dqn = dqn.replace(buffer_size=max(1, dqn.buffer_size // n),
                               learning_starts=-(-dqn.learning_starts // n))
        self.total_steps = max(1, total_steps)
        self.net = net
        """The global model (the server's, averaged in place)."""
        self.server = Server(net, config.weighting)
        self.channel = Channel(net.state_dict())
        self.online = ClientNetworks(net, n)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.clients = [Client(i, self.online, self.target, ReplayBuffer(self.dqn.buffer_size,
                                                                         net.obs_size))
                        for i in range(n)]
        self._anchor: list[torch.Tensor] = []  # FedProx's: the last global weights, stacked
        self.exchange(upload=False)  # every client starts from the global model
        # clipping is per client (below), so the stepper itself does not clip
        self.stepper = GradientStepper(self.online, optim.replace(grad_clip=None),
                                       max(1, total_steps // self.dqn.train_every))
        self.stepper.optimizer.register_step_pre_hook(self._clip_per_client)
        self._norms = torch.zeros(n)
        self.steps = 0
        self.episodes = 0
        self._episode_bytes = 0.0

    @property
    def epsilon(self) -> float:
        """Current exploration rate (the clients step together)."""
        return epsilon_at(self.dqn, self.steps, self.total_steps)

    @property
    def episode_bytes(self) -> float:
        """Bytes exchanged at the end of the last episode (0 when no round ended there)."""
        return self._episode_bytes

    def _global_stack(self) -> list[torch.Tensor]:
        """The global weights as every client's slice, in ``online.parameters()`` order."""
        stacks = self.online.stacked(self.server.weights())
        return [w for w, _ in stacks] + [b for _, b in stacks]

    def proximal_term(self) -> torch.Tensor:
        """FedProx: ``mu/2 * ||w_c - w_global||^2`` summed over the clients."""
        squares = [((p - a) ** 2).sum()
                   for p, a in zip(self.online.parameters(), self._anchor, strict=True)]
        return 0.5 * self.config.proximal_mu * torch.stack(squares).sum()

    def _clip_per_client(self, *_: Any) -> None:
        """Before each optimiser step: clip every client's gradient to its own norm limit."""
        self._norms = self.online.client_grad_norms()
        if self.optim.grad_clip is None or math.isinf(self.optim.grad_clip):
            return
        scale = (self.optim.grad_clip / (self._norms + 1e-6)).clamp(max=1.0)
        for p in self.online.parameters():
            if p.grad is not None:
                p.grad.view(self.online.clients, -1).mul_(scale[:, None])

    def _client_rows(self, rows: torch.Tensor, agent: torch.Tensor) -> torch.Tensor:
        """Rows ordered by intersection, as ``[clients, 1, size]``."""
        out = rows.new_zeros(self.online.clients, 1, rows.shape[1])
        out[agent, 0] = rows
        return out

    @torch.no_grad()
    def act(self, obs: torch.Tensor, agent: torch.Tensor, *, explore: bool) -> np.ndarray:
        """Exploring: each intersection's own network, epsilon-greedy; greedy: the global model."""
        if not explore:
            scores, _ = self.net(obs, agent)
            return scores.argmax(dim=1).numpy()
        own = self.online(self._client_rows(obs, agent))[:, 0].argmax(dim=1).numpy()
        phases = np.asarray(self.net.num_phases)[agent.numpy()]
        return epsilon_greedy(own[agent.numpy()], phases, self.epsilon, self.rng)

    def observe(self, obs: torch.Tensor, agent: torch.Tensor, action: np.ndarray,
                reward: np.ndarray, next_obs: torch.Tensor) -> list[dict[str, float]]:
        """Route each intersection's transition to its own client; update when due."""
        obs_np, next_np = obs.numpy(), next_obs.numpy()
        for i, a in enumerate(agent.tolist()):
            self.clients[a].store(obs_np[i : i + 1], int(action[i]), float(reward[i]),
                                  next_np[i : i + 1])
        self.steps += 1
        if not update_due(self.dqn, self.steps, min(c.buffer.size for c in self.clients)):
            return []
        return [self.update()]

    def update(self) -> dict[str, float]:
        """One gradient step of every client on a batch of its own transitions."""
        c = self.dqn
        size = batch_size(self.optim, min(client.buffer.size for client in self.clients))
        batches = [client.buffer.sample(size, self.rng) for client in self.clients]
        batch = {key: torch.stack([b[key] for b in batches]) for key in batches[0]}
        q = self.online(batch["obs"]).gather(2, batch["action"][..., None]).squeeze(2)
        with torch.no_grad():
            online_next = self.online(batch["next_obs"]) if c.double else None
            target = td_target(c, batch["reward"], self.target(batch["next_obs"]), online_next)
        # each client's own mean loss; their sum gives each client exactly its own gradient
        own = F.smooth_l1_loss(q, target, reduction="none").mean(dim=1)
        loss = own.sum()
        proximal = self.proximal_term() if self.config.proximal_mu > 0 else torch.zeros(())
        log = self.stepper.step(loss + proximal)
        if self.stepper.updates % c.target_every == 0:
            self.target.load_state_dict(self.online.state_dict())
        log.update(update=self.stepper.updates, epsilon=self.epsilon,
                   loss=float(own.detach().mean()), grad_norm=float(self._norms.mean()),
                   proximal=float(proximal.detach()) / self.online.clients,
                   q_mean=float(q.detach().mean()))
        return log

    def end_of_episode(self) -> list[dict[str, float]]:
        """Count the episode; every ``local_episodes`` episodes, run a round."""
        self.episodes += 1
        self._episode_bytes = 0.0
        if self.episodes % self.config.local_episodes == 0:
            self._episode_bytes = float(self.exchange(upload=True))
        return []

    def exchange(self, *, upload: bool) -> int:
        """A round: clients upload and the server averages (with ``upload``), clients download.

        This is the only place where anything passes between clients and the
        server, and all of it goes through :attr:`channel`: weights and sample
        counts up, the global weights down. Returns the bytes exchanged.
        """
        before = self.channel.bytes_total
        if upload:
            self.server.aggregate([self.channel.upload(client.update())
                                   for client in self.clients])
        global_weights = self.server.weights()
        for client in self.clients:
            client.receive(self.channel.download(global_weights))
        self._anchor = self._global_stack()
        return self.channel.bytes_total - before

    def state_dict(self) -> dict[str, Any]:
        """The server's model and round count, the clients' networks, optimiser and buffers."""
        return {
            "server": {"net": self.server.weights(), "rounds": self.server.rounds},
            "online": self.online.state_dict(),
            "target": self.target.state_dict(),
            "stepper": self.stepper.state_dict(),
            "clients": [client.state_dict() for client in self.clients],
            "channel": self.channel.state_dict(),
            "steps": self.steps,
            "episodes": self.episodes,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        if len(state["clients"]) != len(self.clients):
            raise ValueError(f"the state holds {len(state['clients'])} clients, "
                             f"this network has {len(self.clients)}")
        self.server.net.load_state_dict(state["server"]["net"])
        self.server.rounds = int(state["server"]["rounds"])
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        self.stepper.load_state_dict(state["stepper"])
        for client, client_state in zip(self.clients, state["clients"], strict=True):
            client.load_state_dict(client_state)
        self.channel.load_state_dict(state["channel"])
        self.steps = int(state["steps"])
        self.episodes = int(state["episodes"])
        self._anchor = self._global_stack()
