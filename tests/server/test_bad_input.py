"""Every bad input gets its 4xx with a JSON error, and the server keeps serving.

Requests, graphs, cross-site rules, websockets and packs; files (uploads, /view) are in
test_bad_files.py. The hostile_server fixture asserts at teardown that no request reached the
last-resort error handler (which would mean an unplanned 500).
"""
import asyncio
import json
import random
import socket
import uuid

import aiohttp
import pytest

from server_harness import (expect, get_json, post_json, run, slow_prompt, start_server,
                            still_serving, stop_server)

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(hostile_server):
    return hostile_server


def check_all(server, cases, method="POST", path="/prompt"):
    """Each case: (body bytes or str, headers, expected status, expected error type)."""
    async def scenario():
        async with aiohttp.ClientSession() as session:
            for data, headers, status, error_type in cases:
                await expect(session, method, f"{server.url}{path}", status, error_type,
                             data=data, headers=headers)
                await still_serving(session, server.url)
    run(scenario())


# 1, 2, 25 -----------------------------------------------------------------------------------

def test_malformed_json_bodies_are_400_invalid_json(server):
    check_all(server, [
        (b"{not json", JSON, 400, "invalid_json"),
        (b"", JSON, 400, "invalid_json"),
        (b"[1, 2]", JSON, 400, "invalid_json"),
        (b"42", JSON, 400, "invalid_json"),
        ('{"prompt": {}}'.encode("utf-16"), JSON, 400, "invalid_json"),
        (b'{"prompt": "\xff\xfe"}', JSON, 400, "invalid_json"),
        (b'{"prompt": {}, "number": NaN}', JSON, 400, "invalid_json"),
        (b'{"n": ' + b"9" * 5000 + b"}", JSON, 400, "invalid_json"),
        (b"[" * 100_000 + b"]" * 100_000, JSON, 400, "invalid_json"),
    ])


def test_missing_or_wrong_prompt_and_fields(server):
    ok = slow_prompt()
    check_all(server, [
        (json.dumps({"client_id": "x"}), JSON, 400, "no_prompt"),
        (json.dumps({"prompt": [1, 2]}), JSON, 400, "invalid_prompt"),
        (json.dumps({"prompt": {"1": "not a node"}}), JSON, 400, "invalid_prompt"),
        (json.dumps({"prompt": ok, "client_id": "x" * 10_000}), JSON, 400, "invalid_prompt"),
        (json.dumps({"prompt": ok, "client_id": 5}), JSON, 400, "invalid_prompt"),
        (json.dumps({"prompt": ok, "prompt_id": "a\nb"}), JSON, 400, "invalid_prompt"),
        (json.dumps({"prompt": ok, "number": 1e300}), JSON, 400, "invalid_prompt"),
        (json.dumps({"prompt": ok, "number": "3"}), JSON, 400, "invalid_prompt"),
        (json.dumps({"prompt": ok, "number": True}), JSON, 400, "invalid_prompt"),
        (json.dumps({"prompt": ok, "front": "yes"}), JSON, 400, "invalid_request"),
        (json.dumps({"prompt": ok, "extra_data": []}), JSON, 400, "invalid_prompt"),
        (json.dumps({"prompt": ok, "partial_execution_targets": "1"}), JSON, 400, "invalid_request"),
    ])


# 3, 4, 10 -----------------------------------------------------------------------------------

def test_body_limits_are_413(server):
    big = json.dumps({"prompt": {"1": {"class_type": "x", "inputs": {"s": "a" * (3 << 20)}}}})
    check_all(server, [(big, JSON, 413, "body_too_large")])

    async def chunked():
        async def body():
            for _ in range(40):
                yield b"a" * 65536 * 2
        async with aiohttp.ClientSession() as session:
            await expect(session, "POST", f"{server.url}/prompt", 413, "body_too_large",
                         data=body(), headers=JSON)
            await still_serving(session, server.url)
    run(chunked())


