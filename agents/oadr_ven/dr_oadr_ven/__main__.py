"""The entry point VOLTTRON starts for dr.oadr.<venId>: the agent, or, when the platform's environment lacks a library
it imports, one log line naming the library and how to install it, and exit status 78 (EX_CONFIG)."""

from __future__ import annotations

import logging
import sys

DIST = "volttron-dr-oadr-ven"
_log = logging.getLogger(DIST)


def main() -> None:
    """Run the agent; without a library it imports, log which and how to install it, and exit 78."""
    try:
        from dr_oadr_ven.agent import main as run_agent
    except ModuleNotFoundError as exc:
        module = (exc.name or "").split(".")[0]
        how = ("vctl install-lib volttron_dr_common-<version>-py3-none-any.whl (built by scripts/build_wheels)"
               if module == "dr_common" else f"vctl remove, then vctl install {DIST} (it brings what it declares)")
        _log.error("%s cannot start: Python module %s is not installed; install it: %s", DIST, module, how)
        sys.exit(78)
    run_agent()


if __name__ == "__main__":
    main()
