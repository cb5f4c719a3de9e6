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
    """Write `out` (.tar.gz) from (run id, run.json dict, {relative artifact path: local file})."""
    entries, blobs = [], []
    for run_id, record, files in runs:
        safe = _safe_id(run_id)
        data = json.dumps(record, sort_keys=True, default=str).encode()
        item = {"id": safe, "run_key": record.get("run_key"), "run_json": _entry(f"runs/{safe}/run.json", data),
                "artifacts": []}
        blobs.append((item["run_json"]["path"], data))
        for rel, local in sorted(files.items()):
            body = Path(local).read_bytes()
            entry = _entry(f"runs/{safe}/artifact/{_safe_rel(rel)}", body)
            item["artifacts"].append(entry)
            blobs.append((entry["path"], body))
        entries.append(item)
    manifest = {"format": FORMAT, "schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "source": source, "runs": entries}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w:gz") as tar:
        for name, body in [("manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode()), *blobs]:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(body), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(body))
    return out


def read_bundle(path: Path) -> Bundle:
    """The validated runs of a bundle, or `BundleError` saying why it was rejected."""
    path = Path(path)
    try:
        tar = tarfile.open(path, "r:*")
    except (OSError, tarfile.TarError) as exc:
        raise BundleError(f"not a readable tar archive: {exc}") from None
    with tar:
        members = _members(tar)
        if "manifest.json" not in members:
            raise BundleError("no manifest.json: not a slimbench bundle")
        manifest = _json(_read(tar, members["manifest.json"], MAX_MANIFEST), "manifest.json")
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise BundleError(f"manifest.json does not name the format {FORMAT!r}")
        if manifest.get("schema") != SCHEMA:
            raise BundleError(f"manifest schema {manifest.get('schema')!r}; this slimbench reads schema {SCHEMA}")
        listed: dict[str, dict[str, Any]] = {}
        runs_meta = manifest.get("runs")
        if not isinstance(runs_meta, list):
            raise BundleError("manifest.json has no list of runs")
        for item in runs_meta:
            if not isinstance(item, dict) or not isinstance(item.get("run_json"), dict) \
                    or not isinstance(item.get("artifacts", []), list):
                raise BundleError(f"malformed run entry in manifest.json: {str(item)[:120]}")
            for entry in [item["run_json"], *item.get("artifacts", [])]:
                name = entry.get("path") if isinstance(entry, dict) else None
                if not isinstance(name, str) or name in listed:
                    raise BundleError(f"manifest entry {str(entry)[:120]} is malformed or listed twice")
                listed[name] = entry
        extra = sorted(set(members) - set(listed) - {"manifest.json"})
        if extra:
            raise BundleError(f"member {extra[0]!r} is not listed in manifest.json")
        runs = []
        source = path.name
        for item in runs_meta:
            for entry in item.get("artifacts", []):
                _verified(tar, members, entry, MAX_TOTAL)
            record = _json(_verified(tar, members, item["run_json"], MAX_RUN_JSON), item["run_json"]["path"])
            runs.append(_record(record, item["run_json"]["path"], source))
    return Bundle(path=path, manifest=manifest, runs=runs)


# ---------------------------------------------------------------- helpers

def _entry(name: str, body: bytes) -> dict[str, Any]:
    return {"path": name, "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def _safe_id(run_id: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(run_id))[:80]
    return cleaned or "run"


def _safe_rel(rel: str) -> str:
    parts = [p for p in str(rel).replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or "file"


def _members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    out: dict[str, tarfile.TarInfo] = {}
    total = 0
    for i, m in enumerate(tar):
        if i >= MAX_MEMBERS:
            raise BundleError(f"more than {MAX_MEMBERS} members")
        if m.isdir():
            continue
        if not m.isfile():
            raise BundleError(f"member {m.name!r} is a link or special file; bundles hold regular files only")
        name = m.name
        norm = posixpath.normpath(name)
        if name.startswith("/") or norm.startswith("..") or norm != name or "\\" in name:
            raise BundleError(f"member path {name!r} is absolute, escapes the bundle or is not normalised")
        if name in out:
            raise BundleError(f"member {name!r} appears twice")
        total += m.size
        if total > MAX_TOTAL:
            raise BundleError(f"members hold more than {MAX_TOTAL >> 30} GiB")
        out[name] = m
    return out


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    if member.size > limit:
        raise BundleError(f"{member.name} is {member.size} bytes, over the {limit}-byte limit")
    f = tar.extractfile(member)
    if f is None:
        raise BundleError(f"{member.name} cannot be read")
    return f.read(limit + 1)


def _verified(tar, members: dict[str, tarfile.TarInfo], entry: dict[str, Any], limit: int) -> bytes:
    name = entry["path"]
    if name not in members:
        raise BundleError(f"manifest.json lists {name!r}, which the bundle does not hold")
    body = _read(tar, members[name], limit)
    if len(body) != entry.get("bytes"):
        raise BundleError(f"{name} holds {len(body)} bytes, the manifest says {entry.get('bytes')!r}")
    if hashlib.sha256(body).hexdigest() != entry.get("sha256"):
        raise BundleError(f"{name} does not match its SHA-256 in manifest.json (changed after export?)")
    return body


def _json(body: bytes, name: str) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{name} is not valid JSON: {exc}") from None


def _record(data: Any, name: str, source: str) -> dict[str, Any]:
    """A run.json as the normalized record the leaderboard reads; the fields a row needs must be there."""
    if not isinstance(data, dict):
        raise BundleError(f"{name} is not a run record (a JSON object)")
    for key in ("run_key", "status", "task", "method", "device"):
        if key not in data:
            raise BundleError(f"{name} has no {key!r}: not a slimbench run record")
    if data["status"] not in (*FINAL_STATUSES, "RUNNING"):
        raise BundleError(f"{name} has status {data['status']!r}; expected one of {', '.join(FINAL_STATUSES)}")
    for key in ("task", "method", "device"):
        if not isinstance(data[key], dict):
            raise BundleError(f"{name}: {key!r} is not an object")
    record = RunRecord.from_dict(data).to_dict()
    record["provenance"]["source"] = source
    return record
