"""Federated DQN: FedAvg and FedProx by hand, only weights on the wire, clients as separate DQNs."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch

from agents.dqn import DQN, DQNConfig
from agents.fedavg import SAMPLE_COUNT_BYTES, Channel, ChannelError, Server, WeightUpdate
from agents.federated import FederatedConfig, FederatedDQN
from agents.models import SignalNetwork
from agents.optim import ConfigError, OptimConfig

OBS_DIMS, PHASES, HIDDEN = [6, 5, 6], [3, 2, 3], (8,)


@pytest.fixture(autouse=True)
def one_thread():
    """As in training: tiny networks on a shared machine run faster on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def global_net(seed: int = 0) -> SignalNetwork:
    torch.manual_seed(seed)
    return SignalNetwork(OBS_DIMS, PHASES, HIDDEN, shared=True)


def transitions(steps: int, seed: int = 1):
    """Deterministic transitions of the three intersections, step by step."""
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        obs, nxt = torch.rand(3, 6, generator=gen), torch.rand(3, 6, generator=gen)
        obs[1, 5] = nxt[1, 5] = 0.0  # intersection 1 has 5 features, padded
        action = np.array([step % 3, step % 2, (step + 1) % 3])
        reward = np.array([0.3 * step, -0.1 * step, 0.05], dtype=np.float32)
        yield obs, action, reward, nxt


def learner(net: SignalNetwork, config: FederatedConfig, **dqn: int) -> FederatedDQN:
    settings = {"learning_starts": 3 * 12, "buffer_size": 3 * 50, "target_every": 1000, **dqn}
    return FederatedDQN(net, config, DQNConfig(**settings),
                        OptimConfig(batch_mode="full", grad_clip=0.05, l1=0.01), 1000,
                        np.random.default_rng(0))


# ------------------------------------------------------------------ server
def test_fedavg_is_the_sample_weighted_mean_computed_by_hand() -> None:
    server = Server(global_net())
    keys = server.weights().keys()
    updates = [
        WeightUpdate(0, {k: torch.full_like(v, 1.0) if v.is_floating_point() else v
                         for k, v in server.weights().items()}, samples=10),
        WeightUpdate(1, {k: torch.full_like(v, 4.0) if v.is_floating_point() else v
                         for k, v in server.weights().items()}, samples=30),
        WeightUpdate(2, {k: torch.full_like(v, -2.0) if v.is_floating_point() else v
                         for k, v in server.weights().items()}, samples=60),
    ]
    averaged = server.aggregate(updates)
    expected = (10 * 1.0 + 30 * 4.0 + 60 * -2.0) / 100  # = 0.1
    assert averaged.keys() == keys
    for key, value in averaged.items():
        if value.is_floating_point():
            assert torch.allclose(value, torch.full_like(value, expected)), key
    assert torch.equal(averaged["valid"], global_net().state_dict()["valid"])
    assert server.rounds == 1
    assert torch.allclose(server.net.state_dict()["bodies.0.0.weight"],
                          torch.full_like(averaged["bodies.0.0.weight"], expected))


def test_fedavg_of_real_weights_elementwise() -> None:
    nets = [global_net(seed) for seed in (1, 2)]
    updates = [WeightUpdate(i, n.state_dict(), samples) for i, (n, samples)
               in enumerate(zip(nets, (1, 3), strict=True))]
    averaged = Server(global_net()).aggregate(updates)
    w = [n.state_dict()["bodies.0.2.bias"] for n in nets]
    assert torch.allclose(averaged["bodies.0.2.bias"], 0.25 * w[0] + 0.75 * w[1])


def test_uniform_weighting_ignores_sample_counts() -> None:
    nets = [global_net(seed) for seed in (1, 2)]
    updates = [WeightUpdate(i, n.state_dict(), s) for i, (n, s)
               in enumerate(zip(nets, (1, 99), strict=True))]
    averaged = Server(global_net(), weighting="uniform").aggregate(updates)
    w = [n.state_dict()["bodies.0.0.weight"] for n in nets]
    assert torch.allclose(averaged["bodies.0.0.weight"], (w[0] + w[1]) / 2)


@pytest.mark.parametrize("changes", [{"local_episodes": 0}, {"proximal_mu": -1.0},
                                     {"proximal_mu": float("nan")}, {"weighting": "median"}])
def test_bad_federated_settings_are_refused(changes: dict) -> None:
    with pytest.raises(ConfigError, match="federated"):
        FederatedConfig(**changes)


