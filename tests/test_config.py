import pytest

from bnstudy.config import ConfigError, RunConfig, build, load_experiment, parse_override, run_config


@pytest.fixture(scope="module")
def noisy_bn():
    return load_experiment("noisy-bn")


def test_arm_and_preset_compose(noisy_bn):
    quick = run_config(noisy_bn, "noisy-batchnorm", seed=3, preset="quick")
    assert quick.model.norm == "noisy-batch" and quick.model.width == 0.25 and quick.seed == 3
    paper = run_config(noisy_bn, "standard", seed=0, preset="paper")
    assert (paper.model.norm, paper.model.width, paper.model.cfg, paper.model.head) == ("none", 1.0, 16, (512, 512))
    assert (paper.train.steps, paper.train.batch_size, paper.train.lr) == (15_000, 128, 0.1)
    assert (paper.model.noise.n_mu, paper.model.noise.n_sigma, paper.model.noise.r_mu, paper.model.noise.r_sigma) == (
        0.5, 1.25, 0.1, 0.1)
    assert paper.data.augment is False
    assert noisy_bn.arms_for("paper") == ("standard", "batchnorm", "noisy-batchnorm", "noise-only")
    assert noisy_bn.arms_for("quick") == ("standard", "batchnorm", "noisy-batchnorm")


def test_set_overrides_with_type_checks(noisy_bn):
    config = run_config(noisy_bn, "batchnorm", 0, "quick",
                        ["train.lr=0.5", "model.norm=none", "activations.layers=[3, 11]"])
    assert (config.train.lr, config.model.norm, config.activations.layers) == (0.5, "none", (3, 11))
    assert parse_override("model.noise.n_mu=0.25") == {"model": {"noise": {"n_mu": 0.25}}}


@pytest.mark.parametrize("overrides, message", [
    (["train.lr=-0.1"], "train.lr must be > 0"),
    (["train.lr=0"], "train.lr must be > 0"),
    (["train.steps=0"], "train.steps must be > 0"),
    (["train.steps=1.5"], "train.steps must be an integer"),
    (["train.lrr=0.1"], "--set train.lrr: no such key"),
    (["model.norm=bacth"], "unknown model.norm 'bacth'; known: none, batch"),
    (["model.cfg=12"], "unknown model.cfg 12; known: 11, 13, 16, 19"),
    (["activations.layers=[2, 40]"], "layer #40 out of range; this vgg has weight layers #1..#16"),
    (["model.width=0"], "model.width must be > 0"),
    (["train.lr"], "--set expects section.key=value"),
])
def test_bad_values_are_clear_errors(noisy_bn, overrides, message):
    with pytest.raises(ConfigError, match=message):
        run_config(noisy_bn, "batchnorm", 0, "quick", overrides)


def test_unknown_arm_preset_and_experiment(noisy_bn):
    with pytest.raises(ConfigError, match="unknown arm 'bn' in experiment noisy-bn; known: standard"):
        run_config(noisy_bn, "bn", 0, "quick")
    with pytest.raises(ConfigError, match="unknown preset 'fast'"):
        run_config(noisy_bn, "batchnorm", 0, "fast")
    with pytest.raises(ConfigError, match="unknown experiment 'nosiy-bn'; known: .*noisy-bn"):
        load_experiment("nosiy-bn")


def test_unknown_key_in_a_file_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'train.stpes'"):
        build(RunConfig, {"train": {"stpes": 3}})
    path = tmp_path / "broken.toml"
    path.write_text("name = 'broken'\n[arms.a.model\nnorm = 'none'\n")
    with pytest.raises(ConfigError, match="malformed TOML"):
        load_experiment(str(path))
    path.write_text("name = 'typo'\n[arms.a.model]\nnorm = 'nonee'\n")
    with pytest.raises(ConfigError, match="unknown model.norm 'nonee'"):
        load_experiment(str(path))  # a broken arm fails at load, before any training


# ----------------------------------------------------------------------------------------------
# Families (experiments/families/*.toml): an experiment file states only what differs from its family
# ----------------------------------------------------------------------------------------------
def _listed(value):
    """Tuples as lists, as TOML reads them."""
    if isinstance(value, dict):
        return {k: _listed(v) for k, v in value.items()}
    return [_listed(v) for v in value] if isinstance(value, (list, tuple)) else value


def _leaves(table: dict, where: tuple = ()):
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _leaves(value, (*where, key))
        else:
            yield (*where, key), value


def _value_at(table: dict, keys: tuple):
    for key in keys:
        table = table[key]
    return table


