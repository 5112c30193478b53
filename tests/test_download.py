"""`tempo download`: a real HTTP server on 127.0.0.1 serving good, hostile and broken archives.

No mocks of our download code: every case runs the command (in-process through the
`cli` fixture, once as a subprocess) against http.server in a thread that supports
`Range` requests and can drop a connection half way.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from tempo_cli.data import archive
from tempo_cli.data import download as dl
from tempo_cli.data.safe_tar import UnsafeArchiveError, safe_extract
from tempo_cli.models.backbones import build_resnet
from tempo_cli.models.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]

PAYLOAD = os.urandom(300_000)  # incompressible, so "half way" is half the transfer


# ----------------------------------------------------------------------------- archives


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:xz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    return info


def _dir(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, None


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def _special(name: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    return info, None


GOOD_MEMBERS = [
    _dir("ASL-big"),
    _dir("ASL-big/frames"),
    (_file("ASL-big/frames/0001.png"), PAYLOAD),
    (_file("ASL-big/test/A/1.png"), b"png"),
    _link("ASL-big/first.png", "frames/0001.png"),  # a symlink that stays inside is fine
    (_file("ASL_mask/annotations/instances_Test.json"), b'{"images": []}'),
]


def _hostile(extra: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> bytes:
    return _tar([(_file("ASL-big/ok.txt"), b"ok"), *extra], mode)


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    base = tmp_path_factory.mktemp("dl-hostile")
    good = _tar(GOOD_MEMBERS)
    abs_target = str(base / "abs-escape.txt")
    return {
        "good.tar.xz": good,
        "drop.tar.xz": good,
        "stall.tar.xz": good,
        "norange.tar.xz": good,
        "good.tar.gz": _tar(GOOD_MEMBERS, "w:gz"),
        "good.tar.bz2": _tar(GOOD_MEMBERS, "w:bz2"),
        "good.tar": _tar(GOOD_MEMBERS, "w"),
        "models.tar.gz": _tar(
            [_dir("models"), (_file("models/tempo.pth"), b"w"), (_file("models/x.pkl"), b"p")],
            "w:gz",
        ),
        "notmodels.tar": _tar([(_file("README"), b"hello")], "w"),
        "truncated.tar.xz": good[: len(good) // 2],
        "garbage.tar.xz": os.urandom(4096),
        "dotdot.tar": _hostile([(_file("ASL-big/../../../../dotdot-escape.txt"), b"evil")]),
        "absolute.tar.gz": _hostile([(_file(abs_target), b"evil")], "w:gz"),
        "symlink.tar.bz2": _hostile(
            [_link("ASL-big/escape", "../../.."), (_file("ASL-big/escape/pwned.txt"), b"x")],
            "w:bz2",
        ),
        "abs-symlink.tar": _hostile([_link("ASL-big/passwd", "/etc/passwd")]),
        # Lexically inside ("ASL-big/d/b/b2" + "../.." = "ASL-big/d"), but b is a link to
        # "..", so b2 really points two levels above ASL-big: only realpath sees that.
        "symlink-chain.tar": _hostile(
            [_dir("ASL-big/d"), _link("ASL-big/d/b", ".."), _link("ASL-big/d/b/b2", "../..")]
        ),
        "hardlink.tar": _hostile([_link("ASL-big/h", "../../etc/passwd", tarfile.LNKTYPE)]),
        "device.tar": _hostile([_special("ASL-big/null", tarfile.CHRTYPE)]),
        "fifo.tar": _hostile([_special("ASL-big/pipe", tarfile.FIFOTYPE)]),
    }


# ----------------------------------------------------------------------------- server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    files: dict[str, bytes]
    requests: list[tuple[str, str | None]]
    drop_first: set[str]  # drop half way through the first full-body request
    stalling: set[str]  # drop every request after its headers (no body)
    seen: dict[str, int]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # http.server's naming
        s = self.server
        name = self.path.lstrip("/")
        rng = self.headers.get("Range")
        s.requests.append((name, rng))
        s.seen[name] = s.seen.get(name, 0) + 1
        if name == "forbidden.tar.xz":
            self.send_error(403, "Forbidden")
            return
        data = s.files.get(name)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        if rng and rng.startswith("bytes=") and name != "norange.tar.xz":
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if name in s.stalling and s.seen[name] > 1:
            return  # headers only, then the connection closes
        if name in s.drop_first and s.seen[name] == 1 or name in s.stalling:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            return  # HTTP/1.0: returning closes the connection half way
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server(archives: dict[str, bytes]) -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.files = archives
    srv.requests = []
    srv.drop_first = {"drop.tar.xz"}
    srv.stalling = set()
    srv.seen = {}
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def url(server: _Server) -> Callable[[str], str]:
    port = server.server_address[1]
    return lambda name: f"http://127.0.0.1:{port}/{name}"


@pytest.fixture
def closed_url() -> str:
    """A URL on a port nobody listens on: any network access fails fast."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/data.tar.xz"


