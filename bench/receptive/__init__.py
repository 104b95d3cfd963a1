"""Receptive fields: the lab formulas, analytic fields of a traced graph, gradient-mask probes."""
