"""The search stage: a study of the training recipe on a validation benchmark (Optuna), whose trials are
ordinary train and eval store jobs keyed by their parameters."""
