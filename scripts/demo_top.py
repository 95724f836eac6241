"""Print one `openrtc top` frame of a live worker: the capture shown in the README.

Run: .venv/bin/python scripts/demo_top.py
It starts the loopback dispatch server, a worker serving examples/agents with a cap of 8,
places a few simulated calls for two tenants, and prints `openrtc top --once` for it.
"""

from __future__ import annotations

import asyncio
import sys

from openrtc import AgentPool
from openrtc.config import OpsEndpoint, PoolConfig, Runtime
from openrtc.devserver import DispatchServer
from openrtc.worker.lifespan import Lifespan, until_started
from openrtc.worker.server import PoolServer


async def main() -> int:
    async with DispatchServer() as server:
        pool = AgentPool(
            deployment_version="v2.0.0",
            max_concurrent_sessions=8,
            config=PoolConfig.from_env(runtime=Runtime(prewarm_models=False)),
        )
        pool.discover("examples/agents")
        worker = PoolServer(
            pool, ws_url=server.ws_url, api_key=server.api_key, api_secret=server.api_secret
        )
        lifespan = Lifespan(pool, worker, ops=OpsEndpoint(port=0))
        task = asyncio.create_task(lifespan.run())
        if not await until_started(lifespan, task):
            return task.result()
        calls = [
            ("sales", "acme"),
            ("support", "acme"),
            ("booking", "globex"),
            ("sales", "globex"),
            ("support", "initech"),
        ]
        for i, (agent, tenant) in enumerate(calls):
            await server.dispatch(
                room=f"{agent}-call-{i + 1}",
                metadata={"agent": agent, "tenant": tenant},
                simulated_call={"turns": ["hello"], "mode": "text", "hold_s": 20},
            )
            await asyncio.sleep(0.4)
        await asyncio.sleep(1.0)
        assert lifespan.ops is not None
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "openrtc.cli.main",
            "top",
            lifespan.ops.url,
            "--once",
            env={"COLUMNS": "100", "PATH": ""},
        )
        code = await proc.wait()
        lifespan.force()
        pool.begin_drain(reason="demo over")
        await task
        return code


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
