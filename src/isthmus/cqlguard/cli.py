"""``isthmus guard``: run the CQL guard, and read its flows.

Thin wiring (STYLE §4): options become :class:`~isthmus.cqlguard.settings.GuardSettings`,
the proxy runs them; ``flows`` prints what :func:`~isthmus.cqlguard.flows.read_flows`
yields. Bad input raises :class:`~isthmus.errors.UserError` (one line, exit code 2).

::

    isthmus guard run --listen 127.0.0.1:19042 --upstream 127.0.1.1:9042 --policy policy.yaml \\
        --flows flows.jsonl --flows-max-bytes 104857600 --metrics 127.0.0.1:9108
    isthmus guard flows --verdict DENIED --user app flows.jsonl
    isthmus guard flows --follow --table sales.orders flows.jsonl
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from isthmus.cqlguard.flows import FlowFilter, FlowVerdict, read_flows
from isthmus.cqlguard.policy import PolicyError
from isthmus.cqlguard.settings import (
    DEFAULT_FLOWS_MAX_BYTES,
    Endpoint,
    GuardSettings,
    GuardSettingsError,
    Limits,
    TLSSettings,
)
from isthmus.errors import UserError

__all__ = ["guard_app", "main"]

guard_app = typer.Typer(
    name="guard",
    help="A CQL-aware policy proxy in front of Cassandra.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_DEFAULT_LIMITS = Limits()


@guard_app.command("run")
def run(
    listen: Annotated[list[str], typer.Option(help="HOST:PORT to listen on (repeat for several addresses)")],
    upstream: Annotated[str, typer.Option(help="HOST:PORT of the Cassandra node")],
    policy: Annotated[Path, typer.Option(help="policy YAML (reloaded on change and on SIGHUP)")],
    flows: Annotated[Path | None, typer.Option(help="append one JSON line per decision here")] = None,
    flows_max_bytes: Annotated[
        int, typer.Option(help="rotate the flows file to FLOWS.1 past this size; 0: never")
    ] = DEFAULT_FLOWS_MAX_BYTES,
    metrics: Annotated[str | None, typer.Option(help="HOST:PORT to serve Prometheus /metrics on")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="server certificate (PEM) for client TLS")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="server private key (PEM)")] = None,
    client_ca: Annotated[Path | None, typer.Option(help="CA (PEM) that signs client certificates: mTLS")] = None,
    max_connections: Annotated[int, typer.Option(help="client connections at once")] = _DEFAULT_LIMITS.max_connections,
    idle_timeout: Annotated[float, typer.Option(help="seconds")] = _DEFAULT_LIMITS.idle_timeout_s,
    slow_client_timeout: Annotated[float, typer.Option(help="seconds")] = _DEFAULT_LIMITS.slow_client_timeout_s,
    max_frame_size: Annotated[int, typer.Option(help="bytes")] = _DEFAULT_LIMITS.max_frame_size,
    buffer_high_water: Annotated[int, typer.Option(help="bytes per side")] = _DEFAULT_LIMITS.buffer_high_water,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """Run the guard until SIGTERM/SIGINT; SIGHUP reloads the policy."""
    from isthmus.cqlguard.proxy import GuardServer, loop_name, run_guard

    logging.basicConfig(
        level=log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if (tls_cert is None) != (tls_key is None):
        raise GuardSettingsError("give both --tls-cert and --tls-key, or neither")
    if client_ca is not None and tls_cert is None:
        raise GuardSettingsError("--client-ca needs --tls-cert and --tls-key")
    tls = (
        TLSSettings(cert=tls_cert, key=tls_key, client_ca=client_ca)
        if tls_cert is not None and tls_key is not None
        else None
    )
    settings = GuardSettings(
        listen=tuple(Endpoint.parse(one, what="--listen") for one in listen),
        upstream=Endpoint.parse(upstream, what="--upstream"),
        policy_path=policy,
        flows_path=flows,
        flows_max_bytes=flows_max_bytes,
        metrics=Endpoint.parse(metrics, what="--metrics") if metrics else None,
        limits=Limits(
            max_connections=max_connections,
            idle_timeout_s=idle_timeout,
            slow_client_timeout_s=slow_client_timeout,
            max_frame_size=max_frame_size,
            buffer_high_water=buffer_high_water,
        ),
        tls=tls,
    )

    def ready(server: GuardServer) -> None:
        where = f"; metrics on http://{server.metrics_address}/metrics" if server.metrics_address else ""
        print(
            f"cqlguard listening on {', '.join(map(str, server.addresses))} -> {settings.upstream}{where}"
            f" (event loop: {loop_name()})",
            file=sys.stderr,
            flush=True,
        )

    try:
        run_guard(settings, ready=ready)
    except PolicyError as exc:
        raise UserError(f"policy not loaded: {exc}") from exc
    except FileNotFoundError as exc:
        raise UserError(f"{exc.filename}: no such file") from exc
    except OSError as exc:
        where = ", ".join(map(str, settings.listen))
        raise UserError(f"cannot listen on {where}: {exc.strerror or exc}") from exc


@guard_app.command("flows")
def flows(
    file: Annotated[Path, typer.Argument(help="the flows file written by `guard run --flows`")] = Path("flows.jsonl"),
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new flows (survives rotation)")] = False,
    verdict: Annotated[FlowVerdict | None, typer.Option(case_sensitive=False, help="ALLOWED, DENIED or ERROR")] = None,
    user: Annotated[str | None, typer.Option(help="only this CQL user")] = None,
    table: Annotated[str | None, typer.Option(help="only flows touching KEYSPACE.TABLE")] = None,
) -> None:
    """Print flow records (one JSON object a line), filtered."""
    if table is not None and table.count(".") != 1:
        raise UserError(f"--table {table!r} must be KEYSPACE.TABLE")
    if not follow and not file.exists():
        raise UserError(f"{file}: no such flows file (start the guard with --flows {file})")
    flt = FlowFilter(verdict=verdict, user=user, table=table)
    try:
        for record in read_flows(file, flt, follow=follow):
            sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
            if follow:
                sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `| head`
        pass


def main() -> None:
    """``python -m isthmus.cqlguard.cli``: the same commands without the main CLI."""
    try:
        guard_app()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