@pytest.fixture
def area(tmp_path: Path) -> Path:
    """Parent of the destination D: nothing but D may appear in it."""
    p = tmp_path / "area"
    p.mkdir()
    return p


def _all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("tempo: error: ") and "Traceback" not in err
    return lines[0]


# ----------------------------------------------------------------------------- good paths


@pytest.mark.parametrize("name", ["good.tar.xz", "good.tar.gz", "good.tar.bz2", "good.tar"])
def test_good_archive_unpacks_and_records_manifest(
    cli, url, area: Path, archives: dict[str, bytes], name: str
) -> None:
    dest = area / "D"
    sha = hashlib.sha256(archives[name]).hexdigest()
    r = cli("download", "asl", "--url", url(name), "--dest", dest, "--sha256", sha.upper())
    assert r.code == 0, r.err
    assert (dest / "ASL-big" / "frames" / "0001.png").read_bytes() == PAYLOAD
    assert (dest / "ASL-big" / "first.png").resolve() == (dest / "ASL-big/frames/0001.png")
    assert (dest / "ASL_mask" / "annotations" / "instances_Test.json").is_file()
    manifest = json.loads((dest / archive.MANIFEST).read_text())
    assert manifest["asl"]["sha256"] == sha
    assert manifest["asl"]["entries"] == ["ASL-big", "ASL_mask"]
    # Only the data and the manifest: no archive, no .part, no staging folder.
    assert sorted(p.name for p in dest.iterdir()) == ["ASL-big", "ASL_mask", archive.MANIFEST]
    assert [p.name for p in area.iterdir()] == ["D"]


def test_present_says_so_without_network_and_force_downloads_again(
    cli, url, server: _Server, closed_url: str, area: Path
) -> None:
    dest = area / "D"
    assert cli("download", "asl", "--url", url("good.tar.xz"), "--dest", dest).code == 0
    before = len(server.requests)
    r = cli("download", "asl", "--url", closed_url, "--dest", dest)
    assert r.code == 0, r.err
    assert "already" in r.err and "ASL-big" in r.err
    (dest / "ASL-big" / "stale.txt").write_text("old")
    r = cli("download", "asl", "--url", url("good.tar.xz"), "--dest", dest, "--force")
    assert r.code == 0, r.err
    assert len(server.requests) == before + 1
    assert not (dest / "ASL-big" / "stale.txt").exists()  # replaced as a whole
    assert sorted(p.name for p in dest.iterdir()) == ["ASL-big", "ASL_mask", archive.MANIFEST]


def test_drop_half_way_then_resume_with_range(cli, url, server: _Server, area: Path) -> None:
    dest = area / "D"
    r = cli("download", "asl", "--url", url("drop.tar.xz"), "--dest", dest)
    assert r.code == 0, r.err
    reqs = [rng for name, rng in server.requests if name == "drop.tar.xz"]
    assert len(reqs) == 2 and reqs[0] is None
    assert reqs[1] is not None and reqs[1].startswith("bytes=") and reqs[1] != "bytes=0-"
    assert (dest / "ASL-big" / "frames" / "0001.png").read_bytes() == PAYLOAD
    assert not list(dest.glob("*.part"))


