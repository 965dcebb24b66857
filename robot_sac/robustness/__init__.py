"""The robustness tool: a policy file through a grid of perturbations, in parallel, into a report.

``suite`` (what to run) -> ``grid`` (the seeded jobs) -> ``runner`` (worker processes, PolicyRuntime) ->
``metrics`` (per cell, verdicts) -> ``report`` (summary.json, report.md) and ``figures`` (heatmaps).
"""
