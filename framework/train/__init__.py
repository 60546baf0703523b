"""The `train` stage: full fine-tuning with DeepSpeed ZeRO.

`stage.py` is the entry point (`run`, the recipe top to bottom); `config.py` turns the spec into the process layout,
DeepSpeed config and Trainer arguments; `launch.py` starts torchrun; `worker.py` is one rank's process; the rest
are the memory and speed pieces it uses (chunked loss, lean activations, fused kernels, JIT ops, stop signals).
"""


def __getattr__(name: str) -> object:
    """framework.train was the stage's module before the stage got a package: its names still resolve, with a
    warning (framework/moved.py has the other moved modules)."""
    import importlib
    import pkgutil
    import warnings

    if name.startswith("__") or name in {m.name for m in pkgutil.iter_modules(__path__)}:
        raise AttributeError(name)  # a submodule not imported yet: `from framework.X import sub` imports it
    for where in ("framework.train.stage", "framework.artifacts", "framework.annotations"):  # where its names went
        module = importlib.import_module(where)
        if hasattr(module, name):
            warnings.warn(f"framework.train.{name} moved to {where}.{name}", DeprecationWarning, stacklevel=2)
            return getattr(module, name)
    raise AttributeError(f"module 'framework.train' has no attribute {name!r}")
