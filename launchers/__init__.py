"""Launchers schedule `ablate exec STAGE KEY` commands in dependency order (locally or on Slurm)."""
