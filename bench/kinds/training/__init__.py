"""Training to accuracy: ``convbench train`` trains a grid of model x recipe x seed on a real
dataset to a target test accuracy or through a budget, and records learning curves, time
and samples to target and final accuracy (suite, datasets, schedule, loop, report, compare)."""
