"""The private livekit-agents names OpenRTC uses still exist: fails loudly on upgrade."""

from __future__ import annotations

import pytest

from openrtc import _lk


def test_installed_livekit_agents_has_every_internal_we_use() -> None:
    _lk.check_internals()


@pytest.mark.parametrize("version", ["1.9.0", "2.0.1", "1.7.3"])
def test_other_series_are_refused_with_the_fix(version: str) -> None:
    with pytest.raises(_lk.UnsupportedLiveKitVersion, match="livekit-agents~=1.8.0"):
        _lk.check_version(version)


def test_a_patch_release_of_the_tested_series_is_accepted() -> None:
    _lk.check_version("1.8.42")


def test_a_moved_internal_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(_lk.AgentServer, "_get_effective_load")
    with pytest.raises(_lk.UnsupportedLiveKitVersion, match="_get_effective_load is gone"):
        _lk.check_internals()
