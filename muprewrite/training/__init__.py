"""Stage: training with a rewritten model. ``param_groups.py`` (the optimizer groups of a
rule), ``optimizer.py`` (a ready optimizer built from them), ``schedules.py`` (muP-safe
learning-rate schedules), ``tuning/`` (the proxy sweep of the base hyperparameters).
"""
