"""``python -m isthmus.lab.pods --state-dir DIR --cluster NAME``: the pod runtime of one lab cluster.

Started and stopped by :class:`isthmus.lab.Lab` as the cluster's ``runtime`` component. SIGTERM stops it
as a switched-off machine stops: every container dies at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from ..podnet import LabNetwork
from ..state import StateDir
from .api import RuntimeApi
from .runtime import Runtime, RuntimeSettings


async def _main(state_dir: Path, cluster: str) -> int:
    sd = StateDir(state_dir)
    state = sd.load()
    if state is None:
        print(f"no lab state in {state_dir}", file=sys.stderr)
        return 2
    cs = state.cluster(cluster)
    if cs is None:
        print(f"lab has no cluster {cluster!r}", file=sys.stderr)
        return 2
    paths = sd.cluster(cluster)
    settings = RuntimeSettings(cluster=cluster, pods_dir=paths.root / "pods", images_dir=state_dir / "images",
                               volumes_dir=state_dir / "volumes" / cluster)
    api = RuntimeApi(cs.ports.server, paths.pki.ca.cert, paths.pki.clients["runtime"])
    runtime = Runtime(settings, api, LabNetwork.load(state_dir))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    main = asyncio.create_task(runtime.run())
    await asyncio.wait([main, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    main.cancel()
    await runtime.shutdown()
    await api.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m isthmus.lab.pods")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--cluster", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return asyncio.run(_main(args.state_dir, args.cluster))


if __name__ == "__main__":
    sys.exit(main())
