"""Lab tests need root and `ip netns`: skip the whole directory, saying why, otherwise."""

from __future__ import annotations

import pytest

from lab.nat.netns import netns_supported


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = netns_supported()
    if reason is None:
        return
    print(f"\ntests/lab skipped: {reason}")
    for item in items:
        if "tests/lab/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.skip(reason=reason))
