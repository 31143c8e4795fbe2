"""The agents install on a plain VOLTTRON 11 platform as README.md's "Install on your own VOLTTRON platform" says.

The fast tests check what makes that work: every agent declares what it imports, at versions that agree with
platform-config/pins.txt, and its entry point names a missing shared library in one line. The platform test builds
the wheels with scripts/build_wheels, gives a throwaway home a virtual environment holding VOLTTRON only (a copy of
one the README's own commands built once, kept under $VDR_STATE/cache), runs the README's controller commands as
written (through the service user when run as root), checks that `vctl install` fails at once without the shared
library, sees dr.vtn and dr.ven running with their first process and answering their health RPC 30 s after their
install (meanwhile `vctl install-lib` of a checkout folder installs the library alone), sees an agent whose library
was removed exit with status 78 and one log line, and stops the platform with no process left.
"""

from __future__ import annotations

import ast
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import dr_common
from dr_common.topics import VenRpc, VtnRpc

REPO = Path(__file__).resolve().parents[2]
# agent folder -> its package (agents/oadr_ven joins when its pyproject declares the shared library)
AGENTS = {
    "agents/vtn_dispatcher": "dr_vtn_dispatcher",
    "agents/ven_load_control": "dr_ven_load_control",
    "agents/mqtt_bridge": "dr_mqtt_bridge",
    "agents/historian": "dr_historian",
    "agents/oadr_ven": "dr_oadr_ven",
    "web": "dr_web",
}
SECTION = "## Install on your own VOLTTRON platform"
VEN_IDENTITY = "dr.ven.ven-demo"
RUN_FOR_S = 30


def project(folder: str) -> dict[str, Any]:
    return tomllib.loads((REPO / folder / "pyproject.toml").read_text())["project"]


def requirements(folder: str) -> list[Requirement]:
    meta = project(folder)
    extras = [r for group in meta.get("optional-dependencies", {}).values() for r in group]
    return [Requirement(r) for r in [*meta.get("dependencies", []), *extras]]


def pins() -> dict[str, str]:
    found = {}
    for line in (REPO / "platform-config" / "pins.txt").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("#")[0].strip().split("==")
            found[canonicalize_name(name)] = version
    return found


def imported_modules(package: Path) -> set[str]:
    """Top-level modules a package imports (absolute imports, the standard library and itself left out)."""
    found = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != package.name and m != "__future__"}


@pytest.mark.parametrize("folder", sorted(AGENTS))
def test_agent_declares_every_library_it_imports(folder):
    declared = {canonicalize_name(r.name) for r in requirements(folder)}
    providers = importlib.metadata.packages_distributions()
    undeclared = {}
    for module in sorted(imported_modules(REPO / folder / AGENTS[folder])):
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        if not dists & declared:
            undeclared[module] = sorted(dists) or "no installed distribution provides it"
    assert undeclared == {}, f"{folder}/pyproject.toml lacks the distributions of these imports"


@pytest.mark.parametrize("folder", sorted(AGENTS))
def test_declared_versions_agree_with_the_pins(folder):
    pinned = pins()
    disagree = []
    for req in requirements(folder):
        name = canonicalize_name(req.name)
        version = dr_common.__version__ if name == "volttron-dr-common" else pinned.get(name)
        if version is None:
            continue
        if not req.specifier.contains(version, prereleases=True):
            disagree.append(f"{req} excludes {version}")
    assert disagree == []
    assert "volttron-dr-common" in {canonicalize_name(r.name) for r in requirements(folder)}


def test_shared_library_is_a_distribution_of_its_own():
    meta = project(".")
    assert (meta["name"], meta["version"]) == ("volttron-dr-common", dr_common.__version__)


@pytest.mark.parametrize("folder", sorted(AGENTS))
def test_entry_point_names_a_missing_shared_library_in_one_line(folder):
    package = AGENTS[folder]
    meta = project(folder)
    # VOLTTRON starts the console script named like the distribution
    assert meta["scripts"] == {meta["name"]: f"{package}.__main__:main"}
    run = subprocess.run([sys.executable, "-B", "-c", "import sys; sys.modules['dr_common'] = None; "
                          f"from {package}.__main__ import main; main()"],
                         cwd=REPO / folder, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO / folder)})
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 78, run.stderr
    assert len(lines) == 1, run.stderr
    assert f"{meta['name']} cannot start: Python module dr_common is not installed" in lines[0]
    assert "vctl install-lib volttron_dr_common-" in lines[0]


