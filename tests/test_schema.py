"""bnstudy.schema: every field declares its unit and bounds once, and the one generic check keeps every bound."""
import dataclasses
import math
import typing

import pytest

from bnstudy.errors import ConfigError
from bnstudy.schema import RunConfig, check_fields, declared, validate

OPEN_NAMES = {"experiment", "arm"}  # folder names: the loader checks them against its name patterns
OWN_SECTIONS = {"probes"}  # tables checked against the options each outside probe registers (tests/test_registry.py)
BOUNDED = {key: entry for key, entry in declared().items() if entry[1]}


def element_type(typ):
    """What a field holds: a tuple field's elements, else the field's own type."""
    return typing.get_args(typ)[0] if typing.get_origin(typ) is tuple else typ


def replaced(config, key: str, value):
    """`config` with the field at the dotted `key` set to `value`, each section on the way rebuilt."""
    head, _, rest = key.partition(".")
    return dataclasses.replace(config, **{head: replaced(getattr(config, head), rest, value) if rest else value})


@pytest.mark.parametrize("key", sorted(declared()))
def test_every_number_and_every_closed_word_declares_its_unit_and_bounds(key):
    """A field added without its unit and bounds fails here: a number needs a lower and an upper bound (or choices),
    a string its choices; only switches (bool) and the run's folder names are open."""
    typ, rules = declared()[key]
    kind = element_type(typ)
    if kind is bool or key in OPEN_NAMES | OWN_SECTIONS:
        assert not rules, f"{key} is open, yet declares {rules}"
        return
    assert kind in (int, float, str), f"{key}: a field of type {typ} the generic check does not know"
    assert rules.get("unit"), f"{key} declares no unit"
    if kind is str or "choices" in rules:
        assert rules.get("choices") and all(isinstance(c, kind) for c in rules["choices"]), key
    else:
        assert "at_most" in rules and math.isfinite(rules["at_most"]), f"{key} has no finite upper bound"
        assert "above" in rules or "at_least" in rules, f"{key} has no lower bound"


def beyond(x, direction: int, kind):
    """The nearest value of the field's kind past `x` (direction +1: above it, -1: below it)."""
    return x + direction if kind is int else math.nextafter(float(x), direction * math.inf)


def just_past_and_inside(typ, rules):
    """For each declared bound: (a value just past it, the nearest value that keeps it)."""
    kind = element_type(typ)
    if "choices" in rules:
        outside = "not-" + next(iter(rules["choices"])) if kind is str else max(rules["choices"]) + 1
        yield from ((outside, choice) for choice in rules["choices"])
    if "above" in rules:
        yield kind(rules["above"]), beyond(rules["above"], +1, kind)
    if "at_least" in rules:
        yield beyond(rules["at_least"], -1, kind), kind(rules["at_least"])
    if "at_most" in rules:
        yield beyond(rules["at_most"], +1, kind), kind(rules["at_most"])
    if kind is float:
        yield from ((bad, kind(rules["at_most"])) for bad in (math.nan, math.inf, -math.inf))


@pytest.mark.parametrize("key", sorted(BOUNDED))
def test_the_generic_check_rejects_just_past_each_bound_and_keeps_the_bound_itself(key):
    """Generated from the metadata, so it covers every field: one sentence naming the key, the unit and the value."""
    typ, rules = BOUNDED[key]
    as_field = (lambda v: (v,)) if typing.get_origin(typ) is tuple else (lambda v: v)
    for past, inside in just_past_and_inside(typ, rules):
        with pytest.raises(ConfigError) as caught:
            check_fields(replaced(RunConfig(), key, as_field(past)))
        message = str(caught.value)
        assert key in message and f"({rules['unit']})" in message and "\n" not in message, message
        assert str(past) in message or repr(past) in message, message
        check_fields(replaced(RunConfig(), key, as_field(inside)))


def test_the_defaults_pass_every_check():
    check_fields(RunConfig())
    validate(RunConfig())


SMALL_DLN = {"data.dataset": "gaussian", "model.kind": "dln"}


@pytest.mark.parametrize("fields, words", [
    ({"landscape.eta_min": 5.0}, "landscape needs eta_min <= eta_max (multiples of train.lr), got 5.0, 4.0"),
    ({"landscape.filter_eta_min": 0.05}, "landscape needs filter_eta_min <= filter_eta_max"),
    ({"train.lr": 1000.0, "landscape.eta_max": 5000.0}, "landscape.eta_max * train.lr (the longest probe step)"),
    ({"spectrum.bn_modes": ()}, "spectrum.bn_modes must name at least one of train, eval, got []"),
    ({"spectrum.max_hvps": 5}, "spectrum.max_hvps must be >= spectrum.k"),
    ({"train.batch_size": 1}, "train.batch_size 1 cannot train model.norm 'batch'"),
    ({"model.kind": "dln"}, "model.kind 'dln' cannot train on data.dataset 'cifar10' (it trains vgg)"),
    ({"activations.layers": (17,)}, "activations.layers: layer #17 out of range; this vgg has weight layers #1..#16"),
    ({**SMALL_DLN, "ics.every": 5, "ics.layers": (26,)}, "ics.layers: layer #26 out of range"),
])
def test_the_rules_that_span_fields_are_one_sentence_each(fields, words):
    config = RunConfig()
    for key, value in fields.items():
        config = replaced(config, key, value)
    check_fields(config)  # each field alone is fine: only the rule tying it to another fails
    with pytest.raises(ConfigError) as caught:
        validate(config)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_an_off_probe_does_not_check_its_layers_against_the_model():
    validate(replaced(replaced(replaced(RunConfig(), "data.dataset", "gaussian"), "model.kind", "dln"),
                      "ics.layers", (26,)))
