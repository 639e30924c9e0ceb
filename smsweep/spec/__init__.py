"""The sweep spec: its schema, rules, registries, search space, loading and reference.

Nothing here imports torch, Ray or MLflow: validating a spec is cheap and has no side effects.
"""