def test_entry_point_names_any_other_missing_library():
    run = subprocess.run([sys.executable, "-B", "-c", "import sys; sys.modules['gevent'] = None; "
                          "from dr_vtn_dispatcher.__main__ import main; main()"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO / "agents/vtn_dispatcher")})
    assert run.returncode == 78, run.stderr
    assert run.stderr.strip() == ("volttron-dr-vtn-dispatcher cannot start: Python module gevent is not installed; "
                                  "install it: vctl remove, then vctl install volttron-dr-vtn-dispatcher "
                                  "(it brings what it declares)")


# --- the README's commands on a plain platform ----------------------------------------------------------------
def readme_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return re.findall(r"```bash\n(.*?)```", text[start:end if end > 0 else None], re.S)


PROBE = r'''
import json, os, sys
from pathlib import Path
import gevent, gevent.event
from volttron.client.decorators import reset_core_builder
from volttron.client.vip.agent import Agent
import volttron.messagebus.zmq.zmq_core  # registers the zmq core builder
from volttron.types.agent_context import AgentOptions
from volttron.types.auth import VolttronCredentials
from volttron.utils import ClientContext

home = os.environ["VOLTTRON_HOME"]
creds = VolttronCredentials(**json.loads(Path(home, "credentials_store", "plain-probe.json").read_text()))
reset_core_builder()
ClientContext.__volttron_home__ = home
agent = Agent(credentials=creds, options=AgentOptions(enable_store=False, volttron_home=home),
              address=f"ipc://@{home}/run/vip.socket", name="ZmqCoreBuilder")
ready = gevent.event.Event()
gevent.spawn(agent.core.run, ready)
if not ready.wait(timeout=30):
    sys.exit("the probe did not connect to the platform")
answers = {}
for call in sys.argv[1:]:
    peer, method = call.split("=")
    try:
        answers[peer] = agent.vip.rpc.call(peer, method).get(timeout=15)
    except (Exception, gevent.Timeout) as exc:
        answers[peer] = {"probeError": repr(exc)}
print(json.dumps(answers, default=str))
agent.core.stop(timeout=5)
'''