def test_declared_length_over_limit_is_refused_before_reading(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"POST /prompt HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 999999999\r\n\r\n{")
        answer = s.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 413"), answer
    for truncated in (b"Content-Length: 100\r\n\r\n{\"prompt\":",
                      b"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"pro\r\n"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(b"POST /prompt HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Content-Type: application/json\r\n" + truncated)
            s.shutdown(socket.SHUT_WR)  # then hang up mid-body
            s.recv(4096)
    run(_still_serving(server))


async def _still_serving(server):
    async with aiohttp.ClientSession() as session:
        await still_serving(session, server.url)


def test_node_count_limit_and_deep_chains(server):
    def chain(n):
        prompt = {"0": {"class_type": "PrimitiveInt", "inputs": {"value": 1}}}
        for i in range(1, n):
            prompt[str(i)] = {"class_type": "IntMath",
                              "inputs": {"a": [str(i - 1), 0], "b": 1, "operation": "add"}}
        prompt[str(n)] = {"class_type": "PreviewAny", "inputs": {"source": [str(n - 1), 0]}}
        return prompt
    wide = {str(i): {"class_type": "PrimitiveInt", "inputs": {"value": i}} for i in range(10_000)}
    check_all(server, [
        (json.dumps({"prompt": chain(5000)}), JSON, 413, "too_many_nodes"),
        (json.dumps({"prompt": wide}), JSON, 413, "too_many_nodes"),
    ])

    async def accepted_deep_chain():
        async with aiohttp.ClientSession() as session:
            status, body = await post_json(session, f"{server.url}/prompt",
                                           {"prompt": chain(1500), "front": True})
            assert status == 200, body  # validated iteratively: no RecursionError
    run(accepted_deep_chain())


# 5 to 9 -------------------------------------------------------------------------------------

def test_graph_errors_in_comfyui_shape(server):
    def node_error_types(body, node_id):
        return [e["type"] for e in body["node_errors"][node_id]["errors"]]

    async def scenario():
        async with aiohttp.ClientSession() as session:
            url = f"{server.url}/prompt"
            cases = [
                ({"1": {"inputs": {}}}, "invalid_prompt", None, None),
                ({"1": {"class_type": "NoSuchNode", "inputs": {}}}, "invalid_prompt", None, None),
                ({"1": {"class_type": "PrimitiveInt", "inputs": {"value": 1}}},
                 "prompt_no_outputs", None, None),
                ({"1": {"class_type": "PreviewAny", "inputs": {"source": ["9", 0]}}},
                 "prompt_outputs_failed_validation", "1", "bad_linked_input"),
                ({"1": {"class_type": "PrimitiveInt", "inputs": {"value": 1}},
                  "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 5]}}},
                 "prompt_outputs_failed_validation", "2", "bad_linked_input"),
                ({"1": {"class_type": "PrimitiveString", "inputs": {"value": "a"}},
                  "2": {"class_type": "TestSlow", "inputs": {"steps": ["1", 0], "delay": 0, "tag": ""}}},
                 "prompt_outputs_failed_validation", "2", "return_type_mismatch"),
                ({"1": {"class_type": "TestSlow", "inputs": {"steps": "many", "delay": 0, "tag": ""}}},
                 "prompt_outputs_failed_validation", "1", "invalid_input_type"),
                ({"1": {"class_type": "TestSlow", "inputs": {"steps": 0, "delay": 0, "tag": ""}}},
                 "prompt_outputs_failed_validation", "1", "value_smaller_than_min"),
                ({"1": {"class_type": "TestSlow", "inputs": {"steps": 10**9, "delay": 0, "tag": ""}}},
                 "prompt_outputs_failed_validation", "1", "value_bigger_than_max"),
                ({"1": {"class_type": "TestSlow", "inputs": {"delay": 0, "tag": ""}}},
                 "prompt_outputs_failed_validation", "1", "required_input_missing"),
                ({"1": {"class_type": "IntMath", "inputs": {"a": ["2", 0], "b": 1, "operation": "add"}},
                  "2": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "b": 1, "operation": "add"}},
                  "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}},
                 "dependency_cycle", None, None),
                ({"1": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "b": 1, "operation": "add"}},
                  "3": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}},
                 "dependency_cycle", None, None),
            ]
            for prompt, top, node_id, node_type in cases:
                status, body = await post_json(session, url, {"prompt": prompt})
                assert status == 400, (prompt, body)
                assert body["error"]["type"] == top, (prompt, body)
                if node_id is not None:
                    assert node_type in node_error_types(body, node_id), body
            await still_serving(session, server.url)
            queue = (await get_json(session, f"{server.url}/queue"))[1]
            assert not any(item[2].get("3", {}).get("class_type") == "PreviewAny"
                           and "2" in item[2] and item[2]["2"]["class_type"] == "IntMath"
                           for item in queue["queue_pending"])  # nothing of the above queued
    run(scenario())