def test_config_round_trip_and_rounds() -> None:
    config = FederatedConfig(local_episodes=5, proximal_mu=0.01)
    assert FederatedConfig.from_dict(config.to_dict()) == config
    assert config.rounds(100) == 20
    with pytest.raises(ConfigError, match="federated.local_epochs: unknown key"):
        FederatedConfig.from_dict({"local_epochs": 2})


# ------------------------------------------------------------------ channel
def test_only_weights_cross_the_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every payload of a whole training stretch is the model's state dict, nothing else."""
    net = global_net()
    fed = learner(net, FederatedConfig(local_episodes=1), learning_starts=3 * 4)
    payloads: list[dict[str, torch.Tensor]] = []
    real = Channel.transmit

    def spy(self: Channel, payload):
        payloads.append(dict(payload))
        return real(self, payload)

    monkeypatch.setattr(Channel, "transmit", spy)
    agent = torch.arange(3)
    for episode in range(2):
        for obs, _, reward, nxt in transitions(20, seed=episode):
            action = fed.act(obs, agent, explore=True)
            fed.observe(obs, agent, action, reward, nxt)
        fed.end_of_episode()
    assert len(payloads) == 2 * (3 + 3)  # each round: 3 uploads, 3 downloads
    obs_batch = (12, net.obs_size)  # the shape of a replay batch of observations
    buffer_shapes = {(50, net.obs_size), (50,)}  # a client's buffer
    for payload in payloads:
        assert payload.keys() == net.state_dict().keys()
        for key, tensor in payload.items():
            assert isinstance(tensor, torch.Tensor)
            assert tensor.shape == net.state_dict()[key].shape
            assert tuple(tensor.shape) != obs_batch and tuple(tensor.shape) not in buffer_shapes
    assert fed.channel.bytes_up > 0 and fed.channel.bytes_down > 0


def test_channel_refuses_anything_but_the_weights() -> None:
    net = global_net()
    channel = Channel(net.state_dict())
    weights = net.state_dict()
    with pytest.raises(ChannelError, match="extra keys \\['obs'\\]"):
        channel.transmit({**weights, "obs": torch.zeros(12, net.obs_size)})
    with pytest.raises(ChannelError, match="missing keys"):
        channel.transmit({k: v for k, v in weights.items() if k != "valid"})
    with pytest.raises(ChannelError, match="shape"):
        channel.transmit({**weights, "bodies.0.0.weight": torch.zeros(12, net.obs_size)})
    with pytest.raises(ChannelError, match="is a list"):
        channel.transmit({**weights, "valid": [1, 2]})
    with pytest.raises(ChannelError):
        channel.upload(WeightUpdate(0, {**weights, "reward": torch.zeros(3)}, 5))
    assert channel.bytes_total == 0  # nothing refused was counted


def test_channel_counts_the_serialised_bytes() -> None:
    net = global_net()
    channel = Channel(net.state_dict())
    received = channel.upload(WeightUpdate(1, net.state_dict(), 7))
    buffer = io.BytesIO()
    torch.save({k: v.clone() for k, v in net.state_dict().items()}, buffer)
    assert channel.bytes_up == len(buffer.getvalue()) + SAMPLE_COUNT_BYTES
    assert received.samples == 7 and received.client == 1
    for key, value in net.state_dict().items():
        assert torch.equal(received.weights[key], value)


# ------------------------------------------------------------------ clients
def test_each_client_learns_exactly_as_its_own_dqn_would() -> None:
    """The batched clients equal one DQN per intersection, fed only that intersection's data."""
    net = global_net()
    fed = learner(copy.deepcopy(net), FederatedConfig())
    own = [DQN(copy.deepcopy(net), DQNConfig(learning_starts=12, buffer_size=50, target_every=1000),
               OptimConfig(batch_mode="full", grad_clip=0.05, l1=0.01), 1000,
               np.random.default_rng(0)) for _ in range(3)]
    agent = torch.arange(3)
    logs = []
    for obs, action, reward, nxt in transitions(15):
        logs += fed.observe(obs, agent, action, reward, nxt)
        for i, dqn in enumerate(own):
            dqn.observe(obs[i : i + 1], agent[i : i + 1], action[i : i + 1],
                        reward[i : i + 1], nxt[i : i + 1])
    assert len(logs) == 4 and logs[-1]["update"] == 4
    for i, dqn in enumerate(own):
        mine = fed.online.client_state(i)
        for key, value in dqn.net.state_dict().items():
            assert torch.allclose(mine[key], value, atol=1e-6), (i, key)
    moved = fed.online.client_state(0)["bodies.0.0.weight"] - net.state_dict()["bodies.0.0.weight"]
    assert moved.abs().max() > 1e-4  # they did learn (and the clipping at 0.05 was active)
    assert logs[-1]["grad_norm"] > 0.05


