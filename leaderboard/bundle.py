"""Run bundles: the runs of one store in one file, to publish results measured on many machines.

A bundle is a gzipped tar holding `manifest.json` and, per run, `runs/<id>/run.json` (the record:
its config, metrics, latency, device and provenance) and optionally `runs/<id>/artifact/...` (the
compressed model). The manifest lists every other member with its size and SHA-256.

Reading trusts nothing: a bundle comes from someone else's machine. `read_bundle` never extracts
to disk; it rejects (with the reason, and nothing from the bundle kept) links, device files,
absolute or `..` paths, duplicate names, members the manifest does not list or lists with another
size or hash, a run.json that is not a record, and anything past the size limits.
"""
from __future__ import annotations

import hashlib
import io
import json
import posixpath
import tarfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from slimbench.core.record import FINAL_STATUSES, RunRecord

FORMAT, SCHEMA = "slimbench-bundle", 1
MAX_MEMBERS = 100_000
MAX_RUN_JSON = 16 << 20        # bytes of one run.json
MAX_TOTAL = 8 << 30            # bytes of all members together
MAX_MANIFEST = 64 << 20


class BundleError(ValueError):
    """A bundle that is not one slimbench wrote or that was changed since: rejected whole."""


@dataclass
class Bundle:
    path: Path
    manifest: dict[str, Any]
    runs: list[dict[str, Any]]  # run.json records, each with provenance["source"] = the bundle's name


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
    path = Path(path)
    try:
        with tarfile.open(path, "r|*") as tar:
            manifest, bodies = _stream(tar)
        runs = [_record(_json(bodies[item["run_json"]["path"]], item["run_json"]["path"]),
                        item["run_json"]["path"], path.name) for item in manifest["runs"]]
    except BundleError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise BundleError(f"not a readable tar archive ({type(exc).__name__}: {exc})") from None
    return Bundle(path=path, manifest=manifest, runs=runs)


# ---------------------------------------------------------------- helpers

def _stream(tar: tarfile.TarFile) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Check every member in order against the manifest (the first member); the run.json bodies."""
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
        body = _checked(tar, m, entry, MAX_RUN_JSON if keep else MAX_TOTAL, keep)
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
    for item in runs_meta:
        if not isinstance(item, dict) or not isinstance(item.get("run_json"), dict) \
                or not isinstance(item.get("artifacts", []), list):
            raise BundleError(f"malformed run entry in manifest.json: {str(item)[:120]}")
        for j, entry in enumerate([item["run_json"], *item.get("artifacts", [])]):
            name = entry.get("path") if isinstance(entry, dict) else None
            if not isinstance(name, str) or name in listed or (j == 0 and not name.endswith("/run.json")):
                raise BundleError(f"manifest entry {str(entry)[:120]} is malformed or listed twice")
            listed[name] = {**entry, "run_json": j == 0}
    return manifest, listed


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


def _checked(tar: tarfile.TarFile, member: tarfile.TarInfo, entry: dict[str, Any], limit: int, keep: bool) -> bytes:
    """The member hashed in chunks against its manifest entry; its bytes only when `keep`."""
    f = _open(tar, member, limit)
    h, n, parts = hashlib.sha256(), 0, []
    while chunk := f.read(1 << 20):
        h.update(chunk)
        n += len(chunk)
        if keep:
            parts.append(chunk)
    if n != entry.get("bytes"):
        raise BundleError(f"{member.name} holds {n} bytes, the manifest says {entry.get('bytes')!r}")
    if h.hexdigest() != entry.get("sha256"):
        raise BundleError(f"{member.name} does not match its SHA-256 in manifest.json (changed after export?)")
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
    record["provenance"]["source"] = source
    return record
