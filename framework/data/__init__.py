"""The `data` stage: a cell's factor levels applied to the pool, and its training set sampled.

`stage.py` is the entry point (`run`); `selection.py` filters, samples and fits a token budget; `factors/` holds
one module per factor.
"""


def __getattr__(name: str) -> object:
    """framework.data was the stage's module before the stage got a package: its names still resolve, with a
    warning (framework/moved.py has the other moved modules)."""
    import importlib
    import pkgutil
    import warnings

    if name.startswith("__") or name in {m.name for m in pkgutil.iter_modules(__path__)}:
        raise AttributeError(name)  # a submodule not imported yet: `from framework.X import sub` imports it
    for where in ("framework.data.stage", "framework.artifacts", "framework.annotations"):  # where its names went
        module = importlib.import_module(where)
        if hasattr(module, name):
            warnings.warn(f"framework.data.{name} moved to {where}.{name}", DeprecationWarning, stacklevel=2)
            return getattr(module, name)
    raise AttributeError(f"module 'framework.data' has no attribute {name!r}")
