"""`isthmus explain firewall|network`, `isthmus mesh render`, `isthmus preflight`: connecting the clusters.

Thin wiring: each command loads the specs, plans with the lock beside the Fleet (read, never
written here: `isthmus plan` owns the lock), calls :mod:`isthmus.render` or
:mod:`isthmus.kube.preflight` and presents the result. The one thing done here that the pure
packages may not do is making the mesh's CA (keys are randomness and files): once, into a folder
the user chooses, with owner-only permissions, and never printed.
"""

from __future__ import annotations

import asyncio
import functools
import os
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich import box
from rich.table import Table

from ..console import dump, err_console, out_console
from ..errors import UserError
from ._app import OutputFormat, OutputOpt, app
from ._plan import _read_lock, lock_path_for

if TYPE_CHECKING:
    from ..kube.preflight import PreflightReport
    from ..netplan import NetworkPlan
    from ..pki import Authority
    from ..render.cilium import CiliumCA
    from ..render.firewall import FirewallReport
    from ..render.istio import IstioIntermediateCA
    from ..spec import CassandraCluster, Fleet

__all__ = ["explain_app", "mesh_app"]

explain_app = typer.Typer(help="Explain what the fleet's network needs: firewall rules, a picture.",
                          no_args_is_help=True)
mesh_app = typer.Typer(help="Render what connects the clusters: Cilium ClusterMesh and/or Istio.",
                       no_args_is_help=True)
app.add_typer(explain_app, name="explain")
app.add_typer(mesh_app, name="mesh")

SpecFiles = Annotated[list[Path], typer.Option("--file", "-f", metavar="FILE", help="The Fleet spec, and "
                                                "optionally the app spec (repeat -f)")]
AppName = Annotated[str | None, typer.Option("--app", help="Which CassandraCluster, when the specs hold several")]


# --------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class _Inputs:
    fleet: Fleet
    fleet_file: Path
    app: CassandraCluster | None
    plan: NetworkPlan


def _inputs(files: Sequence[Path], app_name: str | None = None) -> _Inputs:
    """Load the specs and plan them with the lock beside the Fleet (the lock is read, never written)."""
    from .. import netplan
    from ..spec import CassandraCluster, check_consistency, load_files, require_fleet

    if not files:
        raise UserError("no spec given; pass the Fleet spec (and the app spec, if any) as FILE")
    specs = load_files(files)
    fleet = require_fleet(specs)
    check_consistency(specs)
    fleet_file = Path(specs.document_of(fleet).file)
    apps = [a for a in specs.apps if isinstance(a, CassandraCluster)]
    if app_name is not None:
        apps = [a for a in apps if a.metadata.name == app_name]
        if not apps:
            raise UserError(f"no CassandraCluster named {app_name!r} in the specs")
    if len(apps) > 1:
        names = ", ".join(a.metadata.name for a in apps)
        raise UserError(f"the specs hold several CassandraClusters ({names}); choose one with --app NAME")
    plan = netplan.plan(fleet, _read_lock(lock_path_for(fleet_file)))
    return _Inputs(fleet, fleet_file, apps[0] if apps else None, plan)


def _write(path: Path, text: str, *, private: bool = False) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if private:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT: narrow it
            with os.fdopen(fd, "w") as f:
                f.write(text)
        else:
            path.write_text(text)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}; choose a writable path") from exc


# ----------------------------------------------------------------------------------- explain firewall


def _port(rule: Any) -> str:
    from ..render.firewall import Protocol

    if rule.protocol is Protocol.ICMP:
        return f"type {rule.port}"
    return "-" if rule.port is None else str(rule.port)


