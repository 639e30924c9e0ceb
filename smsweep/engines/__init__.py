"""The engines around the core: Ray Train (one fit per trial) and its training loop, Ray Tune
and Optuna, the scoring actors, MLflow, storage (local or object store), the experiment's claim,
clusters and signals.
"""
