"""Build the pion agent (Go, ``lab/agents/pion/agent/``) offline from Debian's Go packages.

    python -m lab.agents.pion.build [--force]    # prints the binary's path

Debian ships pion as source (``golang-github-pion-ice.v2-dev`` and its dependencies under
``/usr/share/gocode``) for ``golang-go`` 1.19, so the agent is built in GOPATH mode with no
module proxy: nothing is downloaded. The binary goes to a cache directory (inside the venv,
else ``~/.cache``) with a stamp beside it: the hash of the Go sources, the pion/ice and Go
versions. It is rebuilt only when one of those changes; the lab never builds during a cell.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent / "agent"
GOPATH_SYSTEM = Path("/usr/share/gocode")  # where Debian's golang-*-dev packages put sources
PION_ICE_SOURCE = GOPATH_SYSTEM / "src/github.com/pion/ice/v2"
PION_ICE_PACKAGE = "golang-github-pion-ice.v2-dev"
GO_PACKAGE = "golang-go"
BINARY_NAME = "pion-agent"
STAMP_NAME = "pion-agent.json"
BUILD_TIMEOUT_S = 600.0
PROBE_TIMEOUT_S = 20.0


class BuildError(Exception):
    """The agent cannot be built here; the message says what to install or fix."""


@dataclass(frozen=True)
class Stamp:
    """What a built binary was built from (the JSON file beside it)."""

    source_hash: str
    ice_version: str  # the pion/ice upstream version, e.g. "2.3.1"
    go_version: str  # e.g. "go1.19.8"

    def to_json(self) -> str:
        return json.dumps(
            {"source_hash": self.source_hash, "ice_version": self.ice_version,
             "go_version": self.go_version}, indent=1,
        )  # fmt: skip

    @classmethod
    def read(cls, path: Path) -> Stamp | None:
        try:
            data = json.loads(path.read_text())
            return cls(str(data["source_hash"]), str(data["ice_version"]), str(data["go_version"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def cache_dir() -> Path:
    """Where the binary lives: ``$NATLAB_AGENT_CACHE``, else the venv's ``natlab-agents``,
    else ``~/.cache/natlab-agents`` (never a system prefix such as /usr)."""
    override = os.environ.get("NATLAB_AGENT_CACHE")
    if override:
        return Path(override)
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix) / "natlab-agents"
    return Path.home() / ".cache" / "natlab-agents"


def binary_path(directory: Path | None = None) -> Path:
    return (directory or cache_dir()) / BINARY_NAME


def stamp_path(directory: Path | None = None) -> Path:
    return (directory or cache_dir()) / STAMP_NAME


def source_files(source_dir: Path = SOURCE_DIR) -> list[Path]:
    """The files the binary is built from: every .go file (tests excluded) and go.mod."""
    files = [p for p in source_dir.glob("*.go") if not p.name.endswith("_test.go")]
    files += [p for p in (source_dir / "go.mod",) if p.exists()]
    return sorted(files)


def source_hash(source_dir: Path = SOURCE_DIR) -> str:
    """SHA-256 over the sources' names and contents, in name order."""
    digest = hashlib.sha256()
    for path in source_files(source_dir):
        data = path.read_bytes()
        digest.update(f"{path.name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def upstream_version(debian_version: str) -> str:
    """ "1:2.3.1-1" -> "2.3.1": the upstream part of a Debian version."""
    version = debian_version.strip().split(":", 1)[-1]
    return version.rsplit("-", 1)[0] if "-" in version else version


def go_binary() -> str | None:
    return shutil.which("go")


def ice_version() -> str | None:
    """pion/ice's version, from the Debian package that installed its sources."""
    try:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", PION_ICE_PACKAGE],
            capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    return upstream_version(proc.stdout)


def go_version(go: str) -> str:
    proc = subprocess.run(
        [go, "version"], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False
    )
    match = re.search(r"\bgo\d+(\.\d+)*\S*", proc.stdout)
    return match.group(0) if match else "unknown"


def build_env(work: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """GOPATH mode over Debian's sources, offline: no modules, no proxy, no toolchain switch;
    the Go build cache inside the cache directory; pure Go (its resolver reads /etc/hosts,
    which the lab's launcher bind-mounts per agent)."""
    env = dict(os.environ if base is None else base)
    env.update(
        GO111MODULE="off",
        GOPATH=f"{GOPATH_SYSTEM}:{work / 'gopath'}",
        GOPROXY="off",
        GOFLAGS="",
        GOENV="off",
        GOCACHE=str(work / "gocache"),
        CGO_ENABLED="0",
    )
    return env


def build_command(go: str, output: Path, version: str) -> list[str]:
    return [
        go, "build", "-trimpath", "-ldflags", f"-s -w -X main.iceVersion={version}",
        "-o", str(output), ".",
    ]  # fmt: skip


def missing_prerequisites() -> str | None:
    """What must be installed before the agent can be built (None: nothing)."""
    if go_binary() is None:
        return f"go is not installed (apt-get install {GO_PACKAGE})"
    if not PION_ICE_SOURCE.is_dir():
        return f"pion/ice v2 sources are not installed (apt-get install {PION_ICE_PACKAGE})"
    return None


def built_stamp(directory: Path | None = None) -> Stamp | None:
    """The stamp of a binary that exists, or None."""
    if not binary_path(directory).is_file():
        return None
    return Stamp.read(stamp_path(directory))


def is_current(directory: Path | None = None, source_dir: Path = SOURCE_DIR) -> bool:
    """The binary exists and was built from today's sources (cheap: no subprocess)."""
    stamp = built_stamp(directory)
    return stamp is not None and stamp.source_hash == source_hash(source_dir)


def build(force: bool = False, directory: Path | None = None) -> Path:
    """Build the agent unless it is current; its path. BuildError says what is missing."""
    directory = directory or cache_dir()
    why = missing_prerequisites()
    if why:
        raise BuildError(why)
    go = go_binary()
    assert go is not None
    version = ice_version()
    if version is None:
        raise BuildError(f"cannot read the version of {PION_ICE_PACKAGE} (dpkg-query)")
    wanted = Stamp(source_hash(), version, go_version(go))
    if not force and built_stamp(directory) == wanted:
        return binary_path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".{BINARY_NAME}.{os.getpid()}"
    try:
        proc = subprocess.run(
            build_command(go, partial, version),
            cwd=SOURCE_DIR, env=build_env(directory), capture_output=True, text=True,
            timeout=BUILD_TIMEOUT_S, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise BuildError(f"go build failed:\n{proc.stderr.strip()[-4000:]}")
        os.replace(partial, binary_path(directory))  # atomic: a running cell keeps its binary
    except subprocess.TimeoutExpired as err:
        raise BuildError(f"go build took longer than {BUILD_TIMEOUT_S:g} s") from err
    finally:
        partial.unlink(missing_ok=True)
    stamp_path(directory).write_text(wanted.to_json() + "\n")
    return binary_path(directory)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.agents.pion.build", description=__doc__)
    parser.add_argument("--force", action="store_true", help="rebuild even if current")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        path = build(force=args.force)
    except BuildError as err:
        print(f"pion agent: {err}", file=sys.stderr)
        return 1
    print(f"pion agent ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
