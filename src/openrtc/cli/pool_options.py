"""The pool flags shared by `start` and `dev`, derived from the typed config groups.

Every field of `openrtc.config` that carries a `Setting` becomes one flag here, with
the field's default, variable and help, so a default is written once, in the group.
A flag left off the command line falls back to the variable, then to the group's
default (`PoolConfig.from_env`). A command decorated with `pool_flags` receives the
result as `config: PoolConfig`.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

import typer

from .. import config as cfg
from ..errors import ConfigError
from ..pool import AgentPool

F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True)
class Flag:
    """One pool flag: the group and field it sets, and how it reads on the command line."""

    group: str
    field: str
    setting: cfg.Setting
    default: Any
    hint: Any

    @property
    def param(self) -> str:
        return f"{self.group}__{self.field}"

    @property
    def decl(self) -> str:
        assert self.setting.flag is not None
        return self.setting.flag

    @property
    def shown_default(self) -> str | None:
        """The default as `--help` prints it (None: not printed)."""
        if self.default is None:
            return None
        if isinstance(self.default, bool):
            names = self.decl.split("/")
            on = names[0].removeprefix("--")
            off = names[1].removeprefix("--") if len(names) > 1 else f"no-{on}"
            return on if self.default else off
        return str(self.default)

    def annotation(self) -> Any:
        base, _ = cfg.base_type(self.hint)
        extra: dict[str, Any] = {} if self.setting.min is None else {"min": self.setting.min}
        if get_origin(base) is Literal:
            choices = [str(c) for c in get_args(base)]
            base = enum.Enum(self.field.title(), {c: c for c in choices})  # type: ignore[misc,no-redef]
        elif base not in (bool, int, float, str, Path):
            base = str
        shown = self.shown_default
        option = typer.Option(
            self.decl,
            help=f"{self.setting.help} Env: {', '.join(self.setting.env)}.",
            show_default=shown if shown is not None else False,
            **extra,
        )
        return Annotated[base | None, option]


def _flags() -> dict[str, Flag]:
    flags: dict[str, Flag] = {}
    for group, f, setting in cfg.settings():
        if setting.flag is None:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        flag = Flag(group, f.name, setting, default, cfg.field_type(group, f.name))
        flags[flag.param] = flag
    return flags


FLAGS: dict[str, Flag] = _flags()
"""Every pool flag, keyed by its parameter name (`<group>__<field>`)."""


DEFAULTS = cfg.PoolConfig()
"""What a decorated command's `config` parameter defaults to (the flags replace it)."""


def build_config(
    values: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> cfg.PoolConfig:
    """The pool's settings from the flags given (None: not given), the variables, the defaults."""
    env = os.environ if environ is None else environ
    given: dict[str, dict[str, Any]] = {}
    for param, value in values.items():
        if value is None:
            continue
        if isinstance(value, enum.Enum):
            value = value.value
        flag = FLAGS[param]
        given.setdefault(flag.group, {})[flag.field] = value
    groups = {
        name: cfg.group_from_env(group, env, **given.get(name, {}))
        for name, group in cfg.GROUPS.items()
    }
    return cfg.PoolConfig(**groups)


def check_paths(config: cfg.PoolConfig) -> None:
    """Files the worker will write: each one's problem named with its flag and variable."""
    for flag, var, path in (
        ("--audit-path", "OPENRTC_AUDIT_PATH", config.audit.path),
        ("--metrics-jsonl", "OPENRTC_METRICS_JSONL", config.ops.metrics_jsonl),
    ):
        if path is None:
            continue
        where = f"{flag} ({var}) {path}"
        if path.is_dir():
            raise ConfigError(f"{where} is a directory; give the path of a file in it")
        if not path.parent.is_dir():
            raise ConfigError(f"{where}: its directory {path.parent} does not exist")


def build_pool(config: cfg.PoolConfig, agents_dir: Path) -> AgentPool:
    """The pool `start`/`dev` run; an audit file that cannot be continued is a ConfigError."""
    from ..audit import AuditFileError

    try:
        pool = AgentPool(config=config)
    except AuditFileError as e:
        raise ConfigError(f"--audit-path (OPENRTC_AUDIT_PATH): {e}") from None
    except OSError as e:
        raise ConfigError(
            f"--audit-path (OPENRTC_AUDIT_PATH) {config.audit.path}: {e.strerror or e}"
        ) from None
    pool.discover(agents_dir)
    return pool


def _parameters() -> list[inspect.Parameter]:
    return [
        inspect.Parameter(
            flag.param, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=flag.annotation()
        )
        for flag in FLAGS.values()
    ]


def pool_flags(fn: F) -> F:
    """Give a typer command every pool flag; it receives them as `config: PoolConfig`.

    A bad value (a flag's or a variable's) ends the command with one line naming the
    flag or variable, and exit code 2.
    """
    sig = inspect.signature(fn, eval_str=True)
    own = [p for name, p in sig.parameters.items() if name != "config"]

    @functools.wraps(fn)
    def command(**kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in FLAGS}
        try:
            config = build_config(values)
        except ConfigError as e:
            typer.secho(f"error: {e}", err=True, fg=typer.colors.RED)
            raise typer.Exit(2) from None
        return fn(**kwargs, config=config)

    params = [
        *(p for p in own if p.default is inspect.Parameter.empty),
        *(
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for p in own
            if p.default is not inspect.Parameter.empty
        ),
        *_parameters(),
    ]
    del command.__wrapped__  # type: ignore[attr-defined]
    command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command  # type: ignore[return-value]
