"""`cpm-nb prepare`: resumable md5-checked downloads, safe extraction, the end-to-end
MPII conversion against small local archives (file:// and a server on 127.0.0.1),
and the synthetic command.  Never the network."""

import hashlib
import http.server
import io
import json
import tarfile
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from cpm_nb.cli import app as cli
from cpm_nb.core import errors
from cpm_nb.data import mpii, pipeline, prepare

# --- a local HTTP server that honours (or ignores) Range requests -------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}
    log: list = []
    honour_range = True
    cut_after: int | None = None  # close the connection after this many bytes (once)

    def do_GET(self):  # noqa: N802
        data = self.files.get(self.path)
        rng = self.headers.get("Range")
        type(self).log.append((self.path, rng))
        if data is None:
            self.send_error(404)
            return
        start = 0
        if rng and self.honour_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if type(self).cut_after is not None:
            n, type(self).cut_after = type(self).cut_after, None
            self.wfile.write(body[:n])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.files, _Handler.log = {}, []
    _Handler.honour_range, _Handler.cut_after = True, None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


PAYLOAD = bytes(range(256)) * 4000  # ~1 MB


def test_download_file_url_with_md5(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    dest = prepare.download(src.as_uri(), tmp_path / "out" / "a.bin", _md5(PAYLOAD),
                            progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "out" / "a.bin.part").exists()
    # a second call finds the verified file and does nothing
    src.unlink()
    assert prepare.download(src.as_uri(), dest, _md5(PAYLOAD), progress=False) == dest


def test_download_md5_mismatch_is_an_error_and_leaves_nothing(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    with pytest.raises(prepare.DownloadError, match="does not match the published"):
        prepare.download(src.as_uri(), tmp_path / "a.bin", "0" * 32, progress=False)
    assert not (tmp_path / "a.bin").exists() and not (tmp_path / "a.bin.part").exists()


def test_download_resumes_with_range(server, tmp_path):
    _, url = server
    _Handler.files["/big.bin"] = PAYLOAD
    dest = tmp_path / "big.bin"
    (tmp_path / "big.bin.part").write_bytes(PAYLOAD[:300_000])  # an interrupted download
    prepare.download(url + "/big.bin", dest, _md5(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert _Handler.log == [("/big.bin", "bytes=300000-")]


def test_download_restarts_when_server_ignores_range(server, tmp_path):
    _, url = server
    _Handler.files["/big.bin"] = PAYLOAD
    _Handler.honour_range = False
    (tmp_path / "big.bin.part").write_bytes(b"stale bytes")
    prepare.download(url + "/big.bin", tmp_path / "big.bin", _md5(PAYLOAD), progress=False)
    assert (tmp_path / "big.bin").read_bytes() == PAYLOAD


def test_download_survives_a_dropped_connection(server, tmp_path):
    _, url = server
    _Handler.files["/big.bin"] = PAYLOAD
    _Handler.cut_after = 200_000
    prepare.download(url + "/big.bin", tmp_path / "big.bin", _md5(PAYLOAD), progress=False,
                     retries=3)
    assert (tmp_path / "big.bin").read_bytes() == PAYLOAD
    assert _Handler.log[0] == ("/big.bin", None)
    assert _Handler.log[1][1] is not None and _Handler.log[1][1].startswith("bytes=")


def test_download_http_error_is_clear(server, tmp_path):
    _, url = server
    with pytest.raises(prepare.DownloadError, match="HTTP 404"):
        prepare.download(url + "/nope.bin", tmp_path / "x.bin", progress=False)


# --- safe extraction ------------------------------------------------------------------


def test_extract_zip_and_tar(tmp_path):
    z = tmp_path / "a.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("folder/file.txt", "hello")
    prepare.extract(z, tmp_path / "out")
    assert (tmp_path / "out/folder/file.txt").read_text() == "hello"
    t = tmp_path / "b.tar.gz"
    with tarfile.open(t, "w:gz") as tf:
        info = tarfile.TarInfo("images/x.txt")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
    prepare.extract(t, tmp_path / "out")
    assert (tmp_path / "out/images/x.txt").read_text() == "hi"


def test_extract_refuses_zip_slip(tmp_path):
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr("../evil.txt", "gotcha")
    with pytest.raises(prepare.UnsafeArchiveError, match="outside"):
        prepare.extract(z, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "hardlink"])
def test_extract_refuses_tar_members_outside(tmp_path, kind):
    t = tmp_path / "evil.tar"
    with tarfile.open(t, "w") as tf:
        info = tarfile.TarInfo({"absolute": "/tmp/evil.txt", "dotdot": "a/../../evil.txt",
                                "symlink": "link", "hardlink": "hard"}[kind])
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "../../etc/passwd"
        elif kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "/etc/passwd"
        else:
            info.size = 4
        tf.addfile(info, io.BytesIO(b"evil") if info.isfile() else None)
    with pytest.raises(prepare.UnsafeArchiveError, match="refusing to extract"):
        prepare.extract(t, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_extract_rejects_non_archives(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"<html>not found</html>")
    with pytest.raises(errors.DataError, match="neither a zip nor a tar"):
        prepare.extract(junk, tmp_path / "out")


# --- end to end: prepare mpii against local archives ---------------------------------


def _points(x0, y0):
    return [(j, np.uint16(x0 + 3 * (j % 4)), np.uint16(y0 + 6 * j), np.uint8(1))
            for j in range(16)]


@pytest.fixture
def mpii_mirror(tmp_path, server):
    """Small MPII-like downloads: the annotation zip, an image tar.gz, the split zip."""
    httpd, url = server
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (160, 200, 3), dtype=np.uint8)
    images = {"a.jpg": photo, "b.jpg": photo[..., 0], "c.jpg": photo}  # b: grayscale
    person = {"head_box": (90, 10, 110, 30), "scale": 0.4, "objpos": (100, 80),
              "points": _points(90, 20)}
    release = [
        {"name": "a.jpg", "people": [person, {**person, "objpos": (60, 80)}]},
        {"name": "b.jpg", "people": [person, {**person, "scale": 0.0}]},
        {"name": "c.jpg", "people": [{k: v for k, v in person.items() if k != "points"}]},
        {"name": "gone.jpg", "people": [person]},
        {"name": "t.jpg", "train": False, "people": [{"scale": 1.0, "objpos": (5, 5)}]},
    ]
    src = tmp_path / "mirror"
    src.mkdir()
    mat = mpii.write_release_mat(src / prepare.ANNOTATION_FILE, release)
    with zipfile.ZipFile(src / "ann.zip", "w") as zf:
        zf.write(mat, f"mpii_human_pose_v1_u12_2/{prepare.ANNOTATION_FILE}")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, arr in images.items():
            jpg = io.BytesIO()
            Image.fromarray(arr).save(jpg, format="JPEG")
            info = tarfile.TarInfo(f"images/{name}")
            info.size = len(jpg.getvalue())
            tf.addfile(info, io.BytesIO(jpg.getvalue()))
    _Handler.files["/images.tar.gz"] = buf.getvalue()
    split = src / "detections.mat"
    savemat(split, {"RELEASE_img_index": np.array([[2]]), "RELEASE_person_index": np.array([[1]])})
    with zipfile.ZipFile(src / "split.zip", "w") as zf:
        zf.write(split, "data/detections.mat")
    return {"ann": (src / "ann.zip").as_uri(), "images": url + "/images.tar.gz",
            "images_md5": _md5(buf.getvalue()), "split": (src / "split.zip").as_uri()}


def test_prepare_mpii_end_to_end(mpii_mirror, tmp_path, capsys):
    root = tmp_path / "mpii"
    argv = ["prepare", "mpii", "--root", str(root), "--input-size", "32", "--quiet",
            "--annotations-url", mpii_mirror["ann"], "--images-url", mpii_mirror["images"],
            "--images-md5", mpii_mirror["images_md5"], "--split-url", mpii_mirror["split"]]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "train kept      2   skipped     3" in out
    assert "val   kept      1   skipped     0" in out
    for line in ("skipped: missing image file: 1", "skipped: zero or negative scale: 1",
                 "skipped: no annotated joints: 1", "fixed:   grayscale images"):
        assert line in out
    assert (root / "images" / "a.jpg").is_file()
    assert (root / "tfrecords-32" / "val-00000-of-00001.tfrecord").is_file()
    val = next(iter(pipeline.make_dataset(root / "tfrecords-32", "val", batch_size=4,
                                          with_meta=True)))
    assert val[3]["img_index"].numpy().tolist() == [2]  # the split file's person
    # a second run downloads nothing and gives the same summary as JSON
    _Handler.log.clear()
    assert cli.main(argv + ["--json-out", str(tmp_path / "s.json")]) == 0
    assert _Handler.log == []
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["splits"]["train"]["kept"] == 2 and summary["validation_people"] == 1


def test_prepare_mpii_wrong_md5_fails_cleanly(mpii_mirror, tmp_path, capsys):
    argv = ["prepare", "mpii", "--root", str(tmp_path / "m"), "--quiet", "--input-size", "32",
            "--annotations-url", mpii_mirror["ann"], "--images-url", mpii_mirror["images"],
            "--split-url", mpii_mirror["split"]]  # the published md5 cannot match
    assert cli.main(argv) == 2
    assert "does not match the published b6bc9c6869d3f035a5570b2e68ec84c4" in \
        capsys.readouterr().err


def test_prepare_mpii_no_download_names_the_url(tmp_path, capsys):
    assert cli.main(["prepare", "mpii", "--root", str(tmp_path), "--no-download"]) == 2
    err = capsys.readouterr().err
    assert "--no-download" in err and "mpii_human_pose_v1_u12_2.zip" in err


def test_prepare_mpii_library_errors_talk_about_data_not_flags(tmp_path):
    with pytest.raises(prepare.NotDownloadedError) as caught:
        prepare.prepare_mpii(tmp_path, 32, sources=prepare.MpiiSources(download=False))
    message = str(caught.value)
    assert isinstance(caught.value, errors.DataError) and "--" not in message
    assert "mpii_human_pose_v1_u12_2.zip" in message and prepare.MPII_BASE_URL in message
    assert issubclass(prepare.DownloadError, errors.DataError)
    assert issubclass(prepare.UnsafeArchiveError, errors.DataError)


def test_prepare_synthetic_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CPM_NB_DATA", str(tmp_path))
    assert cli.main(["--profile", "fast", "prepare", "synthetic", "--quiet", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 96 and result["input_size"] == 64
    assert result["splits"]["train"]["kept"] == result["people"] - result["splits"]["val"]["kept"]
    assert result["out"].startswith(str(tmp_path))
    assert cli.main(["--profile", "fast", "prepare", "synthetic", "--quiet"]) == 0
    assert "train kept" in capsys.readouterr().out


def test_prepare_mpii_from_local_files_without_downloading(mpii_mirror, tmp_path, capsys):
    src = tmp_path / "mirror"
    images = tmp_path / "my_images"
    images.mkdir()
    Image.fromarray(np.zeros((160, 200, 3), np.uint8)).save(images / "a.jpg")
    argv = ["prepare", "mpii", "--root", str(tmp_path / "m"), "--no-download", "--quiet",
            "--input-size", "32", "--annotations", str(src / prepare.ANNOTATION_FILE),
            "--split-file", str(src / "detections.mat"), "--images", str(images)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "train kept      2   skipped     3" in out  # gone.jpg, b.jpg's zero scale, c.jpg
    assert "val   kept      0   skipped     1" in out  # b.jpg is not in my_images
    assert out.count("skipped: missing image file: 1") == 2
    assert _Handler.log == []
