"""The streamed ZIP: chunks joined are a valid archive that unzip tools read."""

from __future__ import annotations

import io
import json
import zipfile

from capability_service.plugins.ozon.zipstream import ZipStreamWriter
from tests.support.data import read_image


def test_members_and_a_streamed_manifest_make_a_valid_archive() -> None:
    photo = read_image("rocket.jpg")
    writer = ZipStreamWriter()
    chunks = [writer.add("A/01.jpg", photo), writer.add(writer.unique("A/01.jpg"), b"second")]
    parts = [b'{"images": [', b",".join(b'{"n": %d}' % n for n in range(5000)), b"]}"]
    chunks.extend(writer.add_stream("manifest.json", parts))
    chunks.append(writer.close())
    assert all(isinstance(chunk, bytes) for chunk in chunks)
    # Nothing of a member is held back once it is written.
    assert len(chunks[0]) > len(photo)
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == ["A/01.jpg", "A/01~2.jpg", "manifest.json"]
        assert archive.read("A/01.jpg") == photo
        assert len(json.loads(archive.read("manifest.json"))["images"]) == 5000
        assert archive.getinfo("manifest.json").compress_type == zipfile.ZIP_DEFLATED


def test_unique_names_get_a_counter_before_the_extension() -> None:
    writer = ZipStreamWriter()
    assert [writer.unique("A/01.jpg") for _ in range(3)] == ["A/01.jpg", "A/01~2.jpg", "A/01~3.jpg"]
    assert writer.unique("README") == "README" and writer.unique("README") == "README~2"
