#!/usr/bin/env python3
"""Simulate a fleet of VENs on an MQTT broker: the seeds' VEN contract for N VENs in one process
(dr_tools.fleet.cli; `--help` lists the options and examples)."""

import sys

if __name__ == "__main__":  # started by another Python: run again with the platform's (platform_python.py)
    import platform_python  # noqa: F401
from dr_tools.fleet.cli import main

if __name__ == "__main__":
    sys.exit(main())
