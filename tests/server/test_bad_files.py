"""Hostile files: uploads (names, subfolders, content, bombs, races) and /view."""
import asyncio
import io
import json
import os

import aiohttp
import pytest
from PIL import Image

from server_harness import expect, run, still_serving


@pytest.fixture(scope="module")
def server(hostile_server):
    return hostile_server


# 13 to 17: uploads --------------------------------------------------------------------------

def png_bytes(size=(8, 8), **save) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(out, format="PNG", **save)
    return out.getvalue()


def raw_multipart(filename: bytes, data: bytes, fields: dict | None = None,
                  content_type: bytes = b"image/png") -> tuple[bytes, dict]:
    """Built by hand: aiohttp's client would quote or refuse hostile names."""
    boundary = b"vidgraphboundary"
    parts = []
    for key, value in (fields or {}).items():
        parts.append(b"--" + boundary + b'\r\nContent-Disposition: form-data; name="' + key.encode()
                     + b'"\r\n\r\n' + value.encode() + b"\r\n")
    parts.append(b"--" + boundary + b'\r\nContent-Disposition: form-data; name="image"; filename="'
                 + filename + b'"\r\nContent-Type: ' + content_type + b"\r\n\r\n" + data + b"\r\n")
    body = b"".join(parts) + b"--" + boundary + b"--\r\n"
    return body, {"Content-Type": "multipart/form-data; boundary=vidgraphboundary"}


async def upload(session, server, filename: bytes, data: bytes, fields=None, path="/upload/image"):
    body, headers = raw_multipart(filename, data, fields)
    async with session.post(f"{server.url}{path}", data=body, headers=headers) as r:
        text = await r.text()
        assert "Traceback" not in text
        return r.status, (json.loads(text) if text else None)


def input_files(server) -> set:
    root = server.base / "input"
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


HOSTILE_NAMES = [b"../../etc/passwd", b"/etc/passwd", b"..\\..\\x.png", b"a%2f..%2fb.png", b"",
                 b".", b"..", b"x" * 300 + b".png", "\u0430pple.png".encode(), b"CON", b"con.png",
                 b"trailing.", b"trailing ", b"<script>.png"]


def test_hostile_upload_names_get_a_safe_server_name_inside_input(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            for name in HOSTILE_NAMES:
                data = png_bytes((8, 8 + len(name) % 50))
                status, body = await upload(session, server, name, data)
                assert status == 200, (name, body)
                stored = server.base / "input" / body["subfolder"] / body["name"]
                assert stored.resolve().is_relative_to((server.base / "input").resolve())
                assert stored.read_bytes() == data
                assert body["name"].startswith("upload_") and body["name"].endswith(".png"), body
            for name in (b"a\x00b.png", b"a\r\nb.png"):
                status, body = await upload(session, server, name, png_bytes())
                assert status == 400, (name, body)
            await still_serving(session, server.url)
        assert not (server.base / "etc").exists() and not os.path.exists("/etc/passwd.png")
    run(scenario())


def test_upload_subfolder_escapes_are_refused(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            before = input_files(server)
            for subfolder, status in (("../", 400), ("/etc", 400), ("%2e%2e", 400),
                                      ("a\\..\\..", 400), ("etc_link", 403)):
                got, body = await upload(session, server, b"x.png", png_bytes(),
                                         {"subfolder": subfolder})
                assert got == status, (subfolder, body)
            got, body = await upload(session, server, b"x.png", png_bytes(), {"type": "nowhere"})
            assert got == 400, body
            assert input_files(server) == before
    run(scenario())


def _gif_bytes(frames=1, size=(4, 4)) -> bytes:
    out = io.BytesIO()
    images = [Image.new("RGB", size, ((i % 2) * 255, 0, 0)) for i in range(frames)]
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:])
    return out.getvalue()


