"""Every pool flag reaches `start` and `dev` alike, from the command line or the env,
and every default is the config group's own."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from openrtc import AgentPool
from openrtc import config as cfg
from openrtc.cli import pool_options as po
from openrtc.cli.main import app
from openrtc.deploy.follower import manifest_secrets
from openrtc.errors import ConfigError


def _capture() -> tuple[typer.Typer, list[cfg.PoolConfig]]:
    seen: list[cfg.PoolConfig] = []
    cli = typer.Typer()

    @cli.command()
    @po.pool_flags
    def run(name: str, loud: bool = False, config: cfg.PoolConfig = po.DEFAULTS) -> None:
        seen.append(config)
        typer.echo(f"{name} {loud}")

    return cli, seen


def test_every_setting_with_a_flag_is_a_pool_flag() -> None:
    with_flag = {(g, f.name) for g, f, s in cfg.settings() if s.flag is not None}
    assert {(flag.group, flag.field) for flag in po.FLAGS.values()} == with_flag
    assert len(with_flag) >= 28


def test_flags_env_and_the_commands_own_options() -> None:
    cli, seen = _capture()
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
        env={
            "OPENRTC_DEPLOYMENT_VERSION": "v9",
            "OPENRTC_MEMORY_LIMIT_MB": "512",
            "OPENRTC_HTTP_PORT": None,  # unset: the default applies
        },
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "bob True"
    (config,) = seen
    assert (config.limits.per_tenant, config.runtime.shared_vad) == (3, False)
    assert config.runtime.isolation == "thread"
    assert (config.deployment.version, config.protection.memory_limit_mb) == ("v9", 512.0)
    assert config.ops.port == cfg.OpsEndpoint().port
    assert config.drain.timeout == cfg.DrainPolicy().timeout


def test_a_flag_below_its_floor_is_one_line_naming_it() -> None:
    cli, seen = _capture()
    result = CliRunner().invoke(cli, ["bob", "--max-concurrent-sessions", "0"])
    assert result.exit_code == 2 and not seen
    assert result.output.count("\n") == 1
    assert "--max-concurrent-sessions" in result.output and "at least 1" in result.output


def test_a_flag_wins_over_its_variable() -> None:
    cli, seen = _capture()
    result = CliRunner().invoke(
        cli, ["bob", "--drain-timeout", "7"], env={"OPENRTC_DRAIN_TIMEOUT": "99"}
    )
    assert result.exit_code == 0, result.output
    assert seen[0].drain.timeout == 7.0


@pytest.mark.parametrize("flag", ["--unknown-tenant", "--vad-runtime"])
def test_a_bad_choice_is_a_usage_error_naming_the_flag(flag: str) -> None:
    cli, seen = _capture()
    result = CliRunner().invoke(cli, ["bob", flag, "maybe"], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and not seen
    assert f"'{flag}'" in result.output and "'maybe' is not one of" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OPENRTC_DRAIN_TIMEOUT": "inf"}, "OPENRTC_DRAIN_TIMEOUT"),
        ({"OPENRTC_DRAIN_TIMEOUT": "soon"}, "OPENRTC_DRAIN_TIMEOUT"),
        ({"OPENRTC_HTTP_PORT": "99999"}, "--http-port"),
        ({"OPENRTC_SHARED_VAD": "maybe"}, "OPENRTC_SHARED_VAD"),
        ({"OPENRTC_ISOLATION": "fork"}, "OPENRTC_ISOLATION"),
        ({"OPENRTC_VAD_RUNTIME": "gpu"}, "OPENRTC_VAD_RUNTIME"),
        ({"OPENRTC_MANIFEST_POLL_INTERVAL": "0.01"}, "at least 0.05"),
    ],
)
def test_a_bad_variable_is_one_line_naming_it(env: dict[str, str], named: str) -> None:
    cli, seen = _capture()
    result = CliRunner().invoke(cli, ["bob"], env=env)
    assert result.exit_code == 2 and not seen, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")
    assert named in result.output


def _help_defaults(command: str) -> dict[str, str | None]:
    """Each pool flag's default as `openrtc COMMAND --help` prints it (None: none shown)."""
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    rows: dict[str, str | None] = {}
    current = None
    for line in result.output.splitlines():
        decl = re.search(r"│ (--[a-z0-9-]+)", line)
        if decl:
            current = decl.group(1)
            rows[current] = None
        default = re.search(r"\[default: \(?([^)\]]*)\)?\]", line)
        if default and current is not None:
            rows[current] = default.group(1)
    return rows


def test_every_default_is_the_config_groups_own_in_start_and_dev() -> None:
    start, dev = _help_defaults("start"), _help_defaults("dev")
    for flag in po.FLAGS.values():
        name = flag.setting.option_name
        assert name is not None
        field = next(f for f in dataclasses.fields(cfg.GROUPS[flag.group]) if f.name == flag.field)
        assert flag.default == field.default, name
        assert start.get(name, "missing") == flag.shown_default, f"start {name}"
        assert dev.get(name, "missing") == flag.shown_default, f"dev {name}"
    assert start["--drain-timeout"] == str(cfg.DrainPolicy().timeout)


def test_a_pool_built_in_python_has_the_same_defaults() -> None:
    assert AgentPool(config=cfg.PoolConfig.from_env({})).config == po.build_config({}, {})


def test_the_membership_secret_file_is_read_and_checked(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("k1:first-secret\nk2:second-secret\n")
    given = cfg.Deployment(manifest="manifest.json", membership_secret_file=secret)
    assert manifest_secrets(given, {}) == {"k1": "first-secret", "k2": "second-secret"}
    missing = cfg.Deployment(manifest="m.json", membership_secret_file=tmp_path / "missing")
    with pytest.raises(ConfigError, match="--membership-secret-file: cannot read secret file"):
        manifest_secrets(missing, {})
    with pytest.raises(ConfigError, match="set only one of them"):
        manifest_secrets(given, {"OPENRTC_MEMBERSHIP_SECRET": "inline"})


def test_the_configuration_page_is_generated_from_the_groups() -> None:
    from openrtc.config_doc import render

    page = Path(__file__).parents[2] / "docs" / "configuration.md"
    assert page.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is stale: run python -m openrtc.config_doc"
    )
