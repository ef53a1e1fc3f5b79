"""PromptServer.instance for packs: their routes are served (bare and /api), send_sync reaches clients."""
import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from server_harness import post_json, start_server, stop_server, collect_until_done

PACKS = Path(__file__).resolve().parents[1] / "fixtures_packs"


@pytest.fixture(scope="module")
def pack_server(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("packs"), node_packs=["vidgraph.nodes"],
                           custom_node_dirs=[str(PACKS)])
    yield running
    stop_server(running)


def test_pack_routes_are_served_and_events_reach_the_client(pack_server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            for prefix in ("", "/api"):
                async with session.get(f"{pack_server.url}{prefix}/surface/hello?name=vg") as r:
                    assert r.status == 200 and await r.json() == {"hello": "vg"}
            async with session.ws_connect(f"{pack_server.url}/ws?clientId=surface") as ws:
                prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 1,
                                                                        "color": 0}},
                          "2": {"class_type": "SurfaceHalfSize", "inputs": {"images": ["1", 0], "method": "area"}}}
                status, body = await post_json(session, f"{pack_server.url}/prompt",
                                               {"prompt": prompt, "client_id": "surface"})
                assert status == 200, body
                return await collect_until_done(ws, body["prompt_id"])

    messages = asyncio.run(scenario())
    assert [d["size"] for t, d in messages if t == "surface.progress"] == [[1, 4, 8, 3]]
    states = [d for t, d in messages if t == "progress_state"]
    assert states and states[-1]["nodes"]["2"]["state"] == "finished"
