"""The `model` stage: a tiny base model and tokenizer built locally (`stage.py`), for sweeps that run without a hub."""
