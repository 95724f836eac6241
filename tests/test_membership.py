"""Signed membership: tokens verify only for the right secret, version, time and once."""

from __future__ import annotations

import math
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


def _verifier(**kwargs: Any) -> MembershipVerifier:
    options: dict[str, Any] = {"secrets": [SECRET], "clock": FakeClock()}
    options.update(kwargs)
    return MembershipVerifier(**options)


def _token(**overrides: Any) -> tuple[str, dict[str, Any]]:
    claims: dict[str, Any] = {"version": "v2.0.0", "worker_id": "AW_1", "timestamp": NOW}
    secret = overrides.pop("secret", SECRET)
    key_id = overrides.pop("key_id", None)
    claims.update(overrides)
    token = sign_membership(secret=secret, key_id=key_id, **claims)
    return token, claims


def test_round_trip() -> None:
    token, claims = _token()
    assert token.startswith("v1.")
    _verifier(expected_version="v2.0.0").verify(token=token, **claims)


def test_int_and_float_timestamps_sign_the_same() -> None:
    as_int = sign_membership(version="v", worker_id="w", timestamp=1_700_000_000, secret=SECRET)
    as_float = sign_membership(version="v", worker_id="w", timestamp=NOW, secret=SECRET)
    assert as_int == as_float


@pytest.mark.parametrize(
    ("field", "value"),
    [("version", "v2.0.1"), ("worker_id", "AW_2"), ("timestamp", NOW + 1)],
)
def test_changed_claim_breaks_signature(field: str, value: Any) -> None:
    token, claims = _token()
    claims[field] = value
    with pytest.raises(MembershipError, match="signature is invalid"):
        _verifier().verify(token=token, **claims)


def test_encoding_is_unambiguous() -> None:
    a = sign_membership(version="v1", worker_id="2w", timestamp=NOW, secret=SECRET)
    b = sign_membership(version="v12", worker_id="w", timestamp=NOW, secret=SECRET)
    assert a != b


def test_wrong_secret_rejected() -> None:
    token, claims = _token(secret="not-the-right-secret")
    with pytest.raises(MembershipError, match="signature"):
        _verifier().verify(token=token, **claims)


def test_wrong_version_rejected_without_revealing_it() -> None:
    token, claims = _token(version="v1.0.0")
    with pytest.raises(MembershipError) as info:
        _verifier(expected_version="v2.0.0").verify(token=token, **claims)
    message = str(info.value)
    assert "not the expected one" in message
    assert "v2.0.0" not in message
    assert SECRET not in message


def test_stale_and_future_timestamps_rejected() -> None:
    stale, stale_claims = _token(timestamp=NOW - 301)
    with pytest.raises(MembershipError, match="too old"):
        _verifier().verify(token=stale, **stale_claims)
    future, future_claims = _token(timestamp=NOW + 6)
    with pytest.raises(MembershipError, match="future"):
        _verifier().verify(token=future, **future_claims)
    near, near_claims = _token(timestamp=NOW + 4)
    _verifier().verify(token=near, **near_claims)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_timestamp_rejected(bad: float) -> None:
    token, claims = _token()
    claims["timestamp"] = bad
    with pytest.raises(MembershipError, match="not finite"):
        _verifier().verify(token=token, **claims)
    with pytest.raises(ValueError):
        sign_membership(version="v", worker_id="w", timestamp=bad, secret=SECRET)


@pytest.mark.parametrize("bad", ["1700000000", None, True])
def test_non_numeric_timestamp_rejected(bad: Any) -> None:
    token, claims = _token()
    claims["timestamp"] = bad
    with pytest.raises(MembershipError, match="not a number"):
        _verifier().verify(token=token, **claims)


@pytest.mark.parametrize("bad", ["", "v1.zz", "v2." + "a" * 64, "v1.a.b." + "a" * 64, 42])
def test_malformed_token_rejected(bad: Any) -> None:
    _, claims = _token()
    with pytest.raises(MembershipError):
        _verifier().verify(token=bad, **claims)


def test_replay_rejected_and_forgotten_after_expiry() -> None:
    clock = FakeClock()
    verifier = _verifier(clock=clock, max_age_seconds=60)
    token, claims = _token()
    verifier.verify(token=token, **claims)
    with pytest.raises(MembershipError, match="already used"):
        verifier.verify(token=token, **claims)
    fresh, fresh_claims = _token(timestamp=NOW + 1)
    verifier.verify(token=fresh, **fresh_claims)
    assert verifier.tracked_tokens == 2

    clock.now = NOW + 120
    later, later_claims = _token(timestamp=clock.now)
    verifier.verify(token=later, **later_claims)
    assert verifier.tracked_tokens == 1
    with pytest.raises(MembershipError, match="too old"):
        verifier.verify(token=token, **claims)


def test_rotation_old_token_verifies_with_new_and_old() -> None:
    token, claims = _token(secret=OLD_SECRET)
    _verifier(secrets=[SECRET, OLD_SECRET]).verify(token=token, **claims)
    with pytest.raises(MembershipError):
        _verifier(secrets=[SECRET]).verify(token=token, **claims)


def test_key_ids_pick_the_secret() -> None:
    secrets = {"k1": OLD_SECRET, "k2": SECRET}
    token, claims = _token(secret=SECRET, key_id="k2")
    assert token.startswith("v1.k2.")
    _verifier(secrets=secrets).verify(token=token, **claims)

    swapped = "v1.k1." + token.rsplit(".", 1)[1]
    with pytest.raises(MembershipError, match="signature"):
        _verifier(secrets=secrets).verify(token=swapped, **claims)
    unknown, unknown_claims = _token(secret=SECRET, key_id="k9")
    with pytest.raises(MembershipError, match="key id"):
        _verifier(secrets=secrets).verify(token=unknown, **unknown_claims)


@pytest.mark.parametrize("secrets", [[], {}, [""], [SECRET, b""], {"k1": ""}])
def test_missing_or_empty_secret_rejected(secrets: Any) -> None:
    with pytest.raises(ValueError):
        MembershipVerifier(secrets)


def test_sign_rejects_empty_secret() -> None:
    with pytest.raises(ValueError):
        sign_membership(version="v", worker_id="w", timestamp=NOW, secret="")


def test_error_messages_never_contain_secrets() -> None:
    verifier = _verifier(secrets={"k1": SECRET}, expected_version="v9.9.9")
    token, claims = _token(key_id="k1")
    cases: list[dict[str, Any]] = [
        {**claims, "token": token},
        {**claims, "token": token, "version": "v0"},
        {**claims, "token": "v1.k1." + "0" * 64},
        {**claims, "token": token, "timestamp": math.nan},
    ]
    for case in cases:
        with pytest.raises(MembershipError) as info:
            verifier.verify(**case)
        assert SECRET not in str(info.value)
        assert "v9.9.9" not in str(info.value)


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
    token, claims = _token(secret=OLD_SECRET, key_id="k1")
    _verifier(secrets=load_secrets()).verify(token=token, **claims)
