"""``astro-pipeline replica serve``: run the local MAST/HLA/ESA-Hubble replica on 127.0.0.1."""

from __future__ import annotations

import typer

from astro_pipeline.cli._app import replica_app
from astro_pipeline.cli._common import console


@replica_app.command("serve")
def serve(
    port: int = typer.Option(8765, "--port", help="TCP port on 127.0.0.1 (0: any free port)."),
    faults: str = typer.Option("", "--faults", help="Fault spec, e.g. '503:/api/v0/invoke:2,truncate:/Download/file:1' "
                               "(syntax: astro_pipeline.archives.replica.faults)."),
    seed: int = typer.Option(0, "--seed", help="Seed for probabilistic faults (p=...)."),
    mini: bool = typer.Option(False, "--mini", help="Serve the small sample (faster first start)."),
) -> None:
    """Serve the built-in sample through MAST, HLA and ESA/Hubble protocols until Ctrl-C."""
    from astro_pipeline.archives.replica.faults import FaultPlan, FaultSpecError
    from astro_pipeline.archives.replica.server import ReplicaServer
    from astro_pipeline.config import get_settings

    try:
        plan = FaultPlan.parse(faults, seed=seed)
    except FaultSpecError as exc:
        console.print(f"[red]--faults: {exc}[/red]")
        raise typer.Exit(2) from exc
    with console.status("preparing the sample (cached after the first run)..."):
        server = ReplicaServer(None, faults=plan, port=port, mini=mini, cache_dir=get_settings().cache_dir)
    url = server.url
    console.print(f"replica on [bold]{url}[/bold]  (sample: {server.state.sample_root})")
    console.print(f"faults: {plan.describe()}")
    console.print("point the pipeline at it with:\n"
                  f"  export ASTRO_PIPELINE_MAST_URL={url}\n"
                  f"  export ASTRO_PIPELINE_MAST_RESOLVER_URL={url}/Santa-war/query\n"
                  f"  export ASTRO_PIPELINE_HLA_URL={url}\n"
                  f"  export ASTRO_PIPELINE_ESAHUBBLE_URL={url}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