def test_gives_up_keeps_part_and_next_run_resumes(
    cli, url, server: _Server, area: Path, archives: dict[str, bytes]
) -> None:
    dest = area / "D"
    server.stalling.add("stall.tar.xz")
    try:
        r = cli("download", "asl", "--url", url("stall.tar.xz"), "--dest", dest)
    finally:
        server.stalling.discard("stall.tar.xz")
    assert r.code == 1
    line = _one_error_line(r.err)
    assert "stall.tar.xz" in line and "resume" in line
    (part,) = dest.glob("*.part")
    kept = part.stat().st_size
    assert 0 < kept < len(archives["stall.tar.xz"])
    r = cli("download", "asl", "--url", url("stall.tar.xz"), "--dest", dest)
    assert r.code == 0, r.err
    last = [rng for name, rng in server.requests if name == "stall.tar.xz"][-1]
    assert last == f"bytes={kept}-"
    assert sorted(p.name for p in dest.iterdir()) == ["ASL-big", "ASL_mask", archive.MANIFEST]


def test_complete_part_answered_416_is_used(
    cli, url, area: Path, archives: dict[str, bytes]
) -> None:
    """Interrupted during extraction: the whole archive is in .part; no byte re-sent."""
    dest = area / "D"
    dest.mkdir()
    src = dl.TARGETS["asl"].source(url("good.tar.xz"))
    archive.part_path(src, dest).write_bytes(archives["good.tar.xz"])
    r = cli("download", "asl", "--url", src.url, "--dest", dest)
    assert r.code == 0, r.err
    assert sorted(p.name for p in dest.iterdir()) == ["ASL-big", "ASL_mask", archive.MANIFEST]


def test_server_without_ranges_restarts_from_zero(cli, url, area: Path) -> None:
    dest = area / "D"
    dest.mkdir()
    src = dl.TARGETS["asl"].source(url("norange.tar.xz"))
    archive.part_path(src, dest).write_bytes(b"stale bytes of another attempt")
    r = cli("download", "asl", "--url", src.url, "--dest", dest)
    assert r.code == 0, r.err
    assert (dest / "ASL-big" / "frames" / "0001.png").read_bytes() == PAYLOAD


