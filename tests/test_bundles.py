"""`slimbench export` bundles and `slimbench leaderboard --from`: runs from many machines in one
site, rows of different devices never merged, and hostile or broken bundles rejected whole."""
from __future__ import annotations

import copy
import io
import json
import tarfile

import pytest

from slimbench.leaderboard.bundle import BundleError, read_bundle, write_bundle
from slimbench.suite.cli import main


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A results folder with a baseline and one compressed run of the toy task."""
    import os

    results = tmp_path_factory.mktemp("store")
    old = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        assert main(["run", "--tasks", "toy", "--profile", "quick", "--method", "torch.dynamic_int8",
                     "--results-dir", str(results), "--no-progress"]) == 0
    finally:
        if old is not None:
            os.environ["MLFLOW_TRACKING_URI"] = old
    return results


def _export(store, out, *extra) -> int:
    return main(["export", "--results-dir", str(store), "--out", str(out), *extra])


def test_export_then_leaderboard_from_bundles_of_two_machines(store, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = tmp_path / "a.tar.gz"
    assert _export(store, first, "--artifacts") == 0
    bundle = read_bundle(first)
    assert len(bundle.runs) == 2 and {r["method"]["name"] for r in bundle.runs} == {"baseline", "torch.dynamic_int8"}
    assert all(r["provenance"]["source"] == "a.tar.gz" for r in bundle.runs)
    assert all(item["artifacts"] and any(a["path"].endswith("model.safetensors") for a in item["artifacts"])
               for item in bundle.manifest["runs"])
    assert _export(store, tmp_path / "f.tar.gz", "--method", "baseline") == 0
    assert [r["method"]["name"] for r in read_bundle(tmp_path / "f.tar.gz").runs] == ["baseline"]

    # the same runs measured on another machine: same run keys' configs, another CPU
    other = []
    for rec in bundle.runs:
        rec = copy.deepcopy(rec)
        rec["device"]["name"], rec["run_key"] = "Other CPU 9000", rec["run_key"] + "-other"
        rec["metrics"]["accuracy"] = 0.5
        other.append((rec["provenance"]["mlflow_run_id"], rec, {}))
    second = write_bundle(tmp_path / "b.tar.gz", other, {"experiment": "slimbench"})
    site = tmp_path / "site"
    capsys.readouterr()
    assert main(["leaderboard", "--from", str(first), "--from", str(second), "--out", str(site)]) == 0
    rows = json.loads((site / "rows.json").read_text())["rows"]
    sections = {r["section_device"] for r in rows}
    assert len(sections) == 2 and any("Other CPU 9000" in s for s in sections)
    for sec in sections:  # each machine's rows compare with that machine's own baseline
        mine = [r for r in rows if r["section_device"] == sec]
        assert {r["method"] for r in mine} == {"baseline", "torch.dynamic_int8"}
        assert all(r["accuracy_delta"] is not None for r in mine)
    page = next(p for p in (site / "runs").iterdir() if "b.tar.gz" in p.read_text())
    assert "Other CPU 9000" in page.read_text()
    # a bundle and the store itself together: the store's runs and the bundle's copies are the same run keys
    assert main(["leaderboard", "--from", str(store), "--from", str(first), "--out", str(tmp_path / "s2")]) == 0
    assert len(json.loads((tmp_path / "s2" / "rows.json").read_text())["rows"]) == len(
        [r for r in rows if "Other" not in r["section_device"]])


def _tar(path, members) -> str:
    """A gzipped tar from (name, bytes | None, kind) members; kind: file | symlink | hardlink."""
    with tarfile.open(path, "w:gz") as tar:
        for name, body, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, "manifest.json"
                tar.addfile(info)
            else:
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
    return str(path)


def _good_members(tmp_path):
    """The members of a valid one-run bundle, to tamper with."""
    rec = {"run_key": "k", "status": "FINISHED", "task": {"name": "toy"}, "method": {"name": "baseline"},
           "device": {"type": "cpu"}, "metrics": {"accuracy": 0.9}}
    good = write_bundle(tmp_path / "good.tar.gz", [("r1", rec, {})], {})
    with tarfile.open(good) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def _manifest(members) -> dict:
    return json.loads(members["manifest.json"])


@pytest.mark.parametrize("case,reason", [
    ("traversal", "escapes the bundle"),
    ("absolute", "is absolute"),
    ("symlink", "link or special file"),
    ("hardlink", "link or special file"),
    ("tampered", "does not match its SHA-256"),
    ("resized", "the manifest says"),
    ("unlisted", "is not listed in manifest.json"),
    ("missing", "which the bundle does not hold"),
    ("no_manifest", "no manifest.json"),
    ("not_a_record", "has no 'run_key'"),
    ("bad_json", "is not valid JSON"),
    ("wrong_format", "does not name the format"),
    ("not_tar", "not a readable tar archive"),
    ("truncated", "not a readable tar archive"),
    ("bad_types", "'provenance' is not an object"),
    ("deep", "is not valid JSON"),
])
def test_hostile_or_broken_bundles_are_rejected_with_the_reason(tmp_path, case, reason):
    members = _good_members(tmp_path)
    run_json = "runs/r1/run.json"
    extra: list = []
    if case == "traversal":
        extra = [("runs/../../evil.txt", b"x", "file")]
    elif case == "absolute":
        extra = [("/tmp/evil.txt", b"x", "file")]
    elif case in ("symlink", "hardlink"):
        extra = [("runs/r1/link", None, case)]
    elif case == "tampered":
        members[run_json] = members[run_json].replace(b"0.9", b"1.0")
    elif case == "resized":
        members[run_json] += b" "
    elif case == "unlisted":
        extra = [("runs/r1/extra.bin", b"x", "file")]
    elif case == "missing":
        del members[run_json]
    elif case == "no_manifest":
        del members["manifest.json"]
    elif case in ("not_a_record", "bad_json", "bad_types", "deep"):
        body = {"not_a_record": json.dumps({"status": "FINISHED"}).encode(), "bad_json": b"{not json",
                "deep": b"[" * 200_000 + b"]" * 200_000,
                "bad_types": json.dumps({**json.loads(members[run_json]), "provenance": "x"}).encode()}[case]
        members[run_json] = body
        m = _manifest(members)
        import hashlib
        m["runs"][0]["run_json"].update(bytes=len(body), sha256=hashlib.sha256(body).hexdigest())
        members["manifest.json"] = json.dumps(m).encode()
    elif case == "wrong_format":
        m = _manifest(members)
        m["format"] = "something-else"
        members["manifest.json"] = json.dumps(m).encode()
    path = tmp_path / "bad.tar.gz"
    if case == "not_tar":
        path.write_bytes(b"PK\x03\x04 a zip, not a tar")
    elif case == "truncated":
        whole = tmp_path / "whole.tar.gz"
        _tar(whole, [(n, b, "file") for n, b in members.items()])
        path.write_bytes(whole.read_bytes()[:-40])
    else:
        _tar(path, [(n, b, "file") for n, b in members.items()] + extra)
    with pytest.raises(BundleError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        read_bundle(path)


def test_leaderboard_shows_nothing_of_a_rejected_bundle(store, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    good = tmp_path / "good.tar.gz"
    assert _export(store, good) == 0
    (tmp_path / "x").mkdir()
    members = _good_members(tmp_path / "x")
    bad = _tar(tmp_path / "evil.tar.gz", [(n, b, "file") for n, b in members.items()] +
               [("../escape", b"<script>alert(1)</script>", "file")])
    site = tmp_path / "site"
    capsys.readouterr()
    assert main(["leaderboard", "--from", str(good), "--from", bad, "--from", str(tmp_path / "nowhere"),
                 "--out", str(site)]) == 1
    err = capsys.readouterr().err
    assert "evil.tar.gz: rejected:" in err and "escapes the bundle" in err and "nowhere: no such bundle" in err
    rows = json.loads((site / "rows.json").read_text())["rows"]
    assert len(rows) >= 2 and all(r["task"] == "toy" for r in rows)  # only the good bundle's runs
    assert "alert(1)" not in (site / "index.html").read_text()


def test_export_bad_input(store, tmp_path, capsys):
    assert _export(store, tmp_path / "x.zip") == 2
    assert "a bundle is a .tar.gz" in capsys.readouterr().err
    assert _export(store, tmp_path / "x.tar.gz", "--task", "no-such-task") == 1
    assert "no runs match" in capsys.readouterr().err
