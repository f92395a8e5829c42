"""Each method and evaluation setting is declared once: every default elsewhere reads it, none re-types it."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
from dataclasses import asdict, fields
from pathlib import Path

import pytest

from co_settle_hf import CoSettleConfig
from co_settle_hf.evaluation.jhmdb import PCK_THRESHOLDS
from co_settle_hf.evaluation.tradeoff import TRADEOFF
from co_settle_hf.objective.settings import OBJECTIVE, OBJECTIVE_FIELDS, ObjectiveSettings
from co_settle_hf.training.arguments import CoSettleTrainingArguments

# Parameter name in the code -> the declared value it must default to.
DECLARED = {
    "temperature": OBJECTIVE.cycle_temperature, "cycle_temperature": OBJECTIVE.cycle_temperature,
    "pool": OBJECTIVE.pool_size, "pool_size": OBJECTIVE.pool_size, "delta": OBJECTIVE.frame_gap,
    "frame_gap": OBJECTIVE.frame_gap, "separability_weight": OBJECTIVE.separability_weight,
    "separability": OBJECTIVE.separability, "kind": OBJECTIVE.separability, "direction": OBJECTIVE.kl_direction,
    "kl_direction": OBJECTIVE.kl_direction, "pea_alpha": OBJECTIVE.pea_alpha, "pea_mode": OBJECTIVE.pea_mode,
    "gamma": TRADEOFF.gamma, "num_patches": TRADEOFF.num_patches, "thresholds": PCK_THRESHOLDS, "threshold": PCK_THRESHOLDS[0],
}
DECLARATIONS = {"TradeoffSettings"}  # where the trade-off analysis declares its own knobs (ObjectiveSettings: the method's)
MODULES = [
    "co_settle_hf.objective.cycle", "co_settle_hf.objective.loss",
    "co_settle_hf.objective.separability", "co_settle_hf.data.sampling", "co_settle_hf.data.pairs",
    "co_settle_hf.evaluation.tradeoff", "co_settle_hf.evaluation.plots", "co_settle_hf.evaluation.jhmdb",
    "co_settle_hf.evaluation.compare",
]


def declared_defaults(module_name: str):
    """(where, name, default expression) for every parameter and dataclass field named in DECLARED."""
    tree = ast.parse(Path(importlib.import_module(module_name).__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args.args + node.args.kwonlyargs
            defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults + node.args.kw_defaults
            for argument, default in zip(arguments, defaults):
                if default is not None and argument.arg in DECLARED:
                    yield f"{module_name}.{node.name}", argument.arg, default
        elif isinstance(node, ast.ClassDef) and node.name not in DECLARATIONS:
            for statement in node.body:
                if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name) and statement.value is not None \
                        and statement.target.id in DECLARED:
                    yield f"{module_name}.{node.name}", statement.target.id, statement.value


def is_literal(expression: ast.expr) -> bool:
    return isinstance(expression, ast.Constant) or (
        isinstance(expression, (ast.Tuple, ast.List)) and all(isinstance(e, ast.Constant) for e in expression.elts))


@pytest.mark.parametrize("module_name", MODULES)
def test_defaults_are_read_from_the_declaration_not_retyped(module_name):
    found = list(declared_defaults(module_name))
    assert found, f"{module_name} has none of the declared settings: the list above is out of date"
    retyped = [f"{where}({name}={ast.unparse(default)})" for where, name, default in found if is_literal(default)]
    assert not retyped, f"literal defaults of declared settings: {retyped}"


@pytest.mark.parametrize("module_name", MODULES)
def test_every_default_equals_the_declared_value(module_name):
    module = importlib.import_module(module_name)
    checked = 0
    for _, function in inspect.getmembers(module, inspect.isfunction):
        for name, parameter in inspect.signature(function).parameters.items():
            if name in DECLARED and parameter.default is not inspect.Parameter.empty:
                assert tuple(parameter.default) == tuple(DECLARED[name]) if isinstance(DECLARED[name], tuple) \
                    else parameter.default == DECLARED[name], f"{function.__qualname__}({name}={parameter.default!r})"
                checked += 1
    assert checked or module_name.endswith(("plots", "tradeoff")), module_name


def test_config_and_trainer_flags_take_the_declared_defaults_help_and_choices():
    config = CoSettleConfig()
    assert config.objective == OBJECTIVE
    assert CoSettleConfig(cycle_temperature=0.1, pool_size=3).objective.cycle_temperature == 0.1
    by_name = {f.name: f for f in fields(CoSettleTrainingArguments)}
    for name, declared in OBJECTIVE_FIELDS.items():
        assert getattr(config.objective, name) == declared.default, name
        assert by_name[name].default == declared.default, name
        assert by_name[name].metadata["help"] == declared.metadata["help"], name
        assert by_name[name].metadata.get("choices") == declared.metadata.get("choices"), name


def test_the_config_nests_the_method_settings_and_still_reads_the_flat_keys_saved_before(tmp_path):
    CoSettleConfig(objective={"pool_size": 3, "pea_alpha": None}).save_pretrained(tmp_path / "nested")
    saved = json.loads((tmp_path / "nested" / "config.json").read_text())
    assert saved["objective"] == asdict(ObjectiveSettings(pool_size=3, pea_alpha=None))
    assert not set(OBJECTIVE_FIELDS) & set(saved)  # one place in config.json
    assert CoSettleConfig.from_pretrained(tmp_path / "nested").objective == ObjectiveSettings(pool_size=3, pea_alpha=None)

    (tmp_path / "flat").mkdir()  # a config.json as adapters were saved before the nesting
    flat = {key: value for key, value in saved.items() if key != "objective"} | {"pool_size": 4, "frame_gap": 0.3}
    (tmp_path / "flat" / "config.json").write_text(json.dumps(flat))
    assert CoSettleConfig.from_pretrained(tmp_path / "flat").objective == ObjectiveSettings(pool_size=4, frame_gap=0.3)
    assert CoSettleConfig(objective=ObjectiveSettings(pool_size=5)).objective.pool_size == 5
    with pytest.raises(ValueError, match=r"objective: unknown settings \['pool'\]"):
        CoSettleConfig(objective={"pool": 3})


@pytest.mark.parametrize("change, message", [
    ({"separability": "l1"}, "separability must be one of kl, mse; got 'l1'"),
    ({"kl_direction": "both"}, "kl_direction must be one of code, paper"),
    ({"pea_mode": "corner"}, "pea_mode must be one of random, center, edge"),
    ({"cycle_temperature": 0.0}, "cycle_temperature must be positive"),
    ({"pool_size": 0}, "pool_size must be at least 1"),
    ({"pea_alpha": -1.0}, "pea_alpha must be >= 0"),
    ({"separability_weight": -3.0}, "separability_weight must be >= 0"),
    ({"frame_gap": 1.0}, "frame_gap must be in [0, 1)"),
])
def test_the_method_settings_are_checked_in_one_place_for_the_config_and_the_settings(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ObjectiveSettings(**change)
    with pytest.raises(ValueError, match=re.escape(message)):
        CoSettleConfig(**change)
    with pytest.raises(ValueError, match=re.escape(f"--{message}")):  # the trainer's flags, one message for all problems
        CoSettleTrainingArguments(model_name_or_path="backbone", output_dir="out", **change)
