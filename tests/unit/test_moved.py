"""The module paths of the flat layout still import, as the very modules of the new layout (never a second copy
whose classes would differ), with a DeprecationWarning naming the new path: a user's plugin or a spec naming a
component by import path keeps working after the packages moved."""

from __future__ import annotations

import importlib

import pytest

from framework.moved import MOVED, new_name
from framework.registry import FACTORS, POOL_PRESETS, ResolveError, import_object


@pytest.mark.parametrize("old", sorted(MOVED))
def test_every_old_module_is_its_new_module(old):
    with pytest.warns(DeprecationWarning, match=MOVED[old].replace(".", r"\.")):
        module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED[old])


def test_a_submodule_of_a_moved_package_is_the_same_module_and_a_plugin_path_resolves():
    with pytest.warns(DeprecationWarning):
        factor = FACTORS.resolve("framework.factors.length:FACTOR")
        preset = POOL_PRESETS.resolve("framework.pool_presets:TOY")
        base = importlib.import_module("framework.factors.base")
    assert factor is importlib.import_module("framework.data.factors.length").FACTOR
    assert base.Factor is importlib.import_module("framework.data.factors.base").Factor
    assert preset is importlib.import_module("framework.pool.presets").TOY


def test_the_old_stage_modules_names_resolve_from_their_packages():
    with pytest.warns(DeprecationWarning):
        assert import_object("framework.pool:run") is importlib.import_module("framework.pool.stage").run
        assert import_object("framework.train:run") is importlib.import_module("framework.train.stage").run
        assert import_object("framework.data:read_training_set").__module__ == "framework.artifacts"
    with pytest.raises(ResolveError, match="no attribute"):
        import_object("framework.pool:no_such_name")


def test_names_that_never_existed_are_still_missing():
    assert new_name("framework.factorsx") is None and new_name("framework.cli") is None
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("framework.no_such_module")
