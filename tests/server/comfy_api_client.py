"""A client written only against ComfyUI's documented API, in the style of its websocket example.

Usage: python comfy_api_client.py HOST:PORT PROMPT.json
Queues the prompt, listens on /ws until `executing` with node null for it, reads /history and
fetches every output image through /view; prints {node_id: [image byte counts]} as JSON.
"""
import json
import sys
import urllib.parse
import urllib.request
import uuid

import websocket  # websocket-client, as in ComfyUI's script_examples

server_address = sys.argv[1]
client_id = str(uuid.uuid4())


def queue_prompt(prompt):
    p = {"prompt": prompt, "client_id": client_id}
    data = json.dumps(p).encode("utf-8")
    req = urllib.request.Request("http://{}/prompt".format(server_address), data=data)
    return json.loads(urllib.request.urlopen(req).read())


def get_image(filename, subfolder, folder_type):
    data = {"filename": filename, "subfolder": subfolder, "type": folder_type}
    url_values = urllib.parse.urlencode(data)
    with urllib.request.urlopen("http://{}/view?{}".format(server_address, url_values)) as response:
        return response.read()


def get_history(prompt_id):
    with urllib.request.urlopen("http://{}/history/{}".format(server_address, prompt_id)) as response:
        return json.loads(response.read())


def get_images(ws, prompt):
    prompt_id = queue_prompt(prompt)["prompt_id"]
    output_images = {}
    while True:
        out = ws.recv()
        if isinstance(out, str):
            message = json.loads(out)
            if message["type"] == "executing":
                data = message["data"]
                if data["node"] is None and data["prompt_id"] == prompt_id:
                    break  # execution is done
        else:
            continue  # previews are binary data

    history = get_history(prompt_id)[prompt_id]
    for node_id in history["outputs"]:
        node_output = history["outputs"][node_id]
        images_output = []
        if "images" in node_output:
            for image in node_output["images"]:
                images_output.append(get_image(image["filename"], image["subfolder"], image["type"]))
        output_images[node_id] = images_output
    return output_images


with open(sys.argv[2]) as f:
    prompt = json.load(f)
ws = websocket.WebSocket()
ws.connect("ws://{}/ws?clientId={}".format(server_address, client_id))
images = get_images(ws, prompt)
ws.close()
print(json.dumps({node_id: [len(i) for i in imgs] for node_id, imgs in images.items()}))