def _family_and_own(experiment: str):
    import tomllib

    from bnstudy.config import experiment_path, load_family

    path = experiment_path(experiment)
    raw = tomllib.loads(path.read_text())
    return (load_family(path, raw["family"]) if "family" in raw else ({}, {})), raw


@pytest.mark.parametrize("experiment", __import__("bnstudy.config").config.list_experiments())
def test_an_experiment_file_states_only_what_its_family_does_not(experiment):
    """Every value in an experiment's [base] and [presets.*] changes the value it lands on: the dataclass default
    under the family's base, or (presets) what family base <- experiment base <- family preset give."""
    import dataclasses

    from bnstudy.config import PRESETS, deep_merge

    (family_base, family_presets), raw = _family_and_own(experiment)
    under_base = deep_merge(_listed(dataclasses.asdict(RunConfig())), family_base)
    repeats = [f"base.{'.'.join(k)} = {v!r}" for k, v in _leaves(raw.get("base", {})) if _value_at(under_base, k) == v]
    base = deep_merge(under_base, raw.get("base", {}))
    for preset in PRESETS:
        own = {k: v for k, v in raw.get("presets", {}).get(preset, {}).items() if k != "arms"}
        under = deep_merge(base, family_presets.get(preset, {}))
        repeats += [f"presets.{preset}.{'.'.join(k)} = {v!r}" for k, v in _leaves(own) if _value_at(under, k) == v]
    assert not repeats, f"{experiment} repeats what it gets anyway (from its family or RunConfig's defaults): {repeats}"


def test_no_value_is_stated_by_every_experiment_of_a_family():
    """A value every member of a family states belongs in the family file, stated once."""
    from bnstudy.config import list_experiments

    members: dict[str, list[set]] = {}
    for experiment in list_experiments():
        _, raw = _family_and_own(experiment)
        stated = {("base", *k, repr(v)) for k, v in _leaves(raw.get("base", {}))}
        for preset, body in raw.get("presets", {}).items():
            stated |= {("presets", preset, *k, repr(v)) for k, v in _leaves(body) if k != ("arms",)}
        members.setdefault(raw.get("family", ""), []).append(stated)
    assert {"vgg", "dln"} <= set(members)  # every VGG and every DLN experiment names its family
    for family, stated in members.items():
        if family and len(stated) > 1:
            assert not set.intersection(*stated), f"every '{family}' experiment states {set.intersection(*stated)}"


