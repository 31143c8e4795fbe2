"""scripts/lib.sh apt_install (the Debian-package step of scripts/bootstrap) completes in an interactive terminal.

`timeout 900 apt-get ...` ran apt-get in a background process group of the terminal; apt-get (through dpkg) sets
the terminal's modes, and a background process that does so is stopped with SIGTTOU: the README's first command
hung for good in a real terminal while CI, with no terminal, never saw it. The fake apt-get below does what apt
does to a terminal it can reach; the test runs the install path under a pseudo-terminal.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

FAKE_APT = r'''#!/usr/bin/env python3
import os, sys, termios
with open(os.environ["FAKE_APT_LOG"], "a") as log:
    log.write(f"{os.getpid()} {' '.join(sys.argv[1:])} stdin_tty={os.isatty(0)} "
              f"frontend={os.environ.get('DEBIAN_FRONTEND')}\n")
# what dpkg does with a terminal it can reach: read and set its modes (a background process group is
# stopped by SIGTTOU right here)
try:
    fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
except OSError:
    fd = None
if fd is not None:
    termios.tcsetattr(fd, termios.TCSANOW, termios.tcgetattr(fd))
    os.write(fd, b"fake apt-get: terminal modes set\r\n")
    os.close(fd)
'''


def run_in_pty(command: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """Run a command as the session leader of a new pseudo-terminal (like a login shell's foreground job);
    returns (exit status or None if it did not finish in time, what it wrote)."""
    pid, master = pty.fork()
    if pid == 0:  # child: the pty is its controlling terminal, it is in the foreground group
        try:
            os.execve(command[0], command, env)
        finally:
            os._exit(127)
    out = b""
    deadline = time.monotonic() + timeout
    status = None
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every process holding the terminal has gone
                    chunk = b""
                out += chunk
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(raw)
                break
    finally:
        if status is None:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(master)
    return status, out.decode(errors="replace")


def test_apt_install_completes_under_a_terminal(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    apt = fake_bin / "apt-get"
    apt.write_text(FAKE_APT)
    apt.chmod(apt.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    log = tmp_path / "apt.log"
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}", "FAKE_APT_LOG": str(log)}
    script = f'source "{REPO}/scripts/lib.sh"; apt_install chromium && echo "install done"'
    # in a fresh interpreter: once gevent has patched this one (other tests do), its child watcher reaps the child
    driver = ("import json, os, sys; from tests.unit.test_ops_apt_tty import run_in_pty; "
              "print(json.dumps(run_in_pty(sys.argv[1:], dict(os.environ), 20)))")
    run = subprocess.run([sys.executable, "-c", driver, "/bin/bash", "-c", script], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    status, out = json.loads(run.stdout.strip().splitlines()[-1])
    calls = log.read_text().splitlines() if log.exists() else []
    try:
        assert status == 0, f"apt_install did not finish under a terminal (stopped by SIGTTOU?): {out!r} {calls}"
        assert "install done" in out
        assert len(calls) == 2 and calls[0].split()[1] == "update" and calls[1].split()[1:4] == ["install", "-y", "-qq"]
        assert all("stdin_tty=False" in c and "frontend=noninteractive" in c for c in calls), calls
    finally:  # a fake apt-get stopped in the background would otherwise stay
        for line in calls:
            try:
                os.kill(int(line.split()[0]), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


def test_the_demo_path_installs_no_test_only_package():
    """scripts/demo runs `bootstrap --if-needed` (no --test): chromium is installed only by scripts/test."""
    demo = (REPO / "scripts" / "demo").read_text()
    test = (REPO / "scripts" / "test").read_text()
    assert '"$VDR_REPO/scripts/bootstrap" --if-needed\n' in demo
    assert '"$VDR_REPO/scripts/bootstrap" --if-needed --test\n' in test
    run = subprocess.run(["bash", "-c", f'source "{REPO}/scripts/lib.sh"; sed -n "/^DEB_NEEDED=()/,/^fi$/p" '
                          f'"{REPO}/scripts/bootstrap"'], capture_output=True, text=True, check=True)
    assert "DEB_NEEDED" in run.stdout and "chromium" not in run.stdout