def test_fedprox_pulls_clients_towards_the_global_weights() -> None:
    def distance(mu: float) -> float:
        fed = learner(global_net(), FederatedConfig(proximal_mu=mu), learning_starts=3 * 4)
        for obs, action, reward, nxt in transitions(40):
            fed.observe(obs, torch.arange(3), action, reward, nxt)
        start = fed.server.weights()
        return sum(float(((fed.online.client_state(c)[k] - start[k]) ** 2).sum())
                   for c in range(3) for k in start if start[k].is_floating_point())

    fedavg, fedprox = distance(0.0), distance(50.0)
    assert fedprox < 0.5 * fedavg


def test_proximal_term_is_zero_at_the_global_weights_and_grows_away() -> None:
    fed = learner(global_net(), FederatedConfig(proximal_mu=2.0))
    assert float(fed.proximal_term().detach()) == 0.0
    first = next(iter(fed.online.parameters()))
    with torch.no_grad():
        first[1].add_(0.5)  # client 1's first weight matrix moves by 0.5 everywhere
    # mu/2 * sum of squares = 2/2 * numel * 0.5^2
    assert float(fed.proximal_term().detach()) == pytest.approx(first[1].numel() * 0.25)


def test_a_round_broadcasts_the_average_to_every_client() -> None:
    fed = learner(global_net(), FederatedConfig(local_episodes=2), learning_starts=3 * 4)
    for obs, action, reward, nxt in transitions(20):
        fed.observe(obs, torch.arange(3), action, reward, nxt)
    before = [fed.online.client_state(c) for c in range(3)]
    assert fed.end_of_episode() == [] and fed.episode_bytes == 0.0  # K = 2: no round yet
    fed.end_of_episode()
    assert fed.episode_bytes > 0 and fed.server.rounds == 1
    mean = (before[0]["bodies.0.0.weight"] + before[1]["bodies.0.0.weight"]
            + before[2]["bodies.0.0.weight"]) / 3  # equal samples: equal weights
    assert torch.allclose(fed.net.state_dict()["bodies.0.0.weight"], mean, atol=1e-6)
    for c in range(3):
        assert torch.allclose(fed.online.client_state(c)["bodies.0.0.weight"], mean, atol=1e-6)
        assert fed.clients[c].samples == 0


def test_greedy_actions_come_from_the_global_model() -> None:
    net = global_net()
    fed = learner(net, FederatedConfig())
    obs = torch.rand(3, 6)
    scores, _ = net(obs, torch.arange(3))
    assert np.array_equal(fed.act(obs, torch.arange(3), explore=False),
                          scores.argmax(dim=1).numpy())
    explored = fed.act(obs, torch.arange(3), explore=True)
    assert all(0 <= a < n for a, n in zip(explored, PHASES, strict=True))


def test_state_dict_round_trip_continues_identically() -> None:
    def run(fed: FederatedDQN, steps) -> list[dict]:
        logs = []
        for obs, action, reward, nxt in steps:
            logs += fed.observe(obs, torch.arange(3), action, reward, nxt)
        return logs

    config = FederatedConfig(proximal_mu=0.1)
    a = learner(global_net(), config, learning_starts=3 * 4)
    steps = list(transitions(30))
    run(a, steps[:15])
    a.end_of_episode()
    b = learner(global_net(seed=5), config, learning_starts=3 * 4)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    b.rng = copy.deepcopy(a.rng)
    assert run(a, steps[15:]) == run(b, steps[15:])
    for key, value in a.online.state_dict().items():
        assert torch.equal(value, b.online.state_dict()[key])


def test_federated_needs_a_shared_q_network() -> None:
    per_signal = SignalNetwork(OBS_DIMS, PHASES, HIDDEN, shared=False)
    with pytest.raises(ConfigError, match="shared"):
        learner(per_signal, FederatedConfig())
    replaced = FederatedConfig().replace(local_episodes=3)
    assert replaced.local_episodes == 3
