"""ablate: data-ablation experiments on LLM reasoning.

Importing the package is cheap: it never imports vLLM, DeepSpeed or torch. Heavy engines load inside the stage
that needs them. Module paths of the earlier flat layout still import, with a warning (framework/moved.py).
"""

from framework import moved as _moved

_moved.install()

__version__ = "0.1.0"