def test_models_go_to_model_dir_and_single_top_folder_is_unwrapped(
    cli, url, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMPO_MODEL_DIR", str(tmp_path / "zoo"))
    r = cli("download", "models", "--url", url("models.tar.gz"))
    assert r.code == 0, r.err
    assert (tmp_path / "zoo" / "tempo.pth").read_bytes() == b"w"
    assert (tmp_path / "zoo" / "x.pkl").is_file()


def test_file_url_is_read_in_place(cli, area: Path, tmp_path: Path, archives) -> None:
    src = tmp_path / "copied" / "data.tar.xz"
    src.parent.mkdir()
    src.write_bytes(archives["good.tar.xz"])
    r = cli("download", "asl", "--url", src.as_uri(), "--dest", area / "D")
    assert r.code == 0, r.err
    assert (area / "D" / "ASL-big" / "test" / "A" / "1.png").is_file()
    assert src.is_file()  # the user's copy stays
    r = cli("download", "asl", "--url", (tmp_path / "nope.tar.xz").as_uri(), "--dest", area / "E")
    assert r.code == 1 and "no such file" in _one_error_line(r.err)
    assert not (area / "E").exists()


# ----------------------------------------------------------------------------- failures


HOSTILE = [
    ("dotdot.tar", "'..'"),
    ("absolute.tar.gz", "absolute"),
    ("symlink.tar.bz2", "outside"),
    ("abs-symlink.tar", "absolute"),
    ("symlink-chain.tar", "outside"),
    ("hardlink.tar", "hard link"),
    ("device.tar", "device"),
    ("fifo.tar", "FIFO"),
]


@pytest.mark.parametrize(("name", "why"), HOSTILE)
@pytest.mark.parametrize("dest_exists", [False, True])
def test_hostile_archives_are_refused_without_trace(
    cli, url, area: Path, tmp_path: Path, name: str, why: str, dest_exists: bool
) -> None:
    dest = area / "D"
    if dest_exists:
        dest.mkdir()
    r = cli("download", "asl", "--url", url(name), "--dest", dest)
    assert r.code == 1
    line = _one_error_line(r.err)
    assert "refusing" in line and why in line, line
    # Nothing in D (removed when this run created it), nothing beside or above it.
    assert _all_files(area) == (["D"] if dest_exists else [])
    assert not (tmp_path / "dotdot-escape.txt").exists()
    assert not list(tmp_path.parent.glob("*/abs-escape.txt"))


@pytest.mark.parametrize(
    ("name", "sha", "words"),
    [
        ("truncated.tar.xz", None, "damaged or truncated"),
        ("garbage.tar.xz", None, "damaged or truncated"),
        ("notmodels.tar", None, "does not hold"),
        ("good.tar.xz", "0" * 64, "checksum mismatch"),
        ("missing.tar.xz", None, "HTTP 404"),
        ("forbidden.tar.xz", None, "HTTP 403"),
    ],
)
def test_broken_sources_fail_in_one_line_without_trace(
    cli, url, area: Path, name: str, sha: str | None, words: str
) -> None:
    dest = area / "D"
    args = ["download", "asl", "--url", url(name), "--dest", dest]
    r = cli(*args, *(["--sha256", sha] if sha else []))
    assert r.code == 1
    line = _one_error_line(r.err)
    assert words in line and name in line, line
    assert _all_files(area) == []


def test_unreachable_names_url_and_suggests_url(cli, closed_url: str, area: Path) -> None:
    r = cli("download", "asl", "--url", closed_url, "--dest", area / "D")
    assert r.code == 1
    line = _one_error_line(r.err)
    assert closed_url in line and "--url" in line and "file://" in line
    assert _all_files(area) == []


def test_google_drive_unreachable(
    cli, area: Path, closed_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default source goes through gdown; a dead proxy stands in for no network."""
    proxy = closed_url.rsplit("/", 1)[0]
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(var, proxy)
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    r = cli("download", "asl", "--dest", area / "D")
    assert r.code == 1
    line = _one_error_line(r.err)
    assert "drive.google.com" in line and dl.TARGETS["asl"].drive_id in line and "--url" in line
    assert _all_files(area) == []


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["bogus"], "asl"),
        (["all", "--url", "http://x/a.tar.xz"], "--url"),
        (["demo", "--sha256", "0" * 64], "--sha256"),
        (["asl", "--sha256", "xyz"], "--sha256"),
        (["asl", "--url", "ftp://host/a.tar"], "--url"),
        (["asl", "--split", "test"], "--split"),
        (["masks", "--sha256", "0" * 64], "--sha256"),
        (["all", "--url", "http://x/"], "--url"),
        (["masks", "--split", "val"], "--split"),
    ],
)
def test_bad_usage_exits_2(cli, args: list[str], option: str) -> None:
    r = cli("download", *args)
    assert r.code == 2
    assert option in _one_error_line(r.err)


def test_subprocess_shows_no_traceback(url, area: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "tempo_cli", "download", "asl"]
        + ["--url", url("symlink.tar.bz2"), "--dest", str(area / "D")],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
    )
    assert r.returncode == 1, r.stderr
    assert "refusing" in _one_error_line(r.stderr)
    assert _all_files(area) == []


def test_demo_target(cli, request: pytest.FixtureRequest) -> None:
    pytest.importorskip("tempo_cli.data.demo")
    demo_root: Path = request.getfixturevalue("demo_root")
    r = cli("download", "demo")
    assert r.code == 0, r.err
    assert (demo_root / "frames").is_dir()


# ----------------------------------------------------------------------------- extractor


def test_safe_extract_refuses_member_under_extracted_symlink(tmp_path: Path) -> None:
    """A link inside is fine, but a path that walks through it must stay inside too."""
    data = _tar([_link("a", "."), (_file("a/b.txt"), b"b")], "w")
    (tmp_path / "x.tar").write_bytes(data)
    (tmp_path / "into").mkdir()
    assert safe_extract(tmp_path / "x.tar", tmp_path / "into") == 2
    assert (tmp_path / "into" / "b.txt").read_bytes() == b"b"
    data = _tar([_link("up", "../.."), (_file("up/c.txt"), b"c")], "w")
    (tmp_path / "y.tar").write_bytes(data)
    (tmp_path / "into2").mkdir()
    with pytest.raises(UnsafeArchiveError):
        safe_extract(tmp_path / "y.tar", tmp_path / "into2")
    assert not (tmp_path.parent / "c.txt").exists()


# ----------------------------------------------------------------------------- hand masks


class _TreeHandler(SimpleHTTPRequestHandler):
    """Serves the folder given to the server, recording each requested path."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # http.server's naming
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        super().do_GET()


@pytest.fixture(scope="module")
def mask_tree(asl_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`good/` and `bad/`: the 120 Test masks of the sample where the reference repository
    has them; in `bad/` one file has a flipped byte and one is cut short."""
    root = tmp_path_factory.mktemp("mask-mirror")
    rel = Path("xai/relative_relevance/gtFine/Test")
    for tree in ("good", "bad"):
        (root / tree / rel).mkdir(parents=True)
        for p in sorted((asl_sample / "gtFine" / "Test").glob("*_gtFine_color.png")):
            (root / tree / rel / p.name).write_bytes(p.read_bytes())
    bad = sorted((root / "bad" / rel).iterdir())
    data = bytearray(bad[7].read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad[7].write_bytes(bytes(data))
    bad[9].write_bytes(bad[9].read_bytes()[:-100])
    return root


@pytest.fixture(scope="module")
def mask_server(mask_tree: Path) -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_TreeHandler, directory=str(mask_tree))
    )
    srv.daemon_threads = True
    srv.paths = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _base(srv: ThreadingHTTPServer, tree: str) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/{tree}"


def _test_masks() -> dict[str, str]:
    """Path under hand-masks/ -> sha256, for the manifest's Test files."""
    from tempo_cli.data.masks import load_manifest

    return {str(f.local): f.sha256 for f in load_manifest().select("test")}


def _installed(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def test_masks_from_local_server_are_checked_and_recorded(
    cli, mask_server, area: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMPO_DATA_DIR", str(area / "data"))
    mask_server.paths.clear()
    r = cli("download", "masks", "--split", "test", "--url", _base(mask_server, "good"))
    assert r.code == 0, r.err
    dest = area / "data"
    assert _installed(dest / "hand-masks") == _test_masks()  # 120 files, every sha256
    assert len(mask_server.paths) == 120
    # Only the masks and the manifest: no staging folder, no temporary file.
    assert sorted(p.name for p in dest.iterdir()) == ["hand-masks", archive.MANIFEST]
    entry = json.loads((dest / archive.MANIFEST).read_text())["masks"]
    assert entry["files"] == entry["fetched"] == 120 and entry["split"] == "test"
    assert entry["entries"] == ["hand-masks"] and len(entry["commit"]) == 40

    # Present: no request at all; a missing and a damaged file: only those two again.
    r = cli("download", "masks", "--split", "test", "--url", _base(mask_server, "good"))
    assert r.code == 0 and "already" in r.err and len(mask_server.paths) == 120
    files = sorted((dest / "hand-masks" / "gtFine" / "Test").iterdir())
    files[0].unlink()
    files[1].write_bytes(b"not a png")
    r = cli("download", "masks", "--split", "test", "--url", _base(mask_server, "good"))
    assert r.code == 0, r.err
    assert sorted(mask_server.paths[120:]) == sorted(
        f"/good/xai/relative_relevance/gtFine/Test/{p.name}" for p in files[:2]
    )
    assert _installed(dest / "hand-masks") == _test_masks()


@pytest.mark.slow
def test_relevance_finds_downloaded_masks_without_masks_option(
    cli, mask_tree: Path, asl_sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tempo explain relevance` without --masks, on photos whose folder holds no masks."""
    from tempo_cli.explain.relevance import resolve_masks_dir

    monkeypatch.setenv("TEMPO_DATA_DIR", str(tmp_path / "data"))
    data = tmp_path / "photos"
    for cls in sorted(p for p in (asl_sample / "test").iterdir() if p.is_dir()):
        (data / "test" / cls.name).mkdir(parents=True)
        first = sorted(cls.glob("*.png"))[0]
        (data / "test" / cls.name / first.name).symlink_to(first.resolve())
    ckpt = tmp_path / "clf.pt"
    save_checkpoint(ckpt, arch="resnet18", backbone=build_resnet("resnet18"),
                    linear=torch.nn.Linear(512, 24))  # fmt: skip
    args = ["explain", "relevance", "--path", ckpt, "--data", data, "--image-size", "32"]
    r = cli(*args, "--out", tmp_path / "none", "--quiet")
    assert r.code == 1
    line = _one_error_line(r.err)
    assert "tempo download masks" in line and "--masks" in line

    r = cli("download", "masks", "--split", "test", "--url", (mask_tree / "good").as_uri())
    assert r.code == 0, r.err
    assert resolve_masks_dir(None, data) == (tmp_path / "data" / "hand-masks", False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # LRP's small convolutions: one thread is faster on 2 shared cores
    try:
        r = cli(*args, "--out", tmp_path / "rr", "--quiet")
    finally:
        torch.set_num_threads(threads)
    assert r.code == 0, r.err
    metrics = json.loads((tmp_path / "rr" / "metrics.json").read_text())
    assert metrics["models"][0]["n"] == 24 and metrics["skipped_no_mask"] == 0


def test_masks_from_a_file_url_clone(cli, mask_tree: Path, area: Path) -> None:
    r = cli("download", "masks", "--split", "test", "--url", (mask_tree / "good").as_uri(),
            "--dest", area / "D", "--quiet")  # fmt: skip
    assert r.code == 0, r.err
    assert _installed(area / "D" / "hand-masks") == _test_masks()


@pytest.mark.parametrize(
    ("tree", "split", "words"),
    [
        ("bad", "test", "refused"),  # a flipped byte and a short file
        ("good", "all", "HTTP 404"),  # the mirror has no Train masks
        ("nowhere", "test", "HTTP 404"),
    ],
)
def test_masks_bad_source_leaves_nothing_behind(
    cli, mask_server, area: Path, tree: str, split: str, words: str
) -> None:
    r = cli("download", "masks", "--split", split, "--url", _base(mask_server, tree),
            "--dest", area / "D")  # fmt: skip
    assert r.code == 1
    line = _one_error_line(r.err)
    assert words in line and "nothing was installed" in line and "--url" in line, line
    if tree == "bad":
        assert "sha256" in line and "_gtFine_color.png" in line
    assert _all_files(area) == []
    # An existing destination keeps exactly what it had.
    (area / "D").mkdir()
    (area / "D" / "keep.txt").write_text("mine")
    r = cli("download", "masks", "--split", split, "--url", _base(mask_server, tree),
            "--dest", area / "D")  # fmt: skip
    assert r.code == 1
    assert _all_files(area) == ["D", "D/keep.txt"]


def test_masks_unreachable_names_url(cli, closed_url: str, area: Path) -> None:
    base = closed_url.rsplit("/", 1)[0]
    r = cli("download", "masks", "--url", base, "--dest", area / "D")
    assert r.code == 1
    line = _one_error_line(r.err)
    assert base in line and "--url" in line and "nothing was installed" in line
    assert _all_files(area) == []


def test_registries_name_what_the_settings_accept() -> None:
    from typing import get_args

    from tempo_cli.settings.download import Target

    assert set(get_args(Target)) == set(dl.TARGETS) | {"all"}


def test_packaged_mask_manifest_is_the_projects_and_declared_package_data() -> None:
    import fnmatch
    from importlib import resources

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    packaged = resources.files("tempo_cli.data").joinpath("reference_masks.json").read_text()
    shared = REPO.parent / "shared" / "data" / "reference-masks.json"
    if shared.is_file():
        assert json.loads(packaged) == json.loads(shared.read_text())
    # Every data file inside the package is declared, so a wheel carries it.
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    declared = config["tool"]["setuptools"]["package-data"]
    src = REPO / "src"
    for p in (src / "tempo_cli").rglob("*"):
        if not p.is_file() or p.suffix in (".py", ".pyc", ".typed"):
            continue
        package = ".".join(p.parent.relative_to(src).parts)
        patterns = declared.get(package, []) + declared.get("*", [])
        assert any(fnmatch.fnmatch(p.name, pat) for pat in patterns), p
