"""Ray Tune + Optuna search over lambda, M and the prompt subset."""
