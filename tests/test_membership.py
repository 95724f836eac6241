"""Signed membership documents: verified only with the right key, fresh, and never replayed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from openrtc.deploy.membership import (
    MembershipError,
    MembershipVerifier,
    load_secrets,
    sign_membership,
)

NOW = 1_700_000_000.0
SECRET = "s3cret-membership-key-2024"
OLD_SECRET = "old-membership-key-2023"


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _verifier(secrets: Any = None, clock: FakeClock | None = None) -> MembershipVerifier:
    return MembershipVerifier(
        {"k2": SECRET} if secrets is None else secrets, clock=clock or FakeClock()
    )


def _doc(versions: list[str], serial: int, secret: Any = None, **kw: Any) -> str:
    keys = {"k2": SECRET} if secret is None else secret
    return sign_membership(versions, secret=keys, serial=serial, issued_at=kw.pop("at", NOW), **kw)


def test_round_trip_names_the_members() -> None:
    membership = _verifier().verify(_doc(["v2.0.0"], 1, ttl_seconds=60))
    assert membership.is_member("v2.0.0") and not membership.is_member("v1.0.0")
    assert (membership.serial, membership.key_id, membership.expires_at) == (1, "k2", NOW + 60)


def test_wrong_key_and_unknown_key_id_are_refused() -> None:
    with pytest.raises(MembershipError, match="signature is invalid"):
        _verifier().verify(_doc(["v1"], 1, secret={"k2": "a-guessed-secret"}))
    with pytest.raises(MembershipError, match="key id that is not configured"):
        _verifier().verify(_doc(["v1"], 1, secret={"k9": SECRET}))


def test_rotation_first_key_signs_all_verify() -> None:
    rotated = {"k2": SECRET, "k1": OLD_SECRET}
    old = _doc(["v1"], 1, secret={"k1": OLD_SECRET})
    assert _verifier(rotated).verify(old).key_id == "k1"
    assert _verifier(rotated).verify(_doc(["v1"], 2, secret=rotated)).key_id == "k2"


def test_a_plain_secret_list_signs_and_verifies_as_k1() -> None:
    text = sign_membership(["v1"], secret=[SECRET], issued_at=NOW)
    assert ".k1." in text
    assert _verifier([SECRET]).verify(text).is_member("v1")


def test_expiry_and_clock_skew() -> None:
    clock = FakeClock()
    verifier = _verifier(clock=clock)
    verifier.verify(_doc(["v1"], 1, ttl_seconds=10))
    clock.now = NOW + 16
    with pytest.raises(MembershipError, match="expired"):
        _verifier(clock=clock).verify(_doc(["v1"], 1, ttl_seconds=10))
    with pytest.raises(MembershipError, match="in the future"):
        _verifier().verify(_doc(["v1"], 1, at=NOW + 30))
    _verifier().verify(_doc(["v1"], 1, at=NOW + 4))


def test_replay_by_serial_and_rollback_by_a_higher_serial() -> None:
    verifier = _verifier()
    current = _doc(["v2"], 10)
    verifier.verify(current)
    verifier.verify(current)
    with pytest.raises(MembershipError, match="older than the one in force"):
        verifier.verify(_doc(["v1"], 9))
    with pytest.raises(MembershipError, match="same serial 10"):
        verifier.verify(_doc(["v1", "v2"], 10))
    assert verifier.verify(_doc(["v1"], 11)).is_member("v1")
    assert verifier.current is not None and verifier.current.serial == 11


@pytest.mark.parametrize("secrets", [[], {}, [""], [SECRET, b""], {"k1": ""}, {"bad id": SECRET}])
def test_missing_or_empty_secret_rejected(secrets: Any) -> None:
    with pytest.raises(ValueError):
        MembershipVerifier(secrets)


def test_sign_rejects_empty_secret_and_bad_serial() -> None:
    with pytest.raises(ValueError):
        sign_membership(["v1"], secret="")
    with pytest.raises(ValueError, match="serial"):
        sign_membership(["v1"], secret=SECRET, serial=0)


def test_error_messages_and_reprs_never_contain_secrets() -> None:
    verifier = _verifier({"k2": SECRET})
    assert SECRET not in repr(verifier)
    for text in (
        _doc(["v1"], 1, secret={"k2": "other-secret"}),
        "openrtc-membership/2.k2." + "A" * 10 + "." + "0" * 64,
        _doc(["v1"], 1, at=NOW + 999),
    ):
        with pytest.raises(MembershipError) as info:
            verifier.verify(text)
        assert SECRET not in str(info.value)


def test_load_secrets_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENRTC_MEMBERSHIP_SECRET", raising=False)
    monkeypatch.delenv("OPENRTC_MEMBERSHIP_SECRET_FILE", raising=False)
    with pytest.raises(ValueError, match="OPENRTC_MEMBERSHIP_SECRET"):
        load_secrets()

    monkeypatch.setenv("OPENRTC_MEMBERSHIP_SECRET", "  one-secret \n")
    assert load_secrets() == ["one-secret"]

    monkeypatch.delenv("OPENRTC_MEMBERSHIP_SECRET")
    plain = tmp_path / "plain"
    plain.write_text("new-secret\n\n old-secret\n", encoding="utf-8")
    monkeypatch.setenv("OPENRTC_MEMBERSHIP_SECRET_FILE", str(plain))
    assert load_secrets() == ["new-secret", "old-secret"]

    keyed = tmp_path / "keyed"
    keyed.write_text("k2:new-secret\nk1:old:secret\n", encoding="utf-8")
    monkeypatch.setenv("OPENRTC_MEMBERSHIP_SECRET_FILE", str(keyed))
    assert load_secrets() == {"k2": "new-secret", "k1": "old:secret"}

    mixed = tmp_path / "mixed"
    mixed.write_text("k2:new-secret\nplain-secret\n", encoding="utf-8")
    monkeypatch.setenv("OPENRTC_MEMBERSHIP_SECRET_FILE", str(mixed))
    with pytest.raises(ValueError, match="one form") as info:
        load_secrets()
    assert "new-secret" not in str(info.value)

    monkeypatch.setenv("OPENRTC_MEMBERSHIP_SECRET_FILE", str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="cannot read secret file"):
        load_secrets()

    monkeypatch.setenv("OPENRTC_MEMBERSHIP_SECRET", "x")
    with pytest.raises(ValueError, match="only one"):
        load_secrets()
    assert load_secrets("explicit") == ["explicit"]


def test_loaded_keyed_secrets_feed_the_verifier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secrets"
    path.write_text(f"k1:{OLD_SECRET}\nk2:{SECRET}\n", encoding="utf-8")
    monkeypatch.delenv("OPENRTC_MEMBERSHIP_SECRET", raising=False)
    monkeypatch.setenv("OPENRTC_MEMBERSHIP_SECRET_FILE", str(path))
    text = _doc(["v1"], 1, secret={"k1": OLD_SECRET})
    assert _verifier(load_secrets()).verify(text).key_id == "k1"
