"""Drive one site's platform from Python through scripts/platform, scripts/vctl and scripts/stage.

Used by scripts/install_site, scripts/demo and the integration tests, so that all of them install agents
the same way an operator does (`vctl install --vip-identity --agent-config --tag --start --enable`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

_log = logging.getLogger(__name__)



class PlatformError(RuntimeError):
    """A platform command failed; the message carries its output (and the log tail where useful)."""


@dataclass(frozen=True)
class AgentInfo:
    uuid: str
    name: str
    identity: str
    tag: str | None
    running: bool


def is_checkout(folder: Path) -> bool:
    """Whether a folder is a volttron-dr checkout (its scripts and site configurations)."""
    return (folder / "scripts" / "lib.sh").is_file() and (folder / "platform-config" / "sites").is_dir()


def repo_root() -> Path:
    """The checkout to run scripts from: $VDR_REPO (the scripts set it), else the checkout that holds the running
    program (a benchmark, a script) or the current folder (this package is installed from a staged copy)."""
    env = os.environ.get("VDR_REPO")
    if env:
        return Path(env)
    starts = [Path(sys.argv[0]).resolve().parent] if sys.argv and sys.argv[0] not in ("", "-c", "-m") else []
    for start in [*starts, Path.cwd(), Path(__file__).resolve().parent]:
        for folder in (start, *start.parents):
            if is_checkout(folder):
                return folder
    raise PlatformError("cannot find the volttron-dr checkout: set VDR_REPO")


def tree_hash(folder: Path) -> str:
    """A content hash of a source folder (caches and build output left out)."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or any(p in ("__pycache__", "dist", ".pytest_cache") or p.endswith(".egg-info")
                                     for p in path.relative_to(folder).parts):
            continue
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def project_name(pyproject: Path) -> str:
    """The distribution name in a pyproject.toml ([project] name, else [tool.poetry] name)."""
    import tomllib

    data = tomllib.loads(pyproject.read_text())
    name = data.get("project", {}).get("name") or data.get("tool", {}).get("poetry", {}).get("name")
    if not name:
        raise PlatformError(f"{pyproject} names no distribution")
    return str(name)