def test_a_family_file_is_not_an_experiment(capsys):
    from bnstudy.cli import main
    from bnstudy.config import EXPERIMENTS_DIR, experiment_path, list_experiments

    families = {p.stem for p in (EXPERIMENTS_DIR / "families").glob("*.toml")}
    assert families == {"vgg", "dln", "mlp"}  # the family "dln" and the experiment "dln" are two files
    assert {experiment_path(name).parent for name in list_experiments()} == {EXPERIMENTS_DIR}
    assert "vgg" not in list_experiments() and "families" not in list_experiments()
    assert main(["list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip() and line[0] != " "]
    assert listed == list_experiments()
    for name in ("families/vgg", "families-vgg", "../experiments/families/vgg"):
        with pytest.raises(ConfigError, match=f"unknown experiment '{name}'"):
            load_experiment(name)


def _family_case(tmp_path, family_text: str, experiment_head: str = 'family = "fam"\n'):
    (tmp_path / "families").mkdir(exist_ok=True)
    (tmp_path / "families" / "fam.toml").write_text(family_text)
    path = tmp_path / "exp.toml"
    path.write_text(f'{experiment_head}name = "exp"\n[base.train]\nsteps = 200\n[arms.a.model]\nnorm = "none"\n'
                    '[arms.b.train]\nbatch_size = 8\n[presets.quick.model]\nwidth = 0.25\n')
    return str(path)


def test_merge_order_defaults_family_base_experiment_base_family_preset_experiment_preset_arm_set(tmp_path):
    exp = load_experiment(_family_case(tmp_path, '[base.train]\nlr = 0.2\nsteps = 100\n'
                                                 '[presets.quick]\ntrain.steps = 50\ntrain.batch_size = 16\n'
                                                 'model.width = 0.5\nmodel.head = [64]\n'))
    quick = run_config(exp, "a", 0, "quick")
    assert (quick.train.lr, quick.train.steps, quick.train.batch_size) == (0.2, 50, 16)  # family preset over base
    assert (quick.model.width, quick.model.head, quick.model.norm) == (0.25, (64,), "none")  # deep-merged preset
    paper = run_config(exp, "a", 0, "paper")
    assert (paper.train.lr, paper.train.steps, paper.model.width, paper.train.eval_every) == (0.2, 200, 1.0, 1000)
    assert run_config(exp, "b", 0, "quick").train.batch_size == 8  # the arm over both presets
    assert run_config(exp, "b", 0, "quick", ["train.batch_size=4"]).train.batch_size == 4  # --set over all


@pytest.mark.parametrize("family, head, words", [
    (None, 'family = "nope"\n', "family 'nope' does not exist (no {tmp}/families/nope.toml or "),
    ("[base.train\nlr = 1\n", None, "its family file {tmp}/families/fam.toml is malformed TOML"),
    ('name = "fam"\n', None, "its family file {tmp}/families/fam.toml has unknown top-level key 'name'"),
    ("[presets.fast]\ntrain.steps = 1\n", None, "{tmp}/families/fam.toml: unknown preset 'fast'"),
    ('[presets.quick]\narms = ["a"]\n', None, "'presets.quick.arms': which arms a preset runs belongs to"),
    ("[base.train]\nstpes = 1\n", None, "its family file {tmp}/families/fam.toml: unknown key 'train.stpes'"),
    ('[base.train]\nlr = "fast"\n', None, "its family file {tmp}/families/fam.toml: train.lr must be a number"),
    ("base = 3\n", None, "{tmp}/families/fam.toml: 'base' must be a table"),
    (None, "family = 3\n", "'family' must be a string"),
    (None, 'family = "../fam"\n', "'family' must be the name of a file in families/"),
    (None, 'with = ["nope"]\n', "'with' names 'nope', which is not another experiment; known: "),
])
def test_a_missing_or_broken_family_is_one_sentence_naming_the_file(tmp_path, family, head, words):
    path = _family_case(tmp_path, family or "", head or 'family = "fam"\n')
    with pytest.raises(ConfigError) as caught:
        load_experiment(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and words.format(tmp=tmp_path) in message and "\n" not in message


def test_a_sweep_can_give_each_arm_its_own_grid(tmp_path):
    from bnstudy.config import load_experiment

    path = tmp_path / "grid.toml"
    head = 'name = "grid"\n[arms.a.model]\nnorm = "none"\n[arms.b.model]\nnorm = "batch"\n[sweep]\nkey = "train.lr"\n'
    path.write_text(head + '[sweep.values]\na = [0.01, 0.03]\nb = [0.1, 1.0, 3.0]\n')
    exp = load_experiment(str(path))
    assert list(exp.arms) == ["a-lr0.01", "a-lr0.03", "b-lr0.1", "b-lr1", "b-lr3"]
    assert (run_config(exp, "b-lr3", 0, "smoke").train.lr == 3.0
            and run_config(exp, "a-lr0.03", 0, "smoke").model.norm == "none")
    path.write_text(head + '[sweep.values]\na = [0.01]\n')
    with pytest.raises(ConfigError, match=r"\[sweep.values\] must give a list for every arm and no other; arms: a, b; "
                                          r"lists for: a"):
        load_experiment(str(path))
    path.write_text(head + '[sweep.values]\na = [0.01]\nb = 0.1\n')
    with pytest.raises(ConfigError, match="'sweep.values.b' must be a non-empty list"):
        load_experiment(str(path))
    path.write_text(head + 'values = "fast"\n')
    with pytest.raises(ConfigError, match="'sweep.values' must be a list, or a table of lists by arm"):
        load_experiment(str(path))


def test_the_controls_experiment_gives_each_norm_and_init_its_own_lr_grid():
    from bnstudy.config import load_experiment

    exp = load_experiment("controls")
    configs = [run_config(exp, arm, 0, "quick") for arm in exp.arms_for("quick")]
    kinds = {(c.model.norm, c.model.init) for c in configs}
    assert kinds == {("none", "glorot"), ("none", "kaiming"), ("batch", "glorot"), ("batch", "kaiming")}
    for c in configs:  # the landscape grid scales with each run's own LR: [1/2, 4] x LR
        assert c.landscape.every and c.curvature.every and c.weights.every
        assert (c.landscape.eta_min, c.landscape.eta_max) == (0.5, 4.0)
    lrs = {kind: sorted(c.train.lr for c in configs if (c.model.norm, c.model.init) == kind) for kind in kinds}
    assert lrs[("none", "kaiming")] != lrs[("batch", "kaiming")]
