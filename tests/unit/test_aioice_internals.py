"""The aioice internals natlab's agent relies on (lab.agents.aioice.internals) still exist in the
installed aioice, and that file uses nothing it does not list. An aioice upgrade fails here."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

aioice = pytest.importorskip("aioice", reason="aioice is not installed")

pytest.importorskip("aioice.ice", reason="aioice is not installed")
from aioice import Candidate  # noqa: E402

from lab.agents import aioice as lab_aioice  # noqa: E402
from lab.agents.aioice import internals  # noqa: E402

PACKAGE = Path(lab_aioice.__file__).parent
SOURCE = (PACKAGE / "internals.py").read_text()
# the code without the list itself (which names every entry)
CODE = re.sub(r"\nUSED_INTERNALS\b.*?\n\)\n", "\n", SOURCE, count=1, flags=re.S)
MODULES = ("ice", "candidate", "stun")  # aioice's modules the list refers to


def _instances() -> dict[type, object]:
    """One instance of each aioice class whose instance attributes are listed (made inside a
    running loop, as aioice makes them; nothing opens a socket)."""

    async def make() -> dict[type, object]:
        conn = aioice.Connection(ice_controlling=True)
        protocol = aioice.ice.StunProtocol(conn)
        remote = Candidate("f", 1, "udp", 1, "127.0.0.1", 9, "host")
        pair = aioice.ice.CandidatePair(protocol, remote)
        message = aioice.stun.Message(
            message_method=aioice.stun.Method.BINDING, message_class=aioice.stun.Class.REQUEST
        )
        error = aioice.stun.TransactionError()
        return {
            aioice.Connection: conn,
            aioice.ice.StunProtocol: protocol,
            aioice.ice.CandidatePair: pair,
            aioice.stun.Message: message,
            aioice.stun.TransactionError: error,
        }

    return asyncio.run(make())


INSTANCES = _instances()


def _has(owner: Any, name: str) -> bool:
    if hasattr(owner, name):
        return True
    if isinstance(owner, type):
        instance = INSTANCES.get(owner)
        if instance is not None and hasattr(instance, name):
            return True
        # declared only (set later, e.g. StunProtocol.local_candidate, .transport)
        return any(name in getattr(k, "__annotations__", {}) for k in owner.__mro__)
    return False


def _resolve(path: str) -> Any:
    module, *names = path.split(".")
    assert module in MODULES, f"{path}: not in aioice's {MODULES}"
    owner: Any = importlib.import_module(f"aioice.{module}")
    for name in names:
        assert _has(owner, name), f"aioice {aioice.__version__} has no {path} (at {name!r})"
        owner = getattr(owner, name, None)
    return owner


@pytest.mark.parametrize("internal", internals.USED_INTERNALS, ids=lambda i: i.path)
def test_aioice_internals_each_listed_internal_exists(internal: internals.Internal) -> None:
    target = _resolve(internal.path)
    if internal.params:
        assert callable(target), f"{internal.path} is not callable"
        params = inspect.signature(target).parameters
        missing = [p for p in internal.params if p not in params]
        assert not missing, f"{internal.path}{inspect.signature(target)}: no {missing}"


def _private_accesses(source: str) -> set[str]:
    return set(re.findall(r"\.(_[A-Za-z]\w*)", source)) - {"_"}


def test_aioice_internals_every_private_access_is_listed() -> None:
    listed = {i.path.rsplit(".", 1)[-1] for i in internals.USED_INTERNALS}
    unlisted = _private_accesses(CODE) - listed
    assert not unlisted, f"internals.py uses aioice internals not in USED_INTERNALS: {unlisted}"


def test_aioice_internals_every_module_reference_is_listed() -> None:
    listed = {i.path for i in internals.USED_INTERNALS}
    # aioice.ice.X, aioice.candidate.X, aioice.stun.X and stun.X (``from aioice import stun``)
    found = re.findall(r"\baioice\.(ice|candidate|stun)\.(\w+)", CODE)
    found += [("stun", n) for n in re.findall(r"(?<![\w.])stun\.(\w+)", CODE)]
    refs = {f"{module}.{name}" for module, name in found}
    assert refs, "no aioice references found: the pattern is wrong"
    prefixes = {p for path in listed for p in _prefixes(path)}
    unlisted = {r for r in refs if r not in prefixes}
    assert not unlisted, f"internals.py uses aioice names not in USED_INTERNALS: {unlisted}"


def _prefixes(path: str) -> list[str]:
    parts = path.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts) + 1)]


def test_aioice_internals_the_list_has_no_stale_entries() -> None:
    for internal in internals.USED_INTERNALS:
        name = internal.path.rsplit(".", 1)[-1]
        assert re.search(rf"\b{re.escape(name)}\b", CODE), f"{internal.path} is listed, unused"


def test_aioice_internals_overrides_are_still_called_by_aioice() -> None:
    for name, caller in internals.OVERRIDES:
        assert name in vars(internals.LabConnection), f"LabConnection does not override {name}"
        base = getattr(aioice.Connection, name)
        source = inspect.getsource(getattr(aioice.Connection, caller))
        assert f"self.{name}(" in source, f"aioice's {caller} no longer calls {name}"
        ours = inspect.signature(getattr(internals.LabConnection, name))
        assert list(ours.parameters) == list(inspect.signature(base).parameters), name


def test_aioice_internals_copied_methods_are_unchanged_in_aioice() -> None:
    for path, digest in internals.COPIED_FROM:
        source = inspect.getsource(_resolve(path))
        assert hashlib.sha256(source.encode()).hexdigest() == digest, (
            f"aioice {aioice.__version__} changed {path}: LabConnection's edited copy follows the "
            "old one; compare, re-copy, and update COPIED_FROM"
        )


def test_aioice_internals_every_pair_state_is_mapped() -> None:
    assert set(internals._STATES) == set(aioice.ice.CandidatePair.State)
    assert len(set(internals._STATES.values())) == len(internals._STATES)


def test_aioice_internals_only_internals_py_imports_aioice_modules() -> None:
    pattern = re.compile(
        r"^\s*(?:import aioice\.|from aioice\.|from aioice import .*\bstun\b)", re.M
    )
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name == "internals.py":
            continue
        text = path.read_text()
        assert not pattern.search(text), f"{path.name} imports an aioice module directly"
        assert "aioice.ice" not in text and "aioice.stun" not in text, path.name


def test_aioice_internals_supported_version_installed() -> None:
    impl = lab_aioice.IMPLEMENTATION
    assert aioice.__version__.startswith(lab_aioice.SUPPORTED), aioice.__version__
    assert impl.missing() is None
    assert impl.version() == f"aioice {aioice.__version__}"
    assert impl.command()[1:] == ["-m", "lab.agents.aioice"]