def test_uploads_that_are_not_images_or_are_bombs_are_refused(server):
    flood = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(flood, format="PNG")  # a few KB, 400 megapixels
    cases = [
        (b"<html><script>alert(1)</script></html>", 400, "invalid_image"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', 400,
         "invalid_image"),
        (_gif_bytes() + b"<html><script>alert(1)</script></html>", 400, "invalid_image"),
        (b"GIF89a<script>alert(1)</script>", 400, "invalid_image"),
        (b"PK\x03\x04" + b"\x00" * 100, 400, "invalid_image"),
        (png_bytes()[:40], 400, "invalid_image"),
        (flood.getvalue(), 413, "image_too_large"),
        (_gif_bytes(frames=1500), 413, "image_too_large"),
    ]

    async def scenario():
        async with aiohttp.ClientSession() as session:
            before = input_files(server)
            for data, status, error_type in cases:
                got, body = await upload(session, server, b"pic.png", data)
                assert got == status, (data[:20], body)
                assert body["error"]["type"] == error_type
            big = b"\x89PNG\r\n\x1a\n" + b"\x00" * (server.state.config.limits.upload + 10)
            got, body = await upload(session, server, b"big.png", big)
            assert got == 413, body
            fields = {f"f{i}": "x" for i in range(20)}
            got, body = await upload(session, server, b"ok.png", png_bytes(), fields)
            assert got == 413 and body["error"]["type"] == "too_many_fields"
            assert input_files(server) == before
            await still_serving(session, server.url)
    run(scenario())


