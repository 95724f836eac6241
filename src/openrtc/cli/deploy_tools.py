"""`openrtc manifest ...`, `openrtc audit ...` and `openrtc tenant ...`: the paperwork."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from ..keys import KeyRing

manifest_app = typer.Typer(help="Sign and check membership manifests of active versions.")
audit_app = typer.Typer(help="Check audit logs.")
tenant_app = typer.Typer(help="Make tenant claims for dispatchers and tests.")

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
        typer.Option(
            "--key-id", help="Sign with this key id (default: the first key of the file)."
        ),
    ] = None,
    ttl: Annotated[
        float | None,
        typer.Option("--ttl", help="Seconds until the manifest expires (default: never)."),
    ] = None,
    serial: Annotated[
        int | None,
        typer.Option(
            "--serial",
            min=1,
            help="Serial of this manifest; must grow with each one (default: now in microseconds).",
        ),
    ] = None,
) -> None:
    """Write a signed manifest (a membership document) naming the versions that take calls.

    Workers whose version is not named stop taking new calls within one poll.
    """
    from ..deploy.manifest import sign_manifest

    secrets = _secrets(secret_file)
    if key_id is not None and not isinstance(secrets, dict):
        raise _error("--key-id needs a secret file of kid:secret lines")
    if key_id is not None and key_id not in secrets:
        raise _error(f"key id {key_id!r} is not in the secret file")
    try:
        text = sign_manifest(active, secret=secrets, key_id=key_id, ttl_seconds=ttl, serial=serial)
    except ValueError as e:
        raise _error(str(e)) from None
    _write(text, out, active)


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
    kid = key_id or current.key_id
    if isinstance(secrets, dict) and kid not in secrets:
        raise _error(f"key id {kid!r} is not in the secret file")
    try:
        # issued now with a newer serial, so workers take it over the manifest in force
        text = sign_manifest([to], secret=secrets, key_id=kid, ttl_seconds=ttl)
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
    """Check a manifest's signature, shape and age; exit 0 when a worker would accept it."""
    from ..deploy.manifest import MAX_MANIFEST_BYTES, ManifestError, verify_manifest

    secrets = _secrets(secret_file)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as e:
        raise _error(f"cannot read {path}: {e.strerror}") from None
    try:
        manifest = verify_manifest(raw, secrets=secrets)
    except ManifestError as e:
        raise _error(f"manifest refused: {e.reason}", 1) from None
    out = {"ok": True, **manifest.to_dict()}
    if version is not None:
        out["member"] = manifest.is_member(version)
    typer.echo(json.dumps(out, indent=2))
    if version is not None and not out["member"]:
        raise typer.Exit(1)


AuditKeyFile = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        envvar="OPENRTC_AUDIT_KEY_FILE",
        help="The audit key file (kid:secret lines) the worker sealed the records with.",
    ),
]


