"""Root wiring: the gameday plugin (options, .feature collection, target, lab) and the steps."""

pytest_plugins = [
    "gameday.pytest_plugin",
    "steps.deployment",
    "steps.data",
]