class SitePlatform:
    """One site's platform: start/stop, vctl, staging and installing agents, the config store."""

    def __init__(self, site: str, repo: Path | None = None) -> None:
        self.site = site
        self.repo = repo or repo_root()
        self.scripts = self.repo / "scripts"
        self.env = {k: v for k, v in os.environ.items() if k != "VOLTTRON_HOME"}
        self.env["VDR_SITE"] = site
        self.state = Path(self._shell("echo $VDR_STATE").strip())
        self.site_dir = self.state / "sites" / site
        self.home = self.site_dir / "vhome"
        self.log_path = self.site_dir / "volttron.log"

    # --- commands ---------------------------------------------------------------------------------
    def _shell(self, snippet: str) -> str:
        out = subprocess.run(["bash", "-c", f'source "{self.repo}/scripts/lib.sh"; {snippet}'], env=self.env,
                             capture_output=True, text=True, check=True)
        return out.stdout

    def _run(self, args: list[str], *, stdin: bytes | None = None, timeout: float = 180, check: bool = True,
             what: str = "") -> subprocess.CompletedProcess[str]:
        try:
            proc = subprocess.run(args, env=self.env, input=stdin.decode() if stdin is not None else None,
                                  capture_output=True, text=True, timeout=timeout,
                                  stdin=None if stdin is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise PlatformError(f"{what or args[0]} timed out after {timeout:.0f} s{self._log_tail()}") from exc
        if check and proc.returncode != 0:
            raise PlatformError(f"{what or ' '.join(args)} failed (rc {proc.returncode}):\n{proc.stdout}{proc.stderr}"
                                f"{self._log_tail()}")
        return proc

    def _log_tail(self, lines: int = 25) -> str:
        try:
            tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n--- platform log tail ---\n" + "\n".join(tail)

    def platform(self, action: str, timeout: float = 120) -> str:
        return self._run([str(self.scripts / "platform"), action, "--site", self.site], timeout=timeout,
                         what=f"platform {action}").stdout

    def start(self) -> str:
        return self.platform("start")

    def stop(self) -> str:
        return self.platform("stop")

    def is_running(self) -> bool:
        proc = self._run([str(self.scripts / "platform"), "status", "--site", self.site], check=False, timeout=60)
        return proc.returncode == 0

    def platform_pid(self) -> int | None:
        """The site's running platform process (its VOLTTRON_PID file), or None; starts no process (unlike
        `is_running`, which asks vctl), so it can be polled."""
        try:
            pid = int((self.home / "VOLTTRON_PID").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if b"volttron" in cmdline else None

    def vctl(self, *args: str, stdin: bytes | None = None, timeout: float = 180, check: bool = True) -> str:
        proc = self._run([str(self.scripts / "vctl"), "--site", self.site, *args], stdin=stdin, timeout=timeout,
                         check=check, what="vctl " + " ".join(args[:3]))
        return proc.stdout + proc.stderr

    def write_file(self, path: Path, data: bytes) -> Path:
        """Write a file the service user owns and can read (vctl cannot reopen a root-owned pipe)."""
        self._run(["bash", "-c", f'source "{self.repo}/scripts/lib.sh"; asvc mkdir -p "$1" && asvc sh -c \'cat > "$0"\' "$2"',
                   "-", str(path.parent), str(path)], stdin=data, what=f"write {path}")
        return path

    def stage(self, rel: str) -> Path:
        out = self._run([str(self.scripts / "stage"), rel], what=f"stage {rel}").stdout.strip().splitlines()
        return Path(out[-1])

    # --- agents -----------------------------------------------------------------------------------
    def agents(self) -> dict[str, AgentInfo]:
        out = self.vctl("--json", "status", check=False)
        start = out.find("{")
        if start < 0:
            return {}
        try:
            data = json.loads(out[start:out.rfind("}") + 1])
        except json.JSONDecodeError as exc:
            raise PlatformError(f"cannot read `vctl --json status`: {exc}: {out[:500]}") from None
        agents: dict[str, AgentInfo] = {}
        for name, info in data.items():
            identity = info.get("identity")
            if not identity:
                continue
            status = str(info.get("status", ""))
            agents[identity] = AgentInfo(uuid=info.get("agent_uuid") or info.get("uuid") or "", name=info.get("name", name),
                                         identity=identity, tag=info.get("agent_tag") or info.get("tag"),
                                         running="running" in status)
        return agents

    @contextlib.contextmanager
    def staged(self, rel: str | None) -> Iterator[None]:
        """Hold the staging lock of a repository folder while it is staged and installed from: every site
        installs from the same staged copy, and restaging replaces it whole (another site's `vctl install`
        running in it would fail with "No such file or directory")."""
        if rel is None:
            yield
            return
        lock = self.state / "stage" / (".lock-" + rel.strip("/").replace("/", "_"))
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def install_agent(self, identity: str, *, path: str | None = None, package: str | None = None,
                      config: dict[str, Any] | None = None, tag: str = "dr", priority: int = 50,
                      start_time_s: int = 3) -> str:
        """Install (or update) one agent; returns what was done: installed, restarted, reconfigured, unchanged."""
        with self.staged(path):
            return self._install_agent(identity, path, package, config, tag, priority, start_time_s)

    def _install_agent(self, identity: str, path: str | None, package: str | None, config: dict[str, Any] | None,
                       tag: str, priority: int, start_time_s: int) -> str:
        stamp_dir = self.site_dir / "installed"
        stamp_file = stamp_dir / f"{identity}.stamp"
        source = self.repo / path if path else None
        if source is not None and not (source / "pyproject.toml").is_file():
            raise PlatformError(f"{source} has no pyproject.toml")
        src_hash = tree_hash(source) if source is not None else f"package:{package}"
        pyproject_hash = (hashlib.sha256((source / "pyproject.toml").read_bytes()).hexdigest()[:16]
                          if source is not None else src_hash)
        config_bytes = json.dumps(config or {}, indent=2, sort_keys=True).encode()
        want = {"src": src_hash, "pyproject": pyproject_hash, "config": hashlib.sha256(config_bytes).hexdigest()[:16]}
        have = self._read_stamp(stamp_file)
        current = self.agents().get(identity)
        target = str(self.stage(path)) if path else str(package)
        if current is not None and have.get("pyproject") == want["pyproject"]:
            action = "unchanged"
            if have.get("config") != want["config"] and config is not None:
                self.store_config(identity, "config", config)
                action = "reconfigured"
            if have.get("src") != want["src"] or not current.running:
                self.vctl("restart", current.uuid, timeout=120)
                action = "restarted"
            self._write_stamp(stamp_file, want)
            return action
        if current is not None:
            self.vctl("remove", "--force", current.uuid, timeout=180)
        args = ["install", target, "--vip-identity", identity, "--tag", tag, "--start",
                "--priority", str(priority), "--enable", "--agent-start-time", str(start_time_s)]
        if package:
            args.append("--pre")
        if config is not None:
            config_file = self.write_file(self.site_dir / "configs" / f"{identity}.json", config_bytes)
            args += ["--agent-config", str(config_file)]
        self.vctl(*args, timeout=300)
        if config is not None:
            self.store_config(identity, "config", config)
        installed = self.agents().get(identity)
        if installed is None:
            raise PlatformError(f"{identity} is not listed after `vctl install`{self._log_tail()}")
        self._write_stamp(stamp_file, want)
        return "installed"

    def install_lib(self, lib: str) -> str:
        """`vctl install-lib` a package name or a repository folder (staged first); skipped when unchanged.

        A repository folder whose content changed is uninstalled from the venv first: poetry keeps an installed
        distribution of the same version, so new code would otherwise never arrive (every site shares the venv).
        """
        source = self.repo / lib
        is_folder = source.is_dir()
        stamp_file = self.site_dir / "installed" / ("lib-" + lib.replace("/", "_") + ".stamp")
        want = {"src": tree_hash(source) if is_folder else f"package:{lib}"}
        if self._read_stamp(stamp_file) == want:
            return "unchanged"
        with self.staged(lib if is_folder else None):
            self._install_lib(lib, source, is_folder)
        self._write_stamp(stamp_file, want)
        return "installed"

    def _install_lib(self, lib: str, source: Path, is_folder: bool) -> None:
        if is_folder:
            target = str(self.stage(lib))
            dist = project_name(source / "pyproject.toml")
            self._run(["bash", "-c", f'source "{self.repo}/scripts/lib.sh"; asvc pip uninstall -q -y "$1" || true',
                       "-", dist], what=f"pip uninstall {dist}")
            self.vctl("install-lib", target, timeout=300)
        else:
            self.vctl("install-lib", lib, "--pre", timeout=300)

    def store_config(self, identity: str, name: str, data: Any, csv: bool = False) -> None:
        """Store one entry in an agent's config store (a dict/list as JSON, or text; `csv` for registries)."""
        if isinstance(data, Path):
            payload = data.read_bytes()
        elif isinstance(data, (dict, list)):
            payload = json.dumps(data).encode()
        else:
            payload = str(data).encode()
        kind = "--csv" if csv else ("--json" if not isinstance(data, str) else "--raw")
        safe = name.replace("/", "__")
        stored = self.write_file(self.site_dir / "configs" / "store" / identity / safe, payload)
        self.vctl("config", "store", identity, name, str(stored), kind, timeout=60)

    def wait_agent_running(self, identity: str, timeout: float = 30) -> AgentInfo:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.agents().get(identity)
            if info is not None and info.running:
                return info
            time.sleep(0.5)
        raise PlatformError(f"{identity} is not running after {timeout:.0f} s{self._log_tail()}")

    # --- stamps ------------------------------------------------------------------------------------
    def _read_stamp(self, path: Path) -> dict[str, str]:
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def _write_stamp(self, path: Path, data: dict[str, str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