@pytest.mark.parametrize("name", ["../x.png", "/etc/passwd", "..\\x.png", "%2e%2e%2fx.png",
                                  "a\x00.png", "etc_link/passwd", "ok.png [output]/../../x"])
def test_file_widget_names_never_leave_their_folder(server, name):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
                      "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
            status, body = await post_json(session, f"{server.url}/prompt", {"prompt": prompt})
            assert status == 400, body
            types = [e["type"] for e in body["node_errors"]["1"]["errors"]]
            assert types and set(types) <= {"value_not_in_list", "custom_validation_failed"}, types
    run(scenario())


# 11, 12 ------------------------------------------------------------------------------------

def test_prompt_id_reuse_and_unknown_ids(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            prompt_id = str(uuid.uuid4())
            prompt = slow_prompt(1, 0.0)
            first = await post_json(session, f"{server.url}/prompt",
                                    {"prompt": prompt, "prompt_id": prompt_id})
            again = await post_json(session, f"{server.url}/prompt",
                                    {"prompt": prompt, "prompt_id": prompt_id, "client_id": "other"})
            assert first[0] == again[0] == 200
            assert first[1]["number"] == again[1]["number"]
            other = slow_prompt(1, 0.0, tag="different")
            await expect(session, "POST", f"{server.url}/prompt", 409, "prompt_id_conflict",
                         data=json.dumps({"prompt": other, "prompt_id": prompt_id}), headers=JSON)
            await expect(session, "GET", f"{server.url}/history/{uuid.uuid4()}", 404,
                         "unknown_prompt_id")
            await expect(session, "GET", f"{server.url}/api/vidgraph/jobs/{uuid.uuid4()}", 404,
                         "unknown_prompt_id")
            await expect(session, "GET", f"{server.url}/api/no/such/route", 404, "not_found")
            await expect(session, "DELETE", f"{server.url}/prompt", 405, "method_not_allowed")
            for _ in range(1000):  # finished, so it cannot move from /queue to /history between reads
                if (await get_json(session, f"{server.url}/history/{prompt_id}"))[1]:
                    break
                await asyncio.sleep(0.01)
            _, queue = await get_json(session, f"{server.url}/queue")
            _, history = await get_json(session, f"{server.url}/history")
            ids = [i[1] for i in queue["queue_running"] + queue["queue_pending"]] + list(history)
            assert ids.count(prompt_id) == 1
    run(scenario())


# 19: cross-site ------------------------------------------------------------------------------

def test_cross_site_requests_are_refused_on_http_and_websocket(server):
    host = f"127.0.0.1:{server.port}"
    body = json.dumps({"prompt": slow_prompt(1, 0.0)})
    cases = [
        ({"Origin": "https://evil.example"}, 403, "origin_refused"),
        ({"Origin": "null"}, 403, "origin_refused"),
        ({"Origin": f"http://127.0.0.1:{server.port + 1}"}, 403, "origin_refused"),
        ({"Sec-Fetch-Site": "cross-site"}, 403, "cross_site_refused"),
        ({"Host": f"rebind.evil.example:{server.port}"}, 403, "host_not_allowed"),
        ({"Host": f"rebind.evil.example:{server.port}", "Origin": f"http://rebind.evil.example:{server.port}"},
         403, "host_not_allowed"),
    ]

    async def scenario():
        async with aiohttp.ClientSession() as session:
            for headers, status, error_type in cases:
                await expect(session, "POST", f"{server.url}/prompt", status, error_type,
                             data=body, headers={**JSON, **headers})
                await expect(session, "GET", f"{server.url}/ws?clientId=x", status, error_type,
                             headers={**headers, "Upgrade": "websocket", "Connection": "Upgrade",
                                      "Sec-WebSocket-Version": "13",
                                      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
            for content_type in ("application/x-www-form-urlencoded", "text/plain",
                                 "multipart/form-data; boundary=x"):
                await expect(session, "POST", f"{server.url}/prompt", 415, "unsupported_media_type",
                             data=body, headers={"Content-Type": content_type,
                                                 "User-Agent": "Mozilla/5.0", "Origin": f"http://{host}"})
            for loopback in (f"localhost:{server.port}", f"[::1]:{server.port}", "127.0.0.1"):
                await expect(session, "GET", f"{server.url}/prompt", 200, headers={"Host": loopback})
            # same-origin browser requests and plain scripts pass
            status, _ = await post_json(session, f"{server.url}/prompt",
                                        {"prompt": slow_prompt(1, 0.0)})
            assert status == 200
            async with session.post(f"{server.url}/prompt", data=body,
                                    headers={**JSON, "Origin": f"http://{host}",
                                             "Sec-Fetch-Site": "same-origin"}) as r:
                assert r.status == 200
            async with session.ws_connect(f"{server.url}/ws", headers={"Origin": f"http://{host}"}) as ws:
                assert json.loads((await ws.receive()).data)["type"] == "status"
    run(scenario())


def test_cors_header_opens_exactly_one_origin(tmp_path):
    running = start_server(tmp_path, enable_cors_header="https://studio.example")
    try:
        async def scenario():
            async with aiohttp.ClientSession() as session:
                r, _ = await expect(session, "GET", f"{running.url}/prompt", 200,
                                    headers={"Origin": "https://studio.example",
                                             "Sec-Fetch-Site": "cross-site"})
                assert r.headers["Access-Control-Allow-Origin"] == "https://studio.example"
                async with session.options(f"{running.url}/prompt",
                                           headers={"Origin": "https://studio.example"}) as r:
                    assert r.status == 204
                await expect(session, "GET", f"{running.url}/prompt", 403, "origin_refused",
                             headers={"Origin": "https://other.example"})
        run(scenario())
    finally:
        stop_server(running)
    assert running.unexpected_errors == 0


# 20: websocket -------------------------------------------------------------------------------

def test_websocket_limits_and_client_replacement(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws?clientId=big") as ws:
                await ws.receive()
                try:
                    await ws.send_str("x" * (5 << 20))
                    msg = await ws.receive()
                    while msg.type == aiohttp.WSMsgType.TEXT:
                        msg = await ws.receive()
                    assert ws.close_code == 1009, (msg, ws.close_code)  # message too big
                except ConnectionError:
                    pass  # the server refused on the frame header and dropped us mid-send
            async with session.ws_connect(f"{server.url}/ws?clientId=same") as old:
                await old.receive()
                await old.send_bytes(b"\x00\xffgarbage")
                async with session.ws_connect(f"{server.url}/ws?clientId=same") as new:
                    assert json.loads((await new.receive()).data)["data"]["sid"] == "same"
                    msg = await old.receive()
                    while msg.type == aiohttp.WSMsgType.TEXT:
                        msg = await old.receive()
                    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                    assert old.close_code == 4001  # "replaced": the editor takes a new id
            await expect(session, "GET", f"{server.url}/ws?clientId=bad%20id", 400,
                         "invalid_client_id", headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                                       "Sec-WebSocket-Version": "13",
                                                       "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
            await still_serving(session, server.url)
    run(scenario())


def test_websocket_connection_cap(tmp_path):
    running = start_server(tmp_path, ws_clients=2)
    try:
        async def scenario():
            async with aiohttp.ClientSession() as session:
                a = await session.ws_connect(f"{running.url}/ws")
                b = await session.ws_connect(f"{running.url}/ws")
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await session.ws_connect(f"{running.url}/ws")
                assert refused.value.status == 503
                await a.close()
                await b.close()
        run(scenario())
    finally:
        stop_server(running)


# 23: plugins ---------------------------------------------------------------------------------

def test_broken_packs_are_reported_and_the_server_serves(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            status, packs = await get_json(session, f"{server.url}/vidgraph/node_packs")
            assert status == 200
            failed = {e["pack"]: e["reason"] for e in packs["errors"]}
            assert "raises_at_import" in failed and "pack is broken" in failed["raises_at_import"]
            assert "duplicate_name" in failed
            _, info = await get_json(session, f"{server.url}/object_info/TestSlow")
            assert info["TestSlow"]["python_module"] == "custom_nodes.vg_test_nodes"
    run(scenario())


def test_page_navigation_from_elsewhere_and_proxied_origins(tmp_path):
    running = start_server(tmp_path, allowed_hosts={"studio.example"})
    navigate = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate",
                "Sec-Fetch-Dest": "document"}
    try:
        async def scenario():
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{running.url}/", headers=navigate) as r:
                    assert r.status == 200 and "html" in r.headers["Content-Type"]
                await expect(session, "GET", f"{running.url}/queue", 403, "cross_site_refused",
                             headers=navigate)
                proxied = {"Host": "studio.example", "Origin": "https://studio.example"}
                async with session.post(f"{running.url}/interrupt", json={}, headers=proxied) as r:
                    assert r.status == 200
                await expect(session, "POST", f"{running.url}/interrupt", 403, "origin_refused",
                             json={}, headers={**proxied, "Origin": "https://studio.example:4444"})
                await expect(session, "POST", f"{running.url}/interrupt", 403, "host_not_allowed",
                             json={}, headers={"Host": "other.example"})
        run(scenario())
    finally:
        stop_server(running)
    assert running.unexpected_errors == 0


def test_wrong_types_anywhere_never_reach_a_500(server):
    """A seeded shower of odd JSON values in every field of every JSON endpoint."""
    rng = random.Random(1234)
    odd = [None, True, 0, -1, 1.5, 1e308, "", "x" * 300, "../x", [], [1, "a"], {}, {"a": [None]},
           [["1", 0]], ["1", 99], {"class_type": 5}, {"class_type": "TestSlow", "inputs": []},
           {"class_type": "TestSlow", "inputs": {"steps": {"x": 1}}}]
    fields = {"/prompt": ["prompt", "client_id", "prompt_id", "extra_data", "number", "front",
                          "partial_execution_targets"],
              "/queue": ["clear", "delete"], "/history": ["clear", "delete"],
              "/interrupt": ["prompt_id"], "/free": ["unload_models", "free_memory"],
              "/settings": ["a", "b"]}

    async def scenario():
        async with aiohttp.ClientSession() as session:
            for _ in range(150):
                path = rng.choice(sorted(fields))
                body = {k: rng.choice(odd) for k in fields[path] if rng.random() < 0.7}
                if path == "/prompt" and rng.random() < 0.5:
                    body["prompt"] = {"1": rng.choice(odd[12:]), "2": {"class_type": "TestSlow",
                                      "inputs": {"steps": rng.choice(odd), "delay": 0, "tag": ""}}}
                async with session.post(f"{server.url}/api{path}", json=body) as r:
                    assert r.status < 500, (path, body, await r.text())
            await still_serving(session, server.url)
    run(scenario())
    assert server.unexpected_errors == 0