class PlainHome:
    """A throwaway home of the service user (or of this user) in which the README's controller commands run."""

    def __init__(self) -> None:
        out = subprocess.run(["bash", "-c", f'source "{REPO}/scripts/lib.sh"; pip_settings; '
                              'echo "$VDR_STATE"; echo "$VDR_USER"; echo "$VDR_INDEX_URL"; echo "$VDR_PIP_CERT"'],
                             capture_output=True, text=True, check=True).stdout.split("\n")
        self.state, self.user, self.index, self.cert = Path(out[0]), out[1], out[2], out[3]
        self.cache = self.state / "cache"
        self.root: Path | None = None

    @property
    def home(self) -> Path:
        assert self.root is not None
        return self.root / "home"

    @property
    def vhome(self) -> Path:
        return self.home / ".volttron"

    def run(self, script: str, *, home: Path | None = None, stdin: bytes | None = None, timeout: float = 600,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """bash -e with a clean environment: HOME, a plain PATH, the package index; SIGINT at its default."""
        home = home or self.home
        env = {"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
               "TMPDIR": str(self.state / "tmp"), "XDG_CACHE_HOME": str(self.cache / "plain-xdg"),
               "PIP_INDEX_URL": self.index, **({"REQUESTS_CA_BUNDLE": self.cert} if self.cert else {})}
        cmd = ["env", "-i", *[f"{k}={v}" for k, v in env.items()], "env", "--default-signal=INT",
               "bash", "-e", "-c", script]
        if os.getuid() == 0:
            cmd = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", self.user, "--", *cmd]
        proc = subprocess.run(cmd, cwd=str(self.state), input=stdin, capture_output=True, timeout=timeout,
                              stdin=None if stdin is not None else subprocess.DEVNULL)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(errors="replace"),
                                             proc.stderr.decode(errors="replace"))
        if check and result.returncode != 0:
            raise AssertionError(f"failed (rc {result.returncode}): {script}\n{result.stdout}{result.stderr}"
                                 f"{self.log_tail()}")
        return result

    def write(self, path: Path, data: bytes) -> None:
        self.run(f'mkdir -p "{path.parent}" && cat > "{path}"', stdin=data)

    def log_tail(self, lines: int = 40) -> str:
        if self.root is None:
            return ""
        try:
            return "\n--- platform log ---\n" + "\n".join(
                (self.home / "volttron.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def plain_venv(self, commands: str) -> Path:
        """The virtual environment the README's commands make, built once per distinct command text."""
        key = hashlib.sha256(commands.encode()).hexdigest()[:12]
        built = self.cache / f"plain-venv-{key}"
        self.run(f'mkdir -p "{self.cache}"', home=self.state)
        with open(self.cache / f".plain-venv-{key}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (built / "complete").is_file():
                self.run(f'rm -rf "{built}" && mkdir -p "{built}" && cd "{built}"\n{commands}\ntouch "{built}/complete"',
                         home=built, timeout=900)
        return built / "volttron-venv"

    def pids(self) -> list[int]:
        """Processes that run with this platform's VOLTTRON_HOME."""
        want = f"VOLTTRON_HOME={self.vhome}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if want in (entry / "environ").read_bytes().split(b"\0"):
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found

    def agents(self, prelude: str) -> dict[str, str]:
        """identity -> status of `vctl --json status`."""
        out = self.run(f"{prelude}\nvctl --json status").stdout
        data = json.loads(out[out.find("{"):out.rfind("}") + 1])
        return {info["identity"]: str(info.get("status")) for info in data.values() if info.get("identity")}


@pytest.fixture
def plain():
    plain = PlainHome()
    created = plain.run(f'mktemp -d "{plain.state}/tmp/plain-install.XXXXXX"', home=plain.state).stdout.strip()
    plain.root = Path(created)
    plain.run(f'mkdir "{plain.home}"', home=plain.state)
    yield plain
    left = plain.pids()
    for pid in left:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    plain.run(f'rm -rf "{plain.root}"', home=plain.state, check=False)


@pytest.mark.integration
@pytest.mark.slow
def test_readme_install_on_a_plain_platform(plain, tmp_path, figure):
    blocks = readme_blocks()
    assert len(blocks) == 4, "the README section has four command blocks: build, venv, VOLTTRON_HOME, install"
    build, venv, start, install = blocks
    assert "scripts/build_wheels" in build
    t0 = time.monotonic()

    # the wheels (the library and the two agents installed here) and the configurations the README copies
    dist = tmp_path / "dist"
    subprocess.run([str(REPO / "scripts" / "build_wheels"), "--out", str(dist), "agents/vtn_dispatcher",
                    "agents/ven_load_control"], check=True, capture_output=True, timeout=600)
    copied = [*dist.glob("volttron_dr_*.whl"), *(REPO / f for f in re.findall(r"\S+\.json", build))]
    assert len(copied) == 5
    for path in copied:
        plain.write(plain.home / "volttron-dr" / path.name, path.read_bytes())
    t_wheels = time.monotonic()

    # a copy of the environment the README's venv commands make (VOLTTRON only), paths moved to this home
    cached = plain.plain_venv(venv)
    plain.run(f'cp -a "{cached}" ~/volttron-venv && grep -rlI --exclude-dir=__pycache__ "{cached}" ~/volttron-venv '
              f'| xargs -r sed -i "s#{cached}#$HOME/volttron-venv#g"')
    freeze = plain.run("~/volttron-venv/bin/pip list --format freeze").stdout
    assert "volttron==11.0.0rc3" in freeze and "volttron-dr" not in freeze and "dr-common" not in freeze
    t_venv = time.monotonic()

    # first start: the README's VOLTTRON_HOME project, then the platform
    plain.run(start, timeout=600)
    prelude = "\n".join(line for line in start.splitlines() if line.startswith(("source ", "export ")))
    assert plain.pids(), "the platform is not running after the README's start commands"
    t_started = time.monotonic()

    try:
        # without the shared library `vctl install` fails at once and installs nothing
        vtn_wheel = next(p.name for p in copied if p.name.startswith("volttron_dr_vtn_dispatcher-"))
        early = plain.run(f"{prelude}\nvctl install ~/volttron-dr/{vtn_wheel} --vip-identity dr.vtn.nolib --tag dr "
                          "--start", check=False, timeout=300)
        assert early.returncode != 0, early.stdout
        assert "volttron-dr-common" in (plain.home / "volttron.log").read_text(errors="replace")
        assert "dr.vtn.nolib" not in plain.agents(prelude)
        t_refused = time.monotonic()

        # the README's install commands, as written (in the shell of the start commands: venv active, VOLTTRON_HOME)
        shown = plain.run(f"{prelude}\n{install}", timeout=600).stdout
        t_installed = time.monotonic()
        first = plain.agents(prelude)
        assert first.get("dr.vtn", "").startswith("running"), shown + plain.log_tail()
        assert first.get(VEN_IDENTITY, "").startswith("running"), shown + plain.log_tail()

        # meanwhile, `vctl install-lib` of a checkout folder builds and installs the library alone (no dr_ops)
        checkout = subprocess.run(["tar", "-C", str(REPO), "-cf", "-", "--exclude=__pycache__", "--exclude=*.egg-info",
                                   "pyproject.toml", "setup.cfg", "README.md", "src"], capture_output=True,
                                  check=True).stdout
        plain.run("mkdir -p ~/checkout && tar -C ~/checkout -xf -", stdin=checkout)
        t_folder = time.monotonic()
        plain.run(f"{prelude}\nvctl install-lib ~/checkout", timeout=600)
        folder_s = time.monotonic() - t_folder
        files = plain.run(f"{prelude}\npip show -f volttron-dr-common").stdout
        assert "dr_common/topics.py" in files and "dr_ops" not in files and "dr_tools" not in files, files

        time.sleep(max(0.0, t_installed + RUN_FOR_S - time.monotonic()))
        later = plain.agents(prelude)
        # still the first process of each (no crash and restart in between)
        assert (later["dr.vtn"], later[VEN_IDENTITY]) == (first["dr.vtn"], first[VEN_IDENTITY]), plain.log_tail()
        plain.write(plain.root / "probe.py", PROBE.encode())
        plain.run(f"{prelude}\nvctl auth add plain-probe >/dev/null")
        out = plain.run(f'{prelude}\npython "{plain.root}/probe.py" dr.vtn={VtnRpc.HEALTH} '
                        f"{VEN_IDENTITY}={VenRpc.HEALTH}", timeout=120).stdout
        health = json.loads(out.strip().splitlines()[-1])
        assert health["dr.vtn"]["ok"] is True and health["dr.vtn"]["identity"] == "dr.vtn", health
        assert health[VEN_IDENTITY]["ok"] is True and health[VEN_IDENTITY]["configured"] is True, health
        t_checked = time.monotonic()

        # an agent whose environment loses the library later says so in one line and exits with status 78
        plain.run(f"{prelude}\npip uninstall -q -y volttron-dr-common\nvctl restart --tag dr >/dev/null", timeout=300)
        deadline = time.monotonic() + 60
        while plain.agents(prelude).get(VEN_IDENTITY) != "78" and time.monotonic() < deadline:
            time.sleep(1)
        assert plain.agents(prelude).get(VEN_IDENTITY) == "78", plain.agents(prelude)
        log = (plain.home / "volttron.log").read_text(errors="replace")
        assert "volttron-dr-ven-load-control cannot start: Python module dr_common is not installed" in log
        assert "No module named 'dr_common'" not in log  # no traceback
        t_missing = time.monotonic()
    finally:
        plain.run(f"{prelude}\nvctl shutdown --platform", check=False, timeout=120)
        deadline = time.monotonic() + 30
        while plain.pids() and time.monotonic() < deadline:
            time.sleep(0.25)
    left = plain.pids()
    assert left == [], f"processes of the plain platform left after vctl shutdown --platform: {left}"
    t_stopped = time.monotonic()
    figure("plain platform install (README)",
           f"{t_stopped - t0:.0f} s in all: wheels {t_wheels - t0:.1f} s, venv copy {t_venv - t_wheels:.1f} s, "
           f"VOLTTRON_HOME project + start {t_started - t_venv:.1f} s, refused install without the library "
           f"{t_refused - t_started:.1f} s, install-lib + 2 installs {t_installed - t_refused:.1f} s, "
           f"{RUN_FOR_S} s run (with install-lib of a checkout folder, {folder_s:.1f} s) + health "
           f"{t_checked - t_installed:.1f} s, library removed and agents restarted until status 78 "
           f"{t_missing - t_checked:.1f} s, shutdown {t_stopped - t_missing:.1f} s")
