"""Entry points: the `threadedit` command (CLI, `run`, `playground`), above the adapters and the core."""