def _firewall_table(report: FirewallReport) -> Table:
    mode = ", ".join(f"{k} {v}" for k, v in report.mode.items())
    table = Table("direction", "component", "protocol", "port", "source", "destination", "purpose",
                  box=box.SIMPLE_HEAVY, title=f"Fleet [bold]{report.fleet}[/]: {mode}", title_justify="left")
    current: tuple[str, str] | None = None
    for rule in report.rules:
        pair = (rule.from_cluster, rule.to_cluster)
        if current is not None and pair != current:
            table.add_section()
        current = pair
        protocol = rule.protocol.value if rule.port is not None or rule.protocol.value == "icmp" else \
            f"{rule.protocol.value} (ip {rule.protocol.ip_protocol})"
        table.add_row(rule.direction, rule.component, protocol, _port(rule), rule.source, rule.destination,
                      rule.purpose)
    return table


@explain_app.command("firewall")
def explain_firewall(
    files: SpecFiles,
    output: OutputOpt = OutputFormat.TABLE,
    rules: Annotated[bool, typer.Option("--rules", help="Print the cloud-neutral rule set (plain text) instead")]
    = False,
    exposure: Annotated[str, typer.Option("--clustermesh-exposure", help="LoadBalancer or NodePort: how peers "
                                          "reach each clustermesh-apiserver")] = "LoadBalancer",
) -> None:
    """What the firewalls between clusters must let through, per ordered pair of clusters and per mode."""
    from ..render.firewall import firewall_rules

    inputs = _inputs(files)
    report = firewall_rules(inputs.plan, inputs.fleet, apiserver_exposure=_exposure(exposure))
    if rules:
        sys.stdout.write(report.to_text())  # plain text, never wrapped: it is meant to be copied
        sys.stdout.flush()
    elif output is OutputFormat.TABLE:
        out_console.print(_firewall_table(report))
        if not report.rules:
            out_console.print("One cluster: no traffic crosses a firewall between clusters.")
    else:
        dump(report.to_dict(), output.value)


def _exposure(value: str) -> Any:
    from ..render.cilium import ApiServerExposure

    for choice in ApiServerExposure:
        if value.lower() == choice.value.lower():
            return choice
    raise UserError(f"--clustermesh-exposure {value!r}: choose LoadBalancer or NodePort")


# ------------------------------------------------------------------------------------ explain network


@explain_app.command("network")
def explain_network(
    files: SpecFiles,
    picture: Annotated[Path | None, typer.Option(
        "--picture", metavar="PATH", help="Draw the network into PATH (PNG, SVG or PDF by suffix)")]
    = None,
    app_name: AppName = None,
) -> None:
    """The connected fleet: what carries pod traffic between clusters, each cluster's IDs and CIDRs, and
    (with an app spec) the name a client dials in each cluster."""
    from ..pictures.netmap import link_label
    from ..render.discovery import client_addresses

    inputs = _inputs(files, app_name)
    plan = inputs.plan
    table = Table("cluster", "region", "Cilium ID", "pod CIDR", "service CIDR", "node CIDR", box=box.SIMPLE_HEAVY,
                  title=f"Fleet [bold]{plan.fleet}[/]: {link_label(plan)}, mesh {plan.network.mesh.value}",
                  title_justify="left")
    for c in plan.clusters:
        table.add_row(c.name, c.region, "-" if c.cluster_id is None else str(c.cluster_id),
                      "\n".join(str(n) for n in (c.pod_cidr, c.pod_cidr_v6) if n is not None) or "-",
                      "\n".join(str(n) for n in (c.service_cidr, c.service_cidr_v6) if n is not None) or "-",
                      str(c.node_cidr or "-"))
    out_console.print(table)
    if inputs.app is not None:
        names = Table("cluster", "mode", "client dials", "behaviour", box=box.SIMPLE_HEAVY,
                      title=f"CassandraCluster [bold]{inputs.app.metadata.name}[/]: client addresses",
                      title_justify="left")
        for a in client_addresses(inputs.app, inputs.fleet):
            names.add_row(a.cluster, a.mode.value, f"{a.host}:{a.port}", a.behaviour)
        out_console.print(names)
    if picture is not None:
        from ..pictures.netmap import draw_network

        _write(picture, "")
        try:
            draw_network(plan, picture)
        except ValueError as exc:  # matplotlib: unknown file format
            raise UserError(f"cannot draw {picture}: {exc}; use a .png, .svg or .pdf path") from exc
        err_console.print(f"picture written to {picture}")


