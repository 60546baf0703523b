"""The `log` stage: one cell's results logged to MLflow as a child run of the sweep's run.

`stage.py` is the entry point (`run`); `mlflow_client.py` is the client plumbing the report shares.
"""
