"""ablate: data-ablation experiments on LLM reasoning.

Importing the package is cheap: it never imports vLLM, DeepSpeed or torch. Heavy engines load inside the stage
that needs them.
"""

__version__ = "0.1.0"
