"""The pion agent's build logic and implementation entry, without running Go."""

from __future__ import annotations

import re
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from lab.agents.agent_result import AgentResult, count_candidates
from lab.agents.contract import DataPlane, EventKind
from lab.agents.pion import IMPLEMENTATION, build
from lab.agents.pion.build import Stamp


def _fake_sources(directory: Path) -> Path:
    directory.mkdir()
    (directory / "go.mod").write_text("module natlab/pionagent\n")
    (directory / "main.go").write_text("package main\n")
    (directory / "main_test.go").write_text("package main\n")
    return directory


def _fake_built(directory: Path, stamp: Stamp) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    build.binary_path(directory).write_bytes(b"\x7fELF")
    build.stamp_path(directory).write_text(stamp.to_json())


def test_source_hash_ignores_go_tests(tmp_path: Path) -> None:
    src = _fake_sources(tmp_path / "agent")
    before = build.source_hash(src)
    (src / "main_test.go").write_text("package main // changed\n")
    assert build.source_hash(src) == before
    assert [p.name for p in build.source_files(src)] == ["go.mod", "main.go"]


def test_source_hash_changes_with_a_source(tmp_path: Path) -> None:
    src = _fake_sources(tmp_path / "agent")
    before = build.source_hash(src)
    (src / "main.go").write_text("package main\n\nfunc f() {}\n")
    assert build.source_hash(src) != before


def test_source_hash_changes_with_a_new_file(tmp_path: Path) -> None:
    src = _fake_sources(tmp_path / "agent")
    before = build.source_hash(src)
    (src / "extra.go").write_text("package main\n")
    assert build.source_hash(src) != before


def test_is_current_when_stamp_matches_sources(tmp_path: Path) -> None:
    src = _fake_sources(tmp_path / "agent")
    out = tmp_path / "cache"
    _fake_built(out, Stamp(build.source_hash(src), "2.3.1", "go1.19.8"))
    assert build.is_current(out, src)


def test_is_current_false_after_a_source_change(tmp_path: Path) -> None:
    src = _fake_sources(tmp_path / "agent")
    out = tmp_path / "cache"
    _fake_built(out, Stamp(build.source_hash(src), "2.3.1", "go1.19.8"))
    (src / "main.go").write_text("package main // v2\n")
    assert not build.is_current(out, src)


def test_is_current_false_without_binary(tmp_path: Path) -> None:
    src = _fake_sources(tmp_path / "agent")
    out = tmp_path / "cache"
    _fake_built(out, Stamp(build.source_hash(src), "2.3.1", "go1.19.8"))
    build.binary_path(out).unlink()
    assert not build.is_current(out, src)
    assert build.built_stamp(out) is None


def test_stamp_read_rejects_garbage(tmp_path: Path) -> None:
    path = tmp_path / "stamp.json"
    path.write_text("{not json")
    assert Stamp.read(path) is None
    path.write_text('{"source_hash": "x"}')
    assert Stamp.read(path) is None
    stamp = Stamp("abc", "2.3.1", "go1.19.8")
    path.write_text(stamp.to_json())
    assert Stamp.read(path) == stamp


@pytest.mark.parametrize(
    ("debian", "upstream"), [("2.3.1-1", "2.3.1"), ("1:2.3.1-1+b2", "2.3.1"), ("2.3.1", "2.3.1")]
)
def test_upstream_version_strips_epoch_and_revision(debian: str, upstream: str) -> None:
    assert build.upstream_version(debian) == upstream


def test_build_env_is_offline_gopath_mode(tmp_path: Path) -> None:
    env = build.build_env(tmp_path, base={"GOFLAGS": "-mod=vendor", "GOPROXY": "https://x"})
    assert env["GO111MODULE"] == "off"
    assert env["GOPROXY"] == "off"
    assert env["GOFLAGS"] == ""
    assert env["GOPATH"].split(":")[0] == "/usr/share/gocode"
    assert env["GOCACHE"].startswith(str(tmp_path))
    assert env["CGO_ENABLED"] == "0"  # Go's own resolver: reads the agent's /etc/hosts


def test_build_command_stamps_the_version(tmp_path: Path) -> None:
    argv = build.build_command("/usr/bin/go", tmp_path / "out", "2.3.1")
    assert argv[:2] == ["/usr/bin/go", "build"]
    assert "-X main.iceVersion=2.3.1" in argv[argv.index("-ldflags") + 1]
    assert argv[argv.index("-o") + 1] == str(tmp_path / "out")


