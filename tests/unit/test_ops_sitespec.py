"""Site specifications: the shipped ones load, and a broken one is a clear error naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dr_ops.sitespec import SiteSpecError, load_site

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("site", sorted(p.name for p in (REPO / "platform-config" / "sites").iterdir()
                                        if (p / "site.json").is_file()))
def test_shipped_sites_load(site):
    spec = load_site(REPO, site)
    assert spec.agents, f"site {site} installs no agent"
    identities = [a.identity for a in spec.agents]
    assert len(identities) == len(set(identities))
    for name, path, is_csv in spec.driver.config_entries():
        assert path.is_file()
        if not is_csv:
            json.loads(path.read_text())


def make_site(tmp_path: Path, spec: object) -> Path:
    folder = tmp_path / "platform-config" / "sites" / "t"
    folder.mkdir(parents=True)
    (folder / "site.json").write_text(spec if isinstance(spec, str) else json.dumps(spec))
    (tmp_path / "agents" / "a").mkdir(parents=True)
    (tmp_path / "agents" / "a" / "pyproject.toml").write_text("[project]\nname='a'\n")
    (folder / "a.json").write_text("{}")
    return tmp_path


@pytest.mark.parametrize("spec,needle", [
    ("{broken", "not valid JSON"),
    ({"agents": [{"path": "agents/a"}]}, "agents[0].identity"),
    ({"agents": [{"identity": "x.y"}]}, "exactly one of 'path'"),
    ({"agents": [{"identity": "x.y", "path": "agents/missing"}]}, "agents[0].path"),
    ({"agents": [{"identity": "x.y", "path": "agents/a", "config": "nope.json"}]}, "agents[0].config"),
    ({"agents": [{"identity": "x.y", "path": "agents/a", "priority": 500}]}, "agents[0].priority"),
    ({"agents": [{"identity": "x.y", "path": "agents/a"}, {"identity": "x.y", "package": "p"}]}, "listed twice"),
    ({"agents": [], "driver": {"libs": "volttron-lib-tree"}}, "driver.libs"),
])
def test_broken_site_spec_names_the_problem(tmp_path, spec, needle):
    repo = make_site(tmp_path, spec)
    with pytest.raises(SiteSpecError) as info:
        load_site(repo, "t")
    assert needle in str(info.value)


def test_valid_spec_is_typed(tmp_path):
    repo = make_site(tmp_path, {"agents": [{"identity": "x.y", "path": "agents/a", "config": "a.json",
                                            "tag": "t", "priority": 20}]})
    spec = load_site(repo, "t")
    agent = spec.agent("x.y")
    assert agent.path == "agents/a" and agent.tag == "t" and agent.priority == 20
    assert agent.config == repo / "platform-config" / "sites" / "t" / "a.json"
