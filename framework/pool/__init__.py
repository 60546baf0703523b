"""The `pool` stage: every pool source read into one table and annotated once per sweep.

`stage.py` is the entry point (`run`); `sources.py` reads files, dataset directories and hub datasets; `presets.py`
names the released layouts; `topics.py` clusters problems for pools without topic labels.
"""


def __getattr__(name: str) -> object:
    """framework.pool was the stage's module before the stage got a package: its names still resolve, with a
    warning (framework/moved.py has the other moved modules)."""
    import importlib
    import pkgutil
    import warnings

    if name.startswith("__") or name in {m.name for m in pkgutil.iter_modules(__path__)}:
        raise AttributeError(name)  # a submodule not imported yet: `from framework.X import sub` imports it
    for where in ("framework.pool.stage", "framework.artifacts", "framework.annotations"):  # where its names went
        module = importlib.import_module(where)
        if hasattr(module, name):
            warnings.warn(f"framework.pool.{name} moved to {where}.{name}", DeprecationWarning, stacklevel=2)
            return getattr(module, name)
    raise AttributeError(f"module 'framework.pool' has no attribute {name!r}")