def test_cache_dir_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NATLAB_AGENT_CACHE", str(tmp_path))
    assert build.binary_path() == tmp_path / "pion-agent"
    assert IMPLEMENTATION.command() == [str(tmp_path / "pion-agent")]


def test_cache_dir_inside_the_venv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NATLAB_AGENT_CACHE", raising=False)
    if sys.prefix == sys.base_prefix:
        pytest.skip("not running in a venv")
    assert build.cache_dir() == Path(sys.prefix) / "natlab-agents"


def test_missing_says_not_built(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NATLAB_AGENT_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(build, "missing_prerequisites", lambda: None)
    why = IMPLEMENTATION.missing()
    assert why is not None and "not built" in why and "make setup" in why
    assert IMPLEMENTATION.version() is None


def test_missing_names_the_debian_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NATLAB_AGENT_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(build, "go_binary", lambda: None)
    assert "golang-go" in (IMPLEMENTATION.missing() or "")
    monkeypatch.setattr(build, "go_binary", lambda: "/usr/bin/go")
    monkeypatch.setattr(build, "PION_ICE_SOURCE", tmp_path / "nowhere")
    assert "golang-github-pion-ice.v2-dev" in (IMPLEMENTATION.missing() or "")


def test_missing_says_out_of_date(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    out = tmp_path / "cache"
    _fake_built(out, Stamp("an-older-hash", "2.3.1", "go1.19.8"))
    monkeypatch.setenv("NATLAB_AGENT_CACHE", str(out))
    monkeypatch.setattr(build, "missing_prerequisites", lambda: None)
    assert "out of date" in (IMPLEMENTATION.missing() or "")


def test_current_binary_runs_without_go(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    out = tmp_path / "cache"
    _fake_built(out, Stamp(build.source_hash(), "2.3.1", "go1.19.8"))
    monkeypatch.setenv("NATLAB_AGENT_CACHE", str(out))
    monkeypatch.setattr(build, "go_binary", lambda: None)
    assert IMPLEMENTATION.missing() is None
    assert IMPLEMENTATION.version() == "pion/ice 2.3.1"


def test_build_refuses_without_go(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(build, "go_binary", lambda: None)
    with pytest.raises(build.BuildError, match="golang-go"):
        build.build(directory=tmp_path)


def test_implementation_speaks_datagrams() -> None:
    assert IMPLEMENTATION.name == "pion"
    assert IMPLEMENTATION.data_planes == (DataPlane.DATAGRAM,)


# --- the Go source against the Python contract (read, not run) ---------------------------


def _go(name: str) -> str:
    return (build.SOURCE_DIR / name).read_text()


def test_go_result_keys_are_agent_result_fields_in_order() -> None:
    body = re.search(r"type result struct \{(.*?)\n\}", _go("result.go"), re.S)
    assert body is not None
    tags = re.findall(r'json:"([^"]+)"', body.group(1))
    assert tags == [f.name for f in fields(AgentResult)]


def test_go_candidate_kinds_are_the_contract_kinds() -> None:
    body = re.search(r"type gathered struct \{(.*?)\n\}", _go("result.go"), re.S)
    assert body is not None
    assert re.findall(r'json:"([^"]+)"', body.group(1)) == list(count_candidates(()))


def test_go_event_kinds_are_contract_kinds() -> None:
    kinds = re.findall(r'^\s*ev\w+\s*=\s*"([^"]+)"', _go("result.go"), re.M)
    assert sorted(kinds) == sorted(k.value for k in EventKind)


def test_go_flags_cover_the_contract_flags() -> None:
    import argparse

    from lab.agents.contract import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    wanted = {
        opt.removeprefix("--")
        for action in parser._actions
        for opt in action.option_strings
        if opt.startswith("--") and opt != "--help"
    }
    source = _go("config.go")
    declared = set(re.findall(r'fs\.\w+\([^"]*"([a-z-]+)"', source))
    declared |= {f"turn-{t}" for t in ("udp", "tcp", "tls")} if '"turn-"+t' in source else set()
    assert wanted <= declared, wanted - declared


def test_go_data_plane_prefixes_match_the_contract() -> None:
    from lab.agents import contract

    source = _go("dataplane.go")
    for name, value in (("Ping", contract.PING), ("Pong", contract.PONG), ("Bulk", contract.BULK)):
        assert f'prefix{name} = []byte("{value.decode()}")' in source
    assert f"pingSize      = {contract.PING_SIZE}" in source
    assert f"datagramSize  = {contract.DATAGRAM_SIZE}" in source
