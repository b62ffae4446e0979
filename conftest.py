"""Root wiring: the gameday plugin (options, .feature collection, target, lab) and the steps."""

pytest_plugins = [
    "pytester",  # the harness's own tests of its pytest wiring
    "gameday.pytest_plugin",
    "chaos.pytest_plugin",
    "gameday.ledger_plugin",  # leases, the kill switch, a ledger record of every run
    "steps.deployment",
    "steps.data",
    "steps.faults",
    "steps.network",
    "steps.load",
    "steps.aws",
    "steps.monitoring",
]
