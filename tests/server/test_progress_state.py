"""progress_state messages: every started node of a prompt, to the prompt's client only, throttled."""
import asyncio

from vidgraph.server.progress_state import ProgressStateRelay


def test_progress_state_follows_the_prompt_and_goes_to_its_client():
    sent = []

    async def scenario():
        relay = ProgressStateRelay(lambda sid, event, data: sent.append((sid, event, data)), interval=0.05)
        deliver = relay.deliver
        deliver("a", "execution_start", {"prompt_id": "p"})
        deliver("a", "executing", {"node": "1", "display_node": "1", "prompt_id": "p"})
        deliver("a", "progress", {"node": "1", "value": 2, "max": 4, "prompt_id": "p"})
        deliver("a", "executing", {"node": "1.0.0.1", "display_node": "1", "prompt_id": "p"})
        await asyncio.sleep(0.1)   # the throttled update goes out
        deliver("a", "execution_success", {"prompt_id": "p"})
        deliver("a", "executing", {"node": None, "prompt_id": "p"})
        return relay

    relay = asyncio.run(scenario())
    states = [(sid, data) for sid, event, data in sent if event == "progress_state"]
    assert states and all(sid == "a" and data["prompt_id"] == "p" for sid, data in states)
    first = states[0][1]["nodes"]
    assert first["1"]["state"] == "running" and first["1"]["value"] == 0
    middle = states[1][1]["nodes"]
    assert middle["1"]["state"] == "finished" and middle["1"]["value"] == 4
    assert middle["1.0.0.1"]["display_node_id"] == "1" and middle["1.0.0.1"]["parent_node_id"] == "1"
    last = states[-1][1]["nodes"]
    assert {n: e["state"] for n, e in last.items()} == {"1": "finished", "1.0.0.1": "finished"}
    assert len(states) <= 4 and relay.prompts == {}
    # every other event passes through unchanged, in order
    assert [e for _, e, _ in sent if e != "progress_state"] == [
        "execution_start", "executing", "progress", "executing", "execution_success", "executing"]


def test_a_failed_node_is_marked_error():
    sent = []

    async def scenario():
        relay = ProgressStateRelay(lambda sid, event, data: sent.append((event, data)), interval=10)
        relay.deliver("b", "executing", {"node": "3", "prompt_id": "q"})
        relay.deliver("b", "execution_error", {"prompt_id": "q", "node_id": "3"})

    asyncio.run(scenario())
    assert [d["nodes"]["3"]["state"] for e, d in sent if e == "progress_state"] == ["running", "error"]
