"""The `train` stage: full fine-tuning with DeepSpeed ZeRO.

`stage.py` is the entry point (`run`, the recipe top to bottom); `config.py` turns the spec into the process layout,
DeepSpeed config and Trainer arguments; `launch.py` starts torchrun; `worker.py` is one rank's process; the rest
are the memory and speed pieces it uses (chunked loss, lean activations, fused kernels, JIT ops, stop signals).
"""

from framework.moved import old_stage_names

__getattr__ = old_stage_names("framework.train", __path__)
