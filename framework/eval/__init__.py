"""The `eval` stage: generate with vLLM (or transformers), grade every sample, score one benchmark.

`stage.py` is the entry point (`run`); `parallel.py` runs data-parallel vLLM engines side by side.
"""