@audit_app.command("verify")
def audit_verify(
    path: Annotated[
        str,
        typer.Argument(
            help="An audit file written with --audit-path, or a log stream holding "
            "--audit-stdout / --audit-url records ('-' reads stdin)."
        ),
    ],
    key_file: AuditKeyFile = None,
    allow_missing_head: Annotated[
        bool,
        typer.Option(
            "--allow-missing-head",
            help="Pass a log whose head file is gone (records cut from its end would not show).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check audit records' seals and chains: exit 0 when every chain is whole, else name
    the first bad record and exit 1.

    An audit file is checked with its head; a mixed log stream (audit lines among other
    log lines, several workers interleaved) is checked chain by chain, one per worker.
    With the key file, every record (and the head) must carry a valid HMAC, so a chain
    rebuilt without the key fails; without it the chains are checked as plain sha256.
    """
    keys = _audit_keys(key_file)
    if path == "-":
        lines = sys.stdin.buffer.read().splitlines(keepends=True)
        _verify_stream(lines, "stdin", keys, as_json)
        return
    file = Path(path)
    try:
        with file.open("rb") as handle:
            first = next((line for line in handle if line.strip()), b"")
    except FileNotFoundError:
        raise _error(f"audit file {file} does not exist; check the path and retry") from None
    except OSError as e:
        raise _error(f"cannot read {file}: {e.strerror}") from None
    if _is_stream(first):
        try:
            with file.open("rb") as handle:
                _verify_stream(handle, str(file), keys, as_json)
        except OSError as e:
            raise _error(f"cannot read {file}: {e.strerror}") from None
        return
    _verify_file(file, keys, allow_missing_head, as_json)


def _audit_keys(key_file: Path | None) -> KeyRing | None:
    from ..keys import KeyRing

    if key_file is None:
        return None
    try:
        return KeyRing.from_file(key_file, what="--key-file")
    except ValueError as e:
        raise _error(str(e)) from None


def _is_stream(first: bytes) -> bool:
    """A plain audit file starts with a flat record; anything else is read as a stream."""
    try:
        document = json.loads(first)
    except ValueError:
        return True
    return not (isinstance(document, dict) and "seq" in document and "hash" in document)


def _verify_stream(lines: Iterable[bytes], name: str, keys: KeyRing | None, as_json: bool) -> None:
    from ..audit.stream import verify_stream

    report = verify_stream(lines, keys)
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
        raise typer.Exit(0 if report.ok else 1)
    for chain in report.workers:
        ids = f" (worker_id {', '.join(chain.worker_ids)})" if chain.worker_ids else ""
        dup = f", {chain.duplicates} duplicate(s) ignored" if chain.duplicates else ""
        if chain.report.ok:
            typer.echo(
                f"ok: worker {chain.worker}{ids}: {chain.report.records} records, seq 1.."
                f"{chain.report.records}, chain whole, last event {chain.last_event}{dup}"
            )
        else:
            typer.echo(
                f"BROKEN: worker {chain.worker}{ids} at seq {chain.report.first_bad_seq}: "
                f"{chain.report.reason}{dup}"
            )
    for problem in report.problems:
        typer.echo(f"BROKEN: {problem}")
    if not report.workers and not report.problems:
        typer.echo(f"BROKEN: no audit records in {name}")
    typer.secho(
        f"{len(report.workers)} worker(s), {report.audit_lines} audit line(s) among "
        f"{report.audit_lines + report.other_lines} line(s); a stream has no head file, so "
        "records cut from the end of a worker's chain cannot show (a worker that stopped "
        "cleanly ends with worker.stopped)",
        err=True,
        fg=typer.colors.YELLOW,
    )
    raise typer.Exit(0 if report.ok else 1)


def _verify_file(path: Path, keys: KeyRing | None, allow_missing_head: bool, as_json: bool) -> None:
    from ..audit import verify_chain

    try:
        report = verify_chain(path, keys, allow_missing_head=allow_missing_head)
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
        typer.echo(f"ok: {report.reason}")
    else:
        typer.echo(f"BROKEN at seq {report.first_bad_seq}: {report.reason}")
    for warning in report.warnings:
        typer.secho(f"warning: {warning}", err=True, fg=typer.colors.YELLOW)
    raise typer.Exit(0 if report.ok else 1)


@tenant_app.command("sign")
def tenant_sign(
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant the call is for.")],
    secret_file: Annotated[
        Path,
        typer.Option(
            "--secret-file",
            envvar="OPENRTC_TENANT_SECRET_FILE",
            help="The tenant key file (kid:secret lines); the first key signs.",
        ),
    ],
    room: Annotated[
        str | None, typer.Option("--room", help="The room name the claim is bound to.")
    ] = None,
    job_id: Annotated[
        str | None, typer.Option("--job", help="The job id the claim is bound to.")
    ] = None,
    ttl: Annotated[
        float, typer.Option("--ttl", help="Seconds the claim stays valid.", min=1)
    ] = 300.0,
) -> None:
    """Print a claim for the job metadata's `tenant_sig`, bound to a room and/or job.

    A dispatcher that creates rooms through the LiveKit API signs one per room it
    creates and puts it next to `tenant` in the dispatch metadata.
    """
    from ..errors import ConfigError
    from ..keys import KeyRing
    from ..tenancy.claims import sign_tenant

    if not room and not job_id:
        raise _error("pass --room and/or --job: a claim is bound to the call it is for")
    try:
        keys = KeyRing.from_file(secret_file, what="--secret-file")
        token = sign_tenant(tenant, keys, room=room, job_id=job_id, ttl=ttl)
    except (ValueError, ConfigError) as e:
        raise _error(str(e)) from None
    typer.echo(token)
