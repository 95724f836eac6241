"""The pool flags shared by `start` and `dev`, derived from the typed config groups.

Every field of `openrtc.config` that carries a `Setting` becomes one flag here, with
the field's default, variable and help, so a default is written once, in the group.
A flag left off the command line falls back to the variable, then to the group's
default (`PoolConfig.from_env`). A command decorated with `pool_flags` receives the
result as `config: PoolConfig` (and, when it asks, the flags given as `overrides`, to
lay over a pool built in Python: `pool_for`).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib
import importlib.util
import inspect
import os
import sys
import types
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

    def _floor(self) -> str:
        """The lowest value, said in the help; checked by the group (one line, exit 2)."""
        return "" if self.setting.min is None else f" At least {self.setting.min:g}."

    def annotation(self) -> Any:
        base, _ = cfg.base_type(self.hint)
        extra: dict[str, Any] = {}
        if get_origin(base) is Literal:
            choices = [str(c) for c in get_args(base)]
            base = enum.Enum(self.field.title(), {c: c for c in choices})  # type: ignore[misc,no-redef]
        elif base not in (bool, int, float, str, Path):
            base = str
        shown = self.shown_default
        option = typer.Option(
            self.decl,
            help=f"{self.setting.help}{self._floor()} Env: {', '.join(self.setting.env)}.",
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


Overrides = dict[str, dict[str, Any]]
"""The flags given on the command line: group -> field -> value."""


def flag_overrides(values: Mapping[str, Any]) -> Overrides:
    given: Overrides = {}
    for param, value in values.items():
        if value is None:
            continue
        if isinstance(value, enum.Enum):
            value = value.value
        flag = FLAGS[param]
        given.setdefault(flag.group, {})[flag.field] = value
    return given


def build_config(
    values: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> cfg.PoolConfig:
    """The pool's settings from the flags given (None: not given), the variables, the defaults."""
    env = os.environ if environ is None else environ
    given = flag_overrides(values)
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


def overlay(base: cfg.PoolConfig, overrides: Overrides) -> cfg.PoolConfig:
    """`base` with the flags given on the command line applied over it."""
    for group, changes in overrides.items():
        base = base.replace(group, **changes)
    return base


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


_program_pool: list[AgentPool] = []
"""The pool `AgentPool.run()` hands to the commands (they take no TARGET then)."""


def set_program_pool(pool: AgentPool) -> None:
    _program_pool[:] = [pool]


def load_pool_object(target: str) -> AgentPool:
    """FILE.py:NAME or module:NAME -> the AgentPool it names (imported now)."""
    where, _, attr = target.rpartition(":")
    if not where or not attr.isidentifier():
        raise ConfigError(f"TARGET {target!r}: expected FILE.py:NAME or module:NAME")
    try:
        if where.endswith(".py") or os.sep in where:
            path = Path(where)
            if not path.is_file():
                raise ConfigError(f"TARGET {target!r}: no file {where}")
            module = _import_file(path)
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(where)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(
            f"TARGET {target!r}: importing it raised {type(e).__name__}: {e}"
        ) from None
    pool = getattr(module, attr, None)
    if not isinstance(pool, AgentPool):
        found = "nothing" if pool is None else type(pool).__name__
        raise ConfigError(f"TARGET {target!r}: {attr} is {found}, not an AgentPool")
    return pool


def _import_file(path: Path) -> types.ModuleType:
    """Import a file as a module named after it, its folder first on sys.path, so job
    processes can import its agent classes by the same name."""
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def pool_for(target: str | None, config: cfg.PoolConfig, overrides: Overrides) -> AgentPool:
    """The pool a command runs: a folder of agent files, a pool object, or `pool.run()`'s.

    A folder's pool is built from `config` (flags, variables, defaults); a pool object
    keeps its own settings with the flags given on the command line over them.
    """
    if target is None:
        if not _program_pool:
            raise ConfigError(
                "give TARGET: a directory of agent files, or FILE.py:NAME / module:NAME"
            )
        pool = _program_pool[0]
    elif Path(target).is_dir():
        return build_pool(overlay(config, overrides), Path(target))
    elif ":" in target:
        pool = load_pool_object(target)
    else:
        raise ConfigError(
            f"TARGET {target!r} is neither a directory nor FILE.py:NAME / module:NAME"
        )
    pool.reconfigure(overlay(pool.config, overrides))
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
    own = [p for name, p in sig.parameters.items() if name not in ("config", "overrides")]

    wants_overrides = "overrides" in sig.parameters

    @functools.wraps(fn)
    def command(**kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in FLAGS}
        try:
            config = build_config(values)
        except ConfigError as e:
            typer.secho(f"error: {e}", err=True, fg=typer.colors.RED)
            raise typer.Exit(2) from None
        if wants_overrides:
            kwargs["overrides"] = flag_overrides(values)
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
