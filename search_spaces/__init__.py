"""Declarative search spaces (Tune/Optuna domains); data only, nothing computed."""