def test_upload_names_never_overwrite_unless_asked(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            a, b = png_bytes((5, 5)), png_bytes((6, 6))
            results = await asyncio.gather(*(upload(session, server, b"same.png", d)
                                             for d in (a, b, a, b)))
            names = {r[1]["name"] for r in results}
            assert all(r[0] == 200 for r in results)
            assert names == {"same.png", "same (1).png"}  # same bytes de-duplicated
            root = server.base / "input"
            assert {(root / n).read_bytes() for n in names} == {a, b}
            status, body = await upload(session, server, b"same.png", b, {"overwrite": "true"})
            assert status == 200 and body["name"] == "same.png"
            assert (root / "same.png").read_bytes() == b
    run(scenario())


def test_upload_mask_applies_alpha_and_checks_the_reference(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            mask = io.BytesIO()
            Image.new("RGBA", (4, 4), (0, 0, 0, 77)).save(mask, format="PNG")
            ref = json.dumps({"filename": "ok.png", "subfolder": "", "type": "input"})
            status, body = await upload(session, server, b"clipspace-mask.png", mask.getvalue(),
                                        {"original_ref": ref}, path="/upload/mask")
            assert status == 200, body
            with Image.open(server.base / "input" / body["name"]) as img:
                assert img.mode == "RGBA" and img.getpixel((0, 0))[3] == 77
            for bad_ref, expected in ((json.dumps({"filename": "../x.png"}), 400),
                                      (json.dumps({"filename": "passwd", "subfolder": "etc_link"}), 403),
                                      (json.dumps({"filename": "missing.png"}), 404),
                                      ("{not json", 400)):
                status, body = await upload(session, server, b"m.png", mask.getvalue(),
                                            {"original_ref": bad_ref}, path="/upload/mask")
                assert status == expected, (bad_ref, body)
    run(scenario())


# 18: /view -----------------------------------------------------------------------------------

def test_view_refusals_and_dangerous_types(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            url = f"{server.url}/view"
            for params, status in (({"filename": "missing.png"}, 404),
                                   ({"filename": "ok.png", "type": "secret"}, 400),
                                   ({"filename": "../../etc/passwd"}, 400),
                                   ({"filename": "/etc/passwd"}, 400),
                                   ({"filename": "..\\x"}, 400),
                                   ({"filename": "a\x00b"}, 400),
                                   ({"filename": "passwd", "subfolder": "../.."}, 400),
                                   ({"filename": "passwd", "subfolder": "etc_link"}, 403),
                                   ({"filename": "ok.png", "type": "input", "channel": "x"}, 400),
                                   ({"filename": ""}, 400)):
                await expect(session, "GET", url, status, params=params)
            for raw in ("/view?filename=%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                        "/view?filename=passwd&subfolder=%252e%252e"):
                async with session.get(server.url + raw) as r:
                    assert r.status == 400, raw
            for name in ("evil.html", "evil.svg"):
                r, text = await expect(session, "GET", url, 200, params={"filename": name})
                assert r.headers["Content-Type"] == "application/octet-stream"
                assert r.headers["Content-Disposition"].startswith("attachment")
                assert r.headers["X-Content-Type-Options"] == "nosniff"
            async with session.get(url, params={"filename": "ok.png", "type": "input"},
                                   headers={"Range": "bytes=0-3"}) as r:
                assert r.status == 206 and await r.read() == b"\x89PNG"
            async with session.get(url, params={"filename": "ok.png [input]"}) as r:
                assert r.status == 200
            await still_serving(session, server.url)
    run(scenario())


# Names the file system itself refuses, and files where folders are expected ---------------------

def test_over_long_names_are_400_everywhere(server):
    long = "a" * 300
    cases = [("GET", f"/view?filename={long}.png&type=input"),
             ("GET", f"/view?filename=a.png&subfolder={long}"),
             ("GET", f"/userdata/{long}"),
             ("POST", f"/userdata/{long}"),
             ("GET", f"/userdata?dir={long}"),
             ("GET", f"/vidgraph/workflows/{long}"),
             ("GET", "/view?filename=a.png&subfolder=" + "a/" * 1500)]

    async def scenario():
        async with aiohttp.ClientSession() as session:
            for method, path in cases:
                await expect(session, method, server.url + path, 400, "invalid_path",
                             data=b"{}", headers={"Content-Type": "application/json"})
            status, body = await upload(session, server, b"x.png", png_bytes(), {"subfolder": long})
            assert status == 400 and body["error"]["type"] == "invalid_path", body
            await expect(session, "GET", f"{server.url}/{long}.js", 404, "not_found")
            await still_serving(session, server.url)
    run(scenario())


def test_a_file_where_a_folder_is_expected_is_409(server):
    json_headers = {"Content-Type": "application/json"}

    async def scenario():
        async with aiohttp.ClientSession() as session:
            (server.base / "input" / "a_folder.png").mkdir()
            status, body = await upload(session, server, b"a_folder.png", png_bytes(),
                                        {"overwrite": "true"})
            assert status == 409 and body["error"]["type"] == "path_conflict", body
            status, body = await upload(session, server, b"x.png", png_bytes(),
                                        {"subfolder": "ok.png/deeper"})
            assert status == 409 and body["error"]["type"] == "path_conflict", body
            url = server.url + "/userdata/"
            await expect(session, "POST", url + "plain.json", 200, data=b"{}", headers=json_headers)
            await expect(session, "POST", url + "folder%2Fx.json", 200, data=b"{}",
                         headers=json_headers)
            await expect(session, "POST", url + "plain.json%2Fx.json", 409, "path_conflict",
                         data=b"{}", headers=json_headers)
            await expect(session, "POST", url + "plain.json/move/folder", 409, "path_conflict",
                         headers=json_headers)
            await expect(session, "POST", url + "plain.json/move/plain.json%2Fy.json", 409,
                         "path_conflict", headers=json_headers)
            assert (server.base / "user" / "default" / "plain.json").read_bytes() == b"{}"
            await still_serving(session, server.url)
    run(scenario())


def test_markup_by_chance_inside_compressed_image_data_is_not_refused():
    """A real photo's compressed bytes contain '<svg' or '<?xml' now and then; only the sniffing window
    at the start and the bytes trailing the image are searched for markup."""
    import struct
    import zlib

    from vidgraph.server.uploads import SNIFF_WINDOW, check_image

    def chunk(kind, payload):
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    width, height = 64, 64
    rows = [bytes(range(i, i + 3 * width)) if i != height // 2 else b"<svg" + bytes(3 * width - 4)
            for i in range(height)]
    rows = [bytes(b % 256 for b in row) for row in rows]
    raw = b"".join(b"\x00" + row for row in rows)  # filter "None": the pixels pass through verbatim
    idat = zlib.compress(raw, 0)  # stored blocks, as incompressible photo data ends up
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    position = data.index(b"<svg")
    assert SNIFF_WINDOW < position < len(data) - SNIFF_WINDOW
    assert check_image(data, max_pixels=10**8, max_frames=10) == ("PNG", (width, height))
    trailing = data + b"<html><script>alert(1)</script></html>"
    try:
        check_image(trailing, max_pixels=10**8, max_frames=10)
    except Exception as error:
        assert getattr(error, "status", None) == 400 and "markup" in str(error)
    else:
        raise AssertionError("a page trailing the image must be refused")
