"""Every pool flag reaches `start` and `dev` alike, from the command line or the env."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from openrtc.cli import pool_options as po
from openrtc.cli.main import app
from openrtc.errors import ConfigError


def _capture(**defaults: object) -> tuple[typer.Typer, list[po.PoolFlags]]:
    seen: list[po.PoolFlags] = []
    cli = typer.Typer()

    @cli.command()
    @po.pool_flags(**defaults)
    def run(name: str, loud: bool = False, flags: po.PoolFlags = po.DEFAULTS) -> None:
        seen.append(flags)
        typer.echo(f"{name} {loud}")

    return cli, seen


def test_every_field_of_pool_flags_has_a_flag() -> None:
    assert set(po.FLAGS) == {f.name for f in dataclasses.fields(po.PoolFlags)}


def test_flags_env_and_the_commands_own_options() -> None:
    cli, seen = _capture(http_port=8081)
    result = CliRunner().invoke(
        cli,
        [
            "bob",
            "--loud",
            "--max-sessions-per-tenant",
            "3",
            "--no-shared-vad",
            "--isolation",
            "thread",
        ],
        env={"OPENRTC_DEPLOYMENT_VERSION": "v9", "OPENRTC_MEMORY_LIMIT_MB": "512"},
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "bob True"
    (flags,) = seen
    assert (flags.max_sessions_per_tenant, flags.shared_vad) == (3, False)
    assert flags.isolation == "thread"
    assert (flags.deployment_version, flags.memory_limit_mb) == ("v9", 512.0)
    assert flags.http_port == 8081  # the command's own default
    assert flags.drain_timeout == po.PoolFlags().drain_timeout


def test_a_bad_choice_is_a_usage_error_naming_the_flag() -> None:
    cli, seen = _capture()
    result = CliRunner().invoke(cli, ["bob", "--unknown-tenant", "maybe"], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and not seen
    assert "'--unknown-tenant': 'maybe' is not one of refuse, defaults" in result.output
    assert "Traceback" not in result.output


def test_a_default_for_something_that_is_not_a_flag_is_refused() -> None:
    with pytest.raises(TypeError, match="not pool flags: max_calls"):
        po.pool_flags(max_calls=3)


@pytest.mark.parametrize("command", ["start", "dev"])
def test_start_and_dev_offer_the_same_pool_flags(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    for flag in po.FLAGS.values():
        assert flag.decl.split("/")[0] in result.output, flag.decl


def test_the_membership_secret_file_is_read_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENRTC_MEMBERSHIP_SECRET", raising=False)
    secret = tmp_path / "secret"
    secret.write_text("k1:first-secret\nk2:second-secret\n")
    flags = po.PoolFlags(membership_secret_file=secret, manifest="manifest.json")
    assert po.PoolFlags(membership_secret_file=tmp_path / "missing").membership_secrets() is None
    assert flags.membership_secrets() == {"k1": "first-secret", "k2": "second-secret"}
    with pytest.raises(ConfigError, match="--membership-secret-file: cannot read secret file"):
        missing = tmp_path / "missing"
        po.PoolFlags(membership_secret_file=missing, manifest="m.json").membership_secrets()
    monkeypatch.setenv("OPENRTC_MEMBERSHIP_SECRET", "inline")
    with pytest.raises(ConfigError, match="set only one of them"):
        flags.membership_secrets()
    assert po.PoolFlags().membership_secrets() is None