# ------------------------------------------------------------------------------------------ mesh CA


_CA_DAYS, _INTERMEDIATE_DAYS = 3650, 1825


def _make_ca(common_name: str, *, signer: Authority | None = None, days: int = _CA_DAYS) -> tuple[str, str]:
    """A CA certificate and key (PEM, RSA: what Cilium's and Istio's charts read); self-signed, or an
    intermediate of ``signer``."""
    from ..pki import Authority, KeyType

    ca = Authority.new(common_name, org="isthmus", key_type=KeyType.RSA_2048, days=days, signer=signer)
    return ca.cert_pem().decode(), ca.key_pem().decode()


class _CADir:
    """The mesh's CA files: made once, owner-only (0700 folder, 0600 files), reused on every render."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.created: list[str] = []

    def pair(self, stem: str, make: Callable[[], tuple[str, str]]) -> tuple[str, str]:
        cert, key = self.folder / f"{stem}.crt", self.folder / f"{stem}.key"
        if cert.exists() and key.exists():
            if key.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                err_console.print(f"[yellow]warning:[/] {key} is readable by others; chmod 600 it", highlight=False)
            try:
                return cert.read_text(), key.read_text()
            except OSError as exc:
                raise UserError(f"cannot read the CA in {self.folder}: {exc.strerror}") from exc
        if cert.exists() or key.exists():
            present = cert if cert.exists() else key
            raise UserError(f"{present} exists without its pair; restore the missing file or remove both to make "
                            "a new CA (every cluster of the mesh must then get the new one)")
        cert_pem, key_pem = make()
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the CA folder {self.folder}: {exc.strerror}; choose one with "
                            "--ca-dir") from exc
        _write(cert, cert_pem, private=True)
        _write(key, key_pem, private=True)
        self.created.append(stem)
        return cert_pem, key_pem


def _cilium_ca(ca_dir: _CADir) -> CiliumCA:
    from ..render.cilium import CiliumCA

    cert, key = ca_dir.pair("cilium-ca", lambda: _make_ca("Cilium ClusterMesh CA"))
    return CiliumCA(cert_pem=cert, key_pem=key)


def _istio_cas(ca_dir: _CADir, clusters: Sequence[str]) -> dict[str, IstioIntermediateCA]:
    from ..pki import Authority
    from ..render.istio import IstioIntermediateCA

    root_cert, root_key = ca_dir.pair("istio-root-ca", lambda: _make_ca("Istio root CA"))
    signer = Authority.from_pem(root_cert.encode(), root_key.encode())
    cas = {}
    for name in clusters:
        make = functools.partial(_make_ca, f"Istio intermediate CA {name}", signer=signer, days=_INTERMEDIATE_DAYS)
        cert, key = ca_dir.pair(f"istio-{name}-ca", make)
        cas[name] = IstioIntermediateCA(root_cert_pem=root_cert, ca_cert_pem=cert, ca_key_pem=key,
                                        cert_chain_pem=cert + root_cert)
    return cas


# ---------------------------------------------------------------------------------------- mesh render


def _yaml(data: Mapping[str, Any], header: str) -> str:
    return header + yaml.safe_dump(dict(data), sort_keys=False)


def _docs(objects: Sequence[Mapping[str, Any]]) -> str:
    from ..render.manifests import Manifests

    return Manifests.build(("x", dict(o)) for o in objects).to_yaml("x") if objects else ""


def _apiserver_ips(values: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in values:
        cluster, sep, ip = item.partition("=")
        if not sep or not cluster or not ip:
            raise UserError(f"--apiserver-ip {item!r}: write CLUSTER=IP (repeat for more addresses)")
        out.setdefault(cluster, []).append(ip)
    return out


@mesh_app.command("render")
def mesh_render(
    files: SpecFiles,
    out: Annotated[Path, typer.Option("--out", help="Folder; one sub-folder per cluster")],
    ca_dir: Annotated[Path | None, typer.Option(
        "--ca-dir", help="Where the mesh's CA is kept (made on first use, 0600 files); default: FILE's stem + .ca "
        "beside the Fleet spec. Keep it private and backed up: every cluster must share it")] = None,
    exposure: Annotated[str, typer.Option("--clustermesh-exposure", help="LoadBalancer or NodePort")]
    = "LoadBalancer",
    apiserver_ip: Annotated[list[str] | None, typer.Option(
        "--apiserver-ip", metavar="CLUSTER=IP", help="A clustermesh-apiserver address (repeat); peers then need "
        "no DNS record")] = None,
    app_name: AppName = None,
) -> None:
    """Write each cluster's Cilium Helm values and/or Istio values and objects to OUT/<cluster>/.

    The mesh checks run first: a plan that does not fit the mesh is refused, naming the rule.
    """
    from ..render.cilium import cilium_values, render_cilium
    from ..render.discovery import outside_discovery
    from ..render.istio import istio_values, render_istio
    from ..render.meshcheck import MeshCheckError, check_cilium_values, require_mesh_fit
    from ..render.netpolicy import render_policies
    from ..spec import Mesh

    inputs = _inputs(files, app_name)
    plan, mesh = inputs.plan, inputs.fleet.spec.network.mesh
    cilium, istio = mesh in (Mesh.CILIUM, Mesh.BOTH), mesh in (Mesh.ISTIO, Mesh.BOTH)
    names = [c.name for c in plan.clusters]
    try:
        require_mesh_fit(plan, app=inputs.app)
        values = {n: cilium_values(plan, n, exposure=_exposure(exposure),
                                   apiserver_ips=_apiserver_ips(apiserver_ip or [])) for n in names} if cilium else {}
        if values and (broken := check_cilium_values(values)):
            raise MeshCheckError(broken)
    except MeshCheckError as exc:
        for violation in exc.violations[1:]:
            err_console.print(f"also: {violation}", highlight=False, markup=False)
        raise
    folder = ca_dir or inputs.fleet_file.with_name(inputs.fleet_file.stem + ".ca")
    cas = _CADir(folder)
    written: dict[str, list[str]] = {n: [] for n in names}

    def put(cluster: str, name: str, text: str, *, private: bool = False) -> None:
        _write(out / cluster / name, text, private=private)
        written[cluster].append(name + (" (0600)" if private else ""))

    head = f"# Rendered by `isthmus mesh render` for fleet {plan.fleet}; do not edit, re-render.\n"
    if cilium:
        ca_secret = render_cilium(plan, _cilium_ca(cas))
        for n in names:
            put(n, "cilium-values.yaml", _yaml(values[n], head + "# helm upgrade --install cilium cilium/cilium "
                                                               "-n kube-system -f cilium-values.yaml\n"))
            put(n, "cilium-ca.yaml", ca_secret.to_yaml(n), private=True)
    if istio:
        objects = render_istio(plan, cas=_istio_cas(cas, names), kubeconfigs=None)
        for n in names:
            put(n, "istio-values.yaml", _yaml(istio_values(plan, n), head + "# helm upgrade --install istiod "
                                                                            "istio/istiod -n istio-system -f "
                                                                            "istio-values.yaml\n"))
            mine = objects.for_cluster(n)
            put(n, "istio.yaml", _docs([o for o in mine if o["kind"] != "Secret"]))
            put(n, "istio-secrets.yaml", _docs([o for o in mine if o["kind"] == "Secret"]), private=True)
    if inputs.app is not None:
        # The app's own discovery objects (exports, global Services, DestinationRules in the clusters that host a
        # datacenter) are part of its manifests: `isthmus apply` deploys them. Here: its network policies, and the
        # discovery objects of clusters without a datacenter, which no rollout of the app writes to.
        network = render_policies(inputs.app, inputs.fleet, plan).merge(outside_discovery(inputs.app, inputs.fleet))
        for n in network.clusters:
            put(n, f"{inputs.app.metadata.name}-network.yaml", network.to_yaml(n))
    if cas.created:
        err_console.print(f"created the mesh CA in {folder} ({', '.join(cas.created)}; .crt and .key, 0600): keep it "
                          "private and backed up, later renders reuse it", highlight=False, markup=False)
    table = Table("cluster", "files", box=box.SIMPLE_HEAVY, title=f"Fleet [bold]{plan.fleet}[/], mesh {mesh.value}: "
                  f"written to {out}", title_justify="left")
    for n in names:
        table.add_row(n, ", ".join(written[n]))
    out_console.print(table)
    if istio and len(names) > 1:
        err_console.print("Istio remote secrets are not rendered: create them with a reader service account, "
                          "`istioctl create-remote-secret --context=<peer> --name=<peer> | kubectl apply "
                          "--context=<cluster> -f -` for every pair.", highlight=False)


# ------------------------------------------------------------------------------------------ preflight


def _preflight_tables(report: PreflightReport) -> tuple[Table, Table | None]:
    clusters = Table("cluster", "API server", "nodes", "services", "kubernetes Service", "cilium-config", "DNS domain",
                     box=box.SIMPLE_HEAVY, title=f"Preflight of fleet [bold]{report.fleet}[/]", title_justify="left")
    for name in report.clusters:
        facts = report.facts.get(name)
        if facts is None:
            clusters.add_row(name, "[red]no answer[/]", "-", "-", "-", "-", "-")
            continue
        cfg = facts.cilium_config
        cilium = ("absent" if cfg is None else
                  f"id {cfg.get('cluster-id', '-')}, name {cfg.get('cluster-name', '-')}, mtu {cfg.get('mtu', '-')}")
        clusters.add_row(name, "[green]reachable[/]", str(len(facts.node_ips)), str(len(facts.cluster_ips)),
                         ", ".join(map(str, facts.kubernetes_ips)) or "-", cilium, facts.dns_domain or "unknown")
    if not report.findings:
        return clusters, None
    findings = Table("severity", "check", "cluster", "finding", box=box.SIMPLE_HEAVY)
    for f in report.findings:
        colour = "red" if f.severity.value == "blocker" else "yellow"
        findings.add_row(f"[{colour}]{f.severity.value}[/]", f.check.value, f.cluster, f.message)
    return clusters, findings


@app.command()
def preflight(
    spec_file: Annotated[Path, typer.Option("--file", "-f", metavar="FILE", help="Fleet spec (YAML)")],
    kubeconfig: Annotated[Path | None, typer.Option(help="kubeconfig with a context per cluster; default "
                                                    "$KUBECONFIG")] = None,
    request_timeout: Annotated[float, typer.Option("--request-timeout", help="Seconds a cluster may take to "
                                                   "answer before it counts as unreachable")] = 5.0,
    output: OutputOpt = OutputFormat.TABLE,
) -> None:
    """Check the live clusters against the plan before deploying: reachability, CIDRs, cluster IDs, MTU, DNS.

    Exit code 2 when anything blocks the deploy; warnings alone exit 0.
    """
    from ..kube import ClusterRegistry, ConnectionSettings
    from ..kube.preflight import preflight as run_preflight

    inputs = _inputs([spec_file])
    registry = ClusterRegistry.from_fleet(inputs.fleet, kubeconfig,
                                          settings=ConnectionSettings(timeout=request_timeout, breaker_threshold=1))

    async def work() -> PreflightReport:
        try:
            return await run_preflight(inputs.plan, registry)
        finally:
            await registry.close()

    report = asyncio.run(work())
    if output is OutputFormat.TABLE:
        clusters, findings = _preflight_tables(report)
        out_console.print(clusters)
        if findings is not None:
            out_console.print(findings)
        verdict = ("[green]ready to deploy[/]" if report.ok else f"[red]{len(report.blockers)} blocker(s)[/]")
        out_console.print(f"{verdict}, {len(report.warnings)} warning(s)")
    else:
        dump(report.to_dict(), output.value)
    if not report.ok:
        raise typer.Exit(2)
