"""SQL over the lake: planning (plan.py), pruning (prune.py) and the sandboxed engine (engine.py)."""
