"""volttron-dr tooling: the simulated VEN fleet and MQTT harness (`dr_tools.fleet`), and what the operator scripts,
benchmarks and tests share. Installed into the platform's environment by scripts/bootstrap as the
`volttron-dr-tools` distribution (with `dr_ops`); no agent imports it."""

__version__ = "0.1.0"
