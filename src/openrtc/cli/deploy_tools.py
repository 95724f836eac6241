"""`openrtc manifest ...` and `openrtc audit ...`: the deploy's paperwork."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

manifest_app = typer.Typer(help="Sign and check membership manifests of active versions.")
audit_app = typer.Typer(help="Check audit logs.")

SecretFile = Annotated[
    Path | None,
    typer.Option(
        "--secret-file",
        envvar="OPENRTC_MEMBERSHIP_SECRET_FILE",
        help="File with the membership secret(s), one per line (kid:secret for key ids). "
        "Without it, OPENRTC_MEMBERSHIP_SECRET is used.",
    ),
]


def _error(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def _secrets(secret_file: Path | None) -> list[str] | dict[str, str]:
    from ..deploy.membership import load_secrets

    try:
        return load_secrets(path=secret_file)
    except ValueError as e:
        raise _error(str(e)) from None


@manifest_app.command("sign")
def manifest_sign(
    active: Annotated[
        list[str],
        typer.Option("--active", help="A version that may take new calls; repeat for several."),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the manifest here (default: stdout).")
    ] = None,
    secret_file: SecretFile = None,
    key_id: Annotated[
        str | None,
        typer.Option("--key-id", help="Sign with this key id's secret from a kid:secret file."),
    ] = None,
    ttl: Annotated[
        float | None,
        typer.Option("--ttl", help="Seconds until the manifest expires (default: never)."),
    ] = None,
) -> None:
    """Write a signed manifest naming the versions that take new calls.

    Workers whose version is not named stop taking new calls within one poll.
    """
    from ..deploy.manifest import sign_manifest

    key_id, secret = _signing_key(_secrets(secret_file), key_id)
    try:
        text = sign_manifest(active, secret=secret, key_id=key_id, ttl_seconds=ttl)
    except ValueError as e:
        raise _error(str(e)) from None
    _write(text, out, active)


def _signing_key(secrets: list[str] | dict[str, str], key_id: str | None) -> tuple[str | None, str]:
    if isinstance(secrets, dict):
        if key_id is None:
            if len(secrets) != 1:
                raise _error("the secret file names several key ids; pick one with --key-id")
            key_id = next(iter(secrets))
        if key_id not in secrets:
            raise _error(f"key id {key_id!r} is not in the secret file")
        return key_id, secrets[key_id]
    if key_id is not None:
        raise _error("--key-id needs a secret file of kid:secret lines")
    return None, secrets[0]


def _write(text: str, out: Path | None, active: list[str]) -> None:
    if out is None:
        typer.echo(text)
        return
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, out)
    except OSError as e:
        raise _error(f"cannot write {out}: {e.strerror}") from None
    typer.echo(f"wrote {out}: active {', '.join(dict.fromkeys(active))}", err=True)


@manifest_app.command("rollback")
def manifest_rollback(
    to: Annotated[
        str, typer.Option("--to", metavar="VERSION", help="The previous version to put back.")
    ],
    manifest: Annotated[
        Path,
        typer.Option(
            "--manifest", help="The manifest in force (its file); rewritten unless --out."
        ),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the new manifest here instead.")
    ] = None,
    secret_file: SecretFile = None,
    key_id: Annotated[
        str | None,
        typer.Option("--key-id", help="Sign with this key id's secret from a kid:secret file."),
    ] = None,
) -> None:
    """Put VERSION back: write the signed manifest naming it alone as active.

    The manifest in force is verified first; the new one is issued now (so workers take
    it over the old one) with the same lifetime. Workers of VERSION take calls again
    within one poll (audited `deployment.rolled_back`); the others stop taking new calls
    (`deployment.cutover`) and finish the calls they have.
    """
    from ..deploy.manifest import ManifestError, sign_manifest, verify_manifest

    secrets = _secrets(secret_file)
    try:
        current = verify_manifest(manifest.read_bytes(), secrets=secrets)
    except OSError as e:
        raise _error(f"cannot read --manifest {manifest}: {e.strerror}") from None
    except ManifestError as e:
        raise _error(f"--manifest {manifest} refused: {e.reason}") from None
    if not to.strip():
        raise _error("--to needs a version")
    if list(current.active_versions) == [to]:
        typer.echo(f"{manifest} already names {to} alone; nothing to roll back", err=True)
        return
    ttl = None
    if current.expires_at is not None:
        ttl = current.expires_at - current.issued_at
    kid, secret = _signing_key(secrets, key_id or current.key_id)
    try:
        text = sign_manifest([to], secret=secret, key_id=kid, ttl_seconds=ttl)
    except ValueError as e:
        raise _error(str(e)) from None
    _write(text, manifest if out is None else out, [to])
    was = ", ".join(current.active_versions)
    typer.echo(f"rolled back: active {was} -> {to}", err=True)


@manifest_app.command("verify")
def manifest_verify(
    path: Annotated[Path, typer.Argument(help="The manifest file to check.")],
    secret_file: SecretFile = None,
    version: Annotated[
        str | None, typer.Option("--version", help="Also say whether this version is a member.")
    ] = None,
) -> None:
    """Check a manifest's signature and age; exit 0 when a worker would accept it."""
    from ..deploy.manifest import ManifestError, verify_manifest

    secrets = _secrets(secret_file)
    try:
        manifest = verify_manifest(path.read_bytes(), secrets=secrets)
    except OSError as e:
        raise _error(f"cannot read {path}: {e.strerror}") from None
    except ManifestError as e:
        raise _error(f"manifest refused: {e.reason}", 1) from None
    out = {"ok": True, **manifest.to_dict()}
    if version is not None:
        out["member"] = manifest.is_member(version)
    typer.echo(json.dumps(out, indent=2))
    if version is not None and not out["member"]:
        raise typer.Exit(1)


@audit_app.command("verify")
def audit_verify(
    path: Annotated[
        Path, typer.Argument(help="A JSON Lines audit file written with --audit-path.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check an audit file's hash chain and head: exit 0 when whole, else name the first bad seq.

    A missing head file (logs from older versions) is a warning on stderr, not a failure.
    """
    from ..audit import verify_chain

    try:
        report = verify_chain(path)
    except FileNotFoundError as e:
        raise _error(str(e)) from None
    except OSError as e:
        raise _error(f"cannot read {path}: {e.strerror}") from None
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "ok": report.ok,
                    "records": report.records,
                    "first_bad_seq": report.first_bad_seq,
                    "reason": report.reason,
                    "warnings": list(report.warnings),
                }
            )
        )
    elif report.ok:
        typer.echo(f"ok: {report.records} records, chain whole")
    else:
        typer.echo(f"BROKEN at seq {report.first_bad_seq}: {report.reason}")
    for warning in report.warnings:
        typer.secho(f"warning: {warning}", err=True, fg=typer.colors.YELLOW)
    raise typer.Exit(0 if report.ok else 1)
