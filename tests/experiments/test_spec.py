"""Spec files: the pydantic models, sweep expansion, content hashes, one line for bad input."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agents import UnknownControllerError, make_controller
from experiments.cli import app
from experiments.results import toml_text
from experiments.spec import (
    REFERENCE,
    Experiment,
    RunUnit,
    SpecError,
    Sweep,
    load,
    parse,
)
from networks import Scenario

SPECS = Path(__file__).resolve().parents[2] / "experiments" / "specs"

SWEEP = """
name = "demo"
controllers = ["max-pressure", "sotl"]
seeds = 2
horizon_s = 600

[demand]
scale = 1.0

[sweep]
samples = 3
sample_seed = 7

[sweep.grid]
network = ["cologne1", "ingolstadt1"]

[sweep.random]
"signals.decision_interval" = [5.0, 10.0]
signals.max_green = {int = [30, 60]}
"""


def test_the_example_specs_load() -> None:
    smoke = load(SPECS / "ci-smoke.toml")
    networks = {u.network for u in smoke.units}
    controllers = {u.controller for u in smoke.units}
    seeds = {u.seed for u in smoke.units}
    assert len(networks) >= 2 and len(controllers) >= 3 and len(seeds) >= 2
    assert len(smoke.units) == len(networks) * len(controllers) * len(seeds)
    assert not any(u.learned for u in smoke.units)  # the smoke sweep trains nothing

    quick = load(SPECS / "quick.toml")
    assert quick.single and quick.base.network == "cologne1"
    assert quick.units[0].controller == REFERENCE

    study = load(SPECS / "optimizer-study.toml")
    learned = [u for u in study.units if u.learned]
    assert len(learned) == 8 * 3  # four optimizers x two schedules x three seeds
    spec = learned[0].train_spec()
    assert (spec.algo, spec.seed, spec.episodes, spec.eval_every) == ("dqn", 0, 25, 1)
    settings = {(u.train_spec().optim.optimizer, u.train_spec().optim.schedule,
                 u.train_spec().optim.lr) for u in learned}
    assert ("adam", "cosine", 0.001) in settings and ("nesterov", "constant", 0.01) in settings
    # a classic controller does not train: one run per seed, whatever the training axes
    assert sum(u.controller == "max-pressure" for u in study.units) == 3

    # the ingolstadt21 specs name trained runs, which exist only after their commands: the
    # rest of each spec is checked with classic controllers in their place
    for name, kinds in (("ingolstadt21-validation", ["actuated", "tuned", "trained"]),
                        ("ingolstadt21-observation", ["actuated", "trained", "trained"])):
        text = (SPECS / f"{name}.toml").read_text()
        named = tomllib.loads(text)["controllers"]
        assert [c.split(":")[0] for c in named] == kinds
        for stand_in, controller in zip(("max-pressure", "sotl"), named[1:], strict=True):
            text = text.replace(f'"{controller}"', f'"{stand_in}"')
        validation = parse(text, SPECS / f"{name}.toml")
        held_out = set(range(20))  # the benchmark's evaluation seeds, and its tuning seeds below
        assert not {u.seed for u in validation.units} & (held_out | {10_000, 10_001})
        # fixed timing joins the three as the reference
        assert validation.base.demand.mode == "resample" and len(validation.units) == 4 * 10


def test_a_sweep_crosses_the_grid_with_random_draws_and_expands_every_run(tmp_path: Path) -> None:
    plan = parse(SWEEP, tmp_path / "demo.toml")
    points = plan.points()
    assert len(points) == 2 * 3
    assert [dict(p)["network"] for p in points] == ["cologne1"] * 3 + ["ingolstadt1"] * 3
    for point in points:
        values = dict(point)
        assert values["signals.decision_interval"] in (5.0, 10.0)
        assert 30 <= values["signals.max_green"] <= 60
    # 6 points x (fixed added as the reference + 2 controllers) x 2 seeds
    assert len(plan.units) == 6 * 3 * 2
    unit = plan.units[0]
    assert unit.controller == REFERENCE and unit.network == "cologne1"
    assert (unit.experiment.begin, unit.experiment.end) == (25200, 25800)  # horizon_s resolved
    assert unit.cell.startswith("decision_interval=") and unit.setting == ""
    ingolstadt = next(u for u in plan.units if u.network == "ingolstadt1")
    assert (ingolstadt.experiment.begin, ingolstadt.experiment.end) == (57600, 58200)
    # the same seed draws the same points; another seed others
    assert parse(SWEEP, tmp_path / "again.toml").points() == points
    other = parse(SWEEP.replace("sample_seed = 7", "sample_seed = 8"), tmp_path / "o.toml")
    assert other.points() != points


def test_the_content_hash_is_sha256_of_the_canonical_run_and_ignores_names(tmp_path: Path) -> None:
    plan = parse(SWEEP, tmp_path / "demo.toml")
    unit = plan.units[0]
    canonical = json.dumps(unit.identity(), sort_keys=True, separators=(",", ":"))
    assert unit.hash == hashlib.sha256(canonical.encode()).hexdigest()
    assert len({u.hash for u in plan.units}) == len(plan.units)
    renamed = parse(SWEEP.replace('name = "demo"', 'name = "other"'), tmp_path / "x.toml")
    assert [u.hash for u in renamed.units] == [u.hash for u in plan.units]
    no_trips = RunUnit(unit.experiment.model_copy(update={"trips": False}), unit.controller,
                       unit.seed, unit.point)
    assert no_trips.hash == unit.hash
    other_seed = RunUnit(unit.experiment, unit.controller, unit.seed + 1, unit.point)
    assert other_seed.hash != unit.hash
    slower = unit.experiment.model_copy(update={"signals": unit.experiment.signals.model_copy(
        update={"decision_interval": 7.0})})
    assert RunUnit(slower, unit.controller, unit.seed).hash != unit.hash
    assert json.loads(json.dumps(unit.resolved()))["controller"] == REFERENCE


def test_the_resolved_spec_reads_back_as_the_same_sweep(tmp_path: Path) -> None:
    plan = parse(SWEEP, tmp_path / "demo.toml")
    again = parse(toml_text(plan.to_dict()), tmp_path / "resolved.toml")
    assert again.base == plan.base and again.grid == plan.grid and again.random == plan.random
    assert [u.hash for u in again.units] == [u.hash for u in plan.units]


def test_user_files_are_relative_to_the_spec_and_hashed_by_content(
    grid1x1: Scenario, tmp_path: Path,
) -> None:
    folder = tmp_path / "specs"
    folder.mkdir()
    net = folder / "my.net.xml"
    routes = folder / "my.rou.xml"
    net.write_bytes(grid1x1.net_file.read_bytes())
    routes.write_bytes(grid1x1.route_files[0].read_bytes())
    text = 'net = "my.net.xml"\nroutes = "my.rou.xml"\nend = 300\ncontrollers = ["fixed"]\n'
    plan = parse(text, folder / "mine.toml")
    unit = plan.units[0]
    assert unit.network == "my" and Path(unit.experiment.net or "") == net.resolve()
    assert (unit.experiment.begin, unit.experiment.end) == (0, 300)
    moved = tmp_path / "moved"
    moved.mkdir()
    for f in (net, routes):
        (moved / f.name).write_bytes(f.read_bytes())
    assert parse(text, moved / "mine.toml").units[0].hash == unit.hash  # same content


def test_learned_controllers_take_their_settings_from_training_and_signals(
    tmp_path: Path,
) -> None:
    plan = parse('network = "cologne1"\ncontrollers = ["dqn"]\nseeds = [3]\n'
                 '[signals]\ndecision_interval = 10.0\n[sensors]\nfaults = "dropout=0.2"\n'
                 '[training]\nepisodes = 4\n'
                 '[training.optim]\noptimizer = "nesterov"\n', tmp_path / "t.toml")
    dqn = next(u for u in plan.units if u.learned)
    spec = dqn.train_spec()
    assert (spec.algo, spec.seed, spec.episodes, spec.decision_interval) == ("dqn", 3, 4, 10.0)
    assert spec.faults == "dropout=0.2"  # training sees the sensors it is evaluated with
    assert spec.optim.optimizer == "nesterov"
    assert dqn.resolved()["training"]["seed"] == 3
    fixed = plan.units[0]
    assert "training" not in fixed.identity()  # classic runs ignore training settings


BAD = [
    ("colour = 'red'\n", "colour", "unknown key"),
    ("[signals]\ngreen = 5\n", "signals.green", "unknown key"),
    ("seeds = 'many'\n", "seeds", "must be"),
    ("seeds = [0, 'x']\n", "seeds[1]", "an integer"),
    ("seeds = 0\n", "seeds", "at least 1"),
    ("seeds = [1, 1]\n", "seeds", "twice"),
    ("begin = 100\nend = 50\n", "end", "after begin"),
    ("end = 100\nhorizon_s = 50\n", "horizon_s", "not both"),
    ("[demand]\nscale = -1.0\n", "demand.scale", "> 0"),
    ("[signals]\nmin_green = 10.0\nmax_green = 5.0\n", "signals.max_green", ">= min_green"),
    ("[signals]\ndecision_interval = 'fast'\n", "signals.decision_interval", "a number"),
    ("[sensors]\nfaults = 'gremlins=1'\n", "sensors.faults", "gremlins"),
    ("[sensors]\ncleaning = 'bleach'\n", "sensors.cleaning", "bleach"),
    ("controllers = ['dqn']\n[training]\nfaults = 'dropout=0.1'\n", "training.faults",
     "[sensors]"),
    ("controllers = ['dqn']\n[sensors]\nfirst_wait = true\n", "controllers", "detector"),
    ("controllers = ['magic']\n", "controllers", "magic"),
    ("controllers = []\n", "controllers", "at least one"),
    ("network = 'atlantis'\n", "network", "atlantis"),
    ("controllers = ['dqn']\n[training]\nseed = 3\n", "training.seed", "learner seed"),
    ("controllers = ['dqn']\n[training]\nepisodes = 0\n", "training", "episodes"),
    ("controllers = ['dqn']\n[training.optim]\noptimizer = 'sgdd'\n", "training.optim",
     "sgdd"),
    ("controllers = ['dqn']\n[training]\nhidden = 64\n", "training.hidden", "a list"),
    ("[sweep.grid]\nnetwork = 'cologne1'\n", "sweep.grid.network", "a list"),
    ("[sweep.grid]\n'signals.amber' = [3]\n", "sweep", "amber"),
    ("[sweep.grid]\nseeds = [[1]]\n", "sweep", "seeds is not an axis"),
    ("[sweep.grid]\nnetwork = ['cologne1', 'atlantis']\n", "sweep.grid.network", "atlantis"),
    ("[sweep.grid]\n'demand.scale' = [1.0, -2.0]\n", "sweep.grid.demand.scale", "> 0"),
    ("[sweep.random]\n'demand.scale' = {normal = [0, 1]}\n", "demand.scale", "normal"),
    ("[sweep.random]\n'demand.scale' = {uniform = [2, 1]}\n", "demand.scale", "low"),
    ("[sweep.random]\n'demand.scale' = {uniform = [0.5, 1.5]}\n", "sweep.samples", ">= 1"),
    ("[sweep]\nrepeat = 2\n", "sweep.repeat", "unknown key"),
    ("name = \n", "malformed TOML", ""),
]


@pytest.mark.parametrize(("text", "key", "words"), BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_specs_name_the_file_and_the_key(tmp_path: Path, text: str, key: str,
                                             words: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        load(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    assert key in message and words in message, message


def test_cli_bad_spec_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[signals]\ngreen = 5\n")
    for command in ("run", "sweep"):
        result = CliRunner().invoke(app, [command, str(path), "--out", str(tmp_path / "o")])
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.output
        assert str(path) in lines[0] and "signals.green" in lines[0]


def test_an_experiment_in_python_validates_too() -> None:
    with pytest.raises(SpecError, match="controllers"):
        Experiment(controllers=("fixed", "fixed"))
    with pytest.raises(SpecError, match="sample"):
        Sweep(Experiment(), samples=2)


def test_make_controller_builds_module_colon_class() -> None:
    controller = make_controller("agents.classic:MaxPressure")
    assert type(controller).__name__ == "MaxPressure"
    with pytest.raises(UnknownControllerError, match="cannot import"):
        make_controller("no_such_module:Thing")
    with pytest.raises(UnknownControllerError, match="not a Controller"):
        make_controller("pathlib:Path")
