"""Run bundles: the runs of one store in one file, to publish results measured on many machines.

A bundle is a gzipped tar holding `manifest.json` and, per run, `runs/<id>/run.json` (the record:
its config, metrics, latency, device and provenance) and optionally `runs/<id>/artifact/...` (the
compressed model). The manifest lists every other member with its size and SHA-256.

What the manifest proves: that each member arrived as the manifest describes it, i.e. no damage in
transit or storage (a truncated download, a flipped bit). It is unsigned and lives inside the
archive, so it proves nothing about honesty: whoever edits a run.json can rewrite its hash too.
What makes a row trustworthy is re-measuring its artifact (`slimbench verify`, `suite.verify`).

Reading trusts nothing: a bundle comes from someone else's machine. `read_bundle` never extracts
to disk; it rejects (with the reason, and nothing from the bundle kept) links, device files,
absolute or `..` paths, duplicate names, members the manifest does not list or lists with another
size or hash, artifacts outside their run's `artifact/` folder, a run.json that is not a record,
and anything past the size limits. `extract_artifacts` makes the same checks in the same pass and
writes the artifacts under a folder of the caller's, at paths it builds itself. A run.json's own
`provenance.verification` is dropped: a verdict comes from the reader's own `slimbench verify`.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import shutil
import tarfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable

from slimbench.core.record import FINAL_STATUSES, RunRecord

FORMAT, SCHEMA = "slimbench-bundle", 1
MAX_MEMBERS = 100_000
MAX_RUN_JSON = 16 << 20        # bytes of one run.json
MAX_TOTAL = 8 << 30            # bytes of all members together
MAX_MANIFEST = 64 << 20


class BundleError(ValueError):
    """A bundle that is malformed, unsafe to read or damaged (a member that does not match the
    manifest): rejected whole."""


@dataclass
class Bundle:
    path: Path
    manifest: dict[str, Any]
    runs: list[dict[str, Any]]  # run.json records, each with provenance["source"] = the bundle's name


Sink = Callable[[str, dict[str, Any]], BinaryIO]  # (member name, manifest entry) -> where its bytes go


def write_bundle(out: Path, runs: Iterable[tuple[str, dict[str, Any], dict[str, Path]]],
                 source: dict[str, Any]) -> Path:
    """Write `out` (.tar.gz) from (run id, run.json dict, {relative artifact path: local file}): the
    manifest first, then each run's run.json and its artifacts, streamed from disk."""
    entries, members = [], []  # members: (name, bytes | local path)
    for run_id, record, files in runs:
        safe = _safe_id(run_id)
        data = json.dumps(record, sort_keys=True, default=str).encode()
        item = {"id": safe, "run_key": record.get("run_key"),
                "run_json": {"path": f"runs/{safe}/run.json", **_digest_bytes(data)}, "artifacts": []}
        members.append((item["run_json"]["path"], data))
        for rel, local in sorted(files.items()):
            entry = {"path": f"runs/{safe}/artifact/{_safe_rel(rel)}", **_digest_file(Path(local))}
            item["artifacts"].append(entry)
            members.append((entry["path"], Path(local)))
        entries.append(item)
    manifest = {"format": FORMAT, "schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "source": source, "runs": entries}
    out.parent.mkdir(parents=True, exist_ok=True)
    now = int(time.time())
    with tarfile.open(out, "w:gz") as tar:
        for name, body in [("manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode()), *members]:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = now, 0o644
            if isinstance(body, Path):
                info.size = body.stat().st_size
                with body.open("rb") as f:
                    tar.addfile(info, f)
            else:
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
    return out


def read_bundle(path: Path) -> Bundle:
    """The validated runs of a bundle, or `BundleError` saying why it was rejected. One streaming pass
    in archive order (manifest first), artifacts hashed in chunks and never kept."""
    return _read_bundle(Path(path), None)


def extract_artifacts(path: Path, dest: Path) -> tuple[Bundle, list[Path | None]]:
    """`read_bundle`, with each run's artifact written under `dest` in the same pass: the bundle and,
    per run (in `Bundle.runs` order), the folder holding its artifact, or None when it has none.

    Member paths are not trusted: run n's files go to `dest/<n>/<path below its artifact/ folder>`,
    each part checked again, created exclusively and never through a link; nothing lands outside
    `dest`. A file counts only once its size and hash matched the manifest; on `BundleError`
    everything written is removed."""
    dest = Path(dest)
    made: list[Path] = []

    def sink(name: str, entry: dict[str, Any]) -> BinaryIO:
        target = dest.joinpath(f"{entry['run']:05d}", *entry["rel"].split("/"))
        root = dest / f"{entry['run']:05d}"
        if not target.resolve().is_relative_to(dest.resolve()):
            raise BundleError(f"{name} would be written outside the extraction folder")
        try:
            if not root.exists():
                made.append(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except OSError as exc:
            raise BundleError(f"{name} cannot be extracted: {type(exc).__name__}: {exc}") from None
        return os.fdopen(fd, "wb")

    try:
        bundle = _read_bundle(Path(path), sink)
    except BaseException:
        for folder in made:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    runs = bundle.manifest["runs"]
    return bundle, [dest / f"{i:05d}" if item.get("artifacts") else None for i, item in enumerate(runs)]


def _read_bundle(path: Path, sink: Sink | None) -> Bundle:
    try:
        with tarfile.open(path, "r|*") as tar:
            manifest, bodies = _stream(tar, sink)
        runs = [_record(_json(bodies[item["run_json"]["path"]], item["run_json"]["path"]),
                        item["run_json"]["path"], path.name) for item in manifest["runs"]]
    except BundleError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise BundleError(f"not a readable tar archive ({type(exc).__name__}: {exc})") from None
    return Bundle(path=path, manifest=manifest, runs=runs)


# ---------------------------------------------------------------- helpers

def _stream(tar: tarfile.TarFile, sink: Sink | None) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Check every member in order against the manifest (the first member); the run.json bodies.
    `sink(name, entry)`: where an artifact member's bytes go as they are hashed (else nowhere)."""
    manifest: dict[str, Any] | None = None
    listed: dict[str, dict[str, Any]] = {}
    bodies: dict[str, bytes] = {}
    seen: set[str] = set()
    total = 0
    for i, m in enumerate(tar):
        if i >= MAX_MEMBERS:
            raise BundleError(f"more than {MAX_MEMBERS} members")
        if m.isdir():
            continue
        _check_member(m)
        if m.name in seen:
            raise BundleError(f"member {m.name!r} appears twice")
        seen.add(m.name)
        total += m.size
        if total > MAX_TOTAL:
            raise BundleError(f"members hold more than {MAX_TOTAL >> 30} GiB")
        if manifest is None:
            if m.name != "manifest.json":
                raise BundleError("no manifest.json first: not a slimbench bundle")
            manifest, listed = _manifest(_json(_read(tar, m, MAX_MANIFEST), "manifest.json"))
            continue
        entry = listed.get(m.name)
        if entry is None:
            raise BundleError(f"member {m.name!r} is not listed in manifest.json")
        keep = m.name.endswith("/run.json") and entry.get("run_json", False)
        out = sink(m.name, entry) if sink is not None and not keep else None
        try:
            body = _checked(tar, m, entry, MAX_RUN_JSON if keep else MAX_TOTAL, keep, out)
        finally:
            if out is not None:
                out.close()
        if keep:
            bodies[m.name] = body
    if manifest is None:
        raise BundleError("no manifest.json: not a slimbench bundle")
    missing = sorted(set(listed) - seen)
    if missing:
        raise BundleError(f"manifest.json lists {missing[0]!r}, which the bundle does not hold")
    return manifest, bodies


def _manifest(manifest: Any) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"manifest.json does not name the format {FORMAT!r}")
    if manifest.get("schema") != SCHEMA:
        raise BundleError(f"manifest schema {manifest.get('schema')!r}; this slimbench reads schema {SCHEMA}")
    runs_meta = manifest.get("runs")
    if not isinstance(runs_meta, list):
        raise BundleError("manifest.json has no list of runs")
    listed: dict[str, dict[str, Any]] = {}
    for n, item in enumerate(runs_meta):
        if not isinstance(item, dict) or not isinstance(item.get("run_json"), dict) \
                or not isinstance(item.get("artifacts", []), list):
            raise BundleError(f"malformed run entry in manifest.json: {str(item)[:120]}")
        folder = ""
        for j, entry in enumerate([item["run_json"], *item.get("artifacts", [])]):
            name = entry.get("path") if isinstance(entry, dict) else None
            if not isinstance(name, str) or name in listed or (j == 0 and not name.endswith("/run.json")):
                raise BundleError(f"manifest entry {str(entry)[:120]} is malformed or listed twice")
            if j == 0:
                folder = name[: -len("run.json")] + "artifact/"
            listed[name] = {**entry, "run_json": j == 0, "run": n, "rel": _artifact_rel(name, folder) if j else ""}
    return manifest, listed


def _artifact_rel(name: str, folder: str) -> str:
    """An artifact's path below its run's `artifact/` folder: plain parts only, or `BundleError`."""
    rel = name[len(folder):] if name.startswith(folder) else ""
    parts = rel.split("/")
    if not rel or any(p in ("", ".", "..") or "\\" in p for p in parts):
        raise BundleError(f"manifest entry {name!r} is not a file under its run's folder {folder!r}")
    return rel


def _digest_bytes(body: bytes) -> dict[str, Any]:
    return {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def _digest_file(path: Path) -> dict[str, Any]:
    h, n = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
    return {"bytes": n, "sha256": h.hexdigest()}


def _safe_id(run_id: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(run_id))[:80]
    return cleaned or "run"


def _safe_rel(rel: str) -> str:
    parts = [p for p in str(rel).replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or "file"


def _check_member(m: tarfile.TarInfo) -> None:
    if not m.isfile():
        raise BundleError(f"member {m.name!r} is a link or special file; bundles hold regular files only")
    name = m.name
    norm = posixpath.normpath(name)
    if name.startswith("/") or norm.startswith("..") or norm != name or "\\" in name:
        raise BundleError(f"member path {name!r} is absolute, escapes the bundle or is not normalised")


def _open(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int):
    if member.size > limit:
        raise BundleError(f"{member.name} is {member.size} bytes, over the {limit}-byte limit")
    f = tar.extractfile(member)
    if f is None:
        raise BundleError(f"{member.name} cannot be read")
    return f


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    return _open(tar, member, limit).read(limit + 1)


def _checked(tar: tarfile.TarFile, member: tarfile.TarInfo, entry: dict[str, Any], limit: int, keep: bool,
             out: BinaryIO | None = None) -> bytes:
    """The member hashed in chunks against its manifest entry; its bytes only when `keep`, written to
    `out` when given."""
    f = _open(tar, member, limit)
    h, n, parts = hashlib.sha256(), 0, []
    while chunk := f.read(1 << 20):
        h.update(chunk)
        n += len(chunk)
        if keep:
            parts.append(chunk)
        if out is not None:
            out.write(chunk)
    if n != entry.get("bytes"):
        raise BundleError(f"{member.name} holds {n} bytes, the manifest says {entry.get('bytes')!r}")
    if h.hexdigest() != entry.get("sha256"):
        raise BundleError(f"{member.name} does not match its SHA-256 in manifest.json: damaged in transit or "
                          "storage (the hash detects damage, not edits: an edited bundle can carry a rewritten "
                          "manifest; `slimbench verify` re-measures)")
    return b"".join(parts)


def _json(body: bytes, name: str) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BundleError(f"{name} is not valid JSON: {type(exc).__name__}: {str(exc)[:200]}") from None


def _record(data: Any, name: str, source: str) -> dict[str, Any]:
    """A run.json as the normalized record the leaderboard reads; the fields a row needs must be there."""
    if not isinstance(data, dict):
        raise BundleError(f"{name} is not a run record (a JSON object)")
    for key in ("run_key", "status", "task", "method", "device"):
        if key not in data:
            raise BundleError(f"{name} has no {key!r}: not a slimbench run record")
    if data["status"] not in (*FINAL_STATUSES, "RUNNING"):
        raise BundleError(f"{name} has status {data['status']!r}; expected one of {', '.join(FINAL_STATUSES)}")
    for key in ("task", "method", "device", "baseline", "metrics", "method_metrics", "budget", "provenance"):
        if key in data and data[key] is not None and not isinstance(data[key], dict):
            raise BundleError(f"{name}: {key!r} is not an object")
    for key in ("latency", "memory", "warnings"):
        if key in data and data[key] is not None and not isinstance(data[key], list):
            raise BundleError(f"{name}: {key!r} is not a list")
    try:
        record = RunRecord.from_dict(data).to_dict()
    except Exception as exc:  # any other shape the reader cannot take
        raise BundleError(f"{name} is not a readable run record: {type(exc).__name__}: {exc}") from None
    record["provenance"].pop("verification", None)  # a bundle cannot vouch for itself
    record["provenance"]["source"] = source
    return record
