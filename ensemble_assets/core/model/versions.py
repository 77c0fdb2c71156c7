"""Versioned models: immutable version directories under ``<artifacts>/models`` and a ``current``
pointer that moves only on promotion (or rollback).

Layout of the store root (``cfg.artifacts / "models"``)::

    <version id>/          one consolidated model, copied in once and never written again;
                           ``version.json`` beside its manifest (id, created, source, summary)
    current.json           the pointer: {"id", "previous", "promoted": [...], ...}; replaced
                           atomically (os.replace), so a reader sees the old or the new pointer
    history.json           every promotion, rollback, refusal and removal: who, why, when
    store.lock             serialises writers (fcntl lock) across processes

A version id is a content id: the hash of the members' file digests, weights, features, fill
values, calibrators and training settings, and the model's operating point. Timings and peak
memory are not part of it, so consolidating the same members again gives the same id.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from ensemble_assets.core.io import atomic_directory, read_json, sha256_text, write_json
from ensemble_assets.core.model.ensemble import ModelError, model_problem

CURRENT = "current"
PREVIOUS = "previous"
POINTER_FILE = "current.json"
HISTORY_FILE = "history.json"
VERSION_FILE = "version.json"
LOCK_FILE = "store.lock"
DEFAULT_KEEP = 5
_ID = re.compile(r"^[0-9a-f]{16}$")
# the member manifest fields that define what a member predicts (not timings or peak memory)
_MEMBER_IDENTITY = ("model_type", "feature_names", "fill_values", "calibrators", "settings_signature",
                    "gene_subset_hash")


class VersionError(ModelError):
    """An unknown version reference, or a store action that cannot be done (naming why)."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def content_id(model_dir: str | Path) -> str:
    """The content id of a consolidated model directory (16 hex characters)."""
    model_dir = Path(model_dir)
    manifest = read_json(model_dir / "manifest.json")
    if manifest.get("kind") != "ensemble":
        raise VersionError(f"{model_dir}: only a consolidated model becomes a version (kind is {manifest.get('kind')!r})")
    members = []
    for m in sorted(manifest["members"], key=lambda m: m["partition_key"]):
        mm = read_json(model_dir / m["path"] / "manifest.json")
        members.append({"partition_key": m["partition_key"], "weight": m["weight"], "files": mm["files"],
                        **{k: mm.get(k) for k in _MEMBER_IDENTITY}})
    merged = manifest.get("merged_booster") or {}
    payload = {"format_version": manifest["format_version"], "members": members,
               "merged_booster": manifest["files"].get(merged.get("file", ""), None),
               "holdout_genes": sorted(manifest.get("holdout_genes", [])),
               "operating_point": manifest.get("operating_point")}
    return sha256_text(json.dumps(payload, sort_keys=True))[:16]


def _version_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    op = manifest.get("operating_point") or {}
    return {"instances": len(manifest.get("members", [])), "holdout_genes": len(manifest.get("holdout_genes", [])),
            "gene_coverage": manifest.get("gene_coverage"), "splice_threshold": op.get("splice_threshold"),
            "oof_splice_ap": op.get("oof_splice_ap"), "dataset": manifest.get("dataset")}


class ModelStore:
    """The versions of the consolidated model under ``root`` (``cfg.artifacts / "models"``).

    ``keep``: how many versions to retain (newest first); the current version and the one before
    it are never removed, whatever ``keep`` says."""

    def __init__(self, root: str | Path, keep: int = DEFAULT_KEEP):
        if keep < 1:
            raise ValueError(f"model retention keep={keep} must be at least 1")
        self.root = Path(root)
        self.keep = keep

    # ------------------------------------------------------------------ reading

    def _pointer(self) -> dict[str, Any]:
        f = self.root / POINTER_FILE
        return read_json(f) if f.is_file() else {"id": None, "previous": None, "promoted": []}

    def ids(self) -> list[str]:
        """Every version id present, oldest first."""
        if not self.root.is_dir():
            return []
        found = [(read_json(d / VERSION_FILE)["created"], d.name) for d in self.root.iterdir()
                 if d.is_dir() and _ID.match(d.name) and (d / VERSION_FILE).is_file()]
        return [i for _, i in sorted(found)]

    def current_id(self) -> str | None:
        return self._pointer().get("id")

    def previous_id(self) -> str | None:
        return self._pointer().get("previous")

    def current_dir(self) -> Path | None:
        cid = self.current_id()
        return self.root / cid if cid else None

    def version_dir(self, version_id: str) -> Path:
        if version_id not in self.ids():
            raise VersionError(f"no model version {version_id!r} in {self.root}; {self._known()}")
        return self.root / version_id

    def _known(self) -> str:
        ids = self.ids()
        return f"known versions: {', '.join(ids)}" if ids else "the store holds no version yet"

    def resolve(self, ref: str | Path) -> Path:
        """The directory of ``ref``: a version id (or a unique prefix of one), ``"current"``,
        ``"previous"``, or a model directory path."""
        text = str(ref)
        if text in (CURRENT, PREVIOUS):
            vid = self.current_id() if text == CURRENT else self.previous_id()
            if vid is None:
                raise VersionError(f"model reference {text!r}: no version is {text} in {self.root} "
                                   f"(nothing promoted{' twice' if text == PREVIOUS else ''} yet); {self._known()}")
            return self.root / vid
        ids = self.ids()
        matches = [i for i in ids if i.startswith(text)] if re.fullmatch(r"[0-9a-f]{4,16}", text) else []
        if len(matches) == 1:
            return self.root / matches[0]
        path = Path(ref).expanduser()
        if (path / "manifest.json").is_file():
            return path
        why = (f"prefix of {len(matches)} versions" if len(matches) > 1
               else "not a version id, 'current', 'previous' or a model directory")
        raise VersionError(f"model reference {text!r}: {why}; {self._known()}")

    def version_info(self, version_id: str) -> dict[str, Any]:
        return read_json(self.version_dir(version_id) / VERSION_FILE)

    def history(self) -> list[dict[str, Any]]:
        """Every promotion, rollback, refusal and removal, oldest first."""
        f = self.root / HISTORY_FILE
        return read_json(f) if f.is_file() else []

    def status(self, version_id: str) -> str:
        """current, previous, refused (its last gate decision refused it), retired (was current
        once) or candidate (never decided)."""
        pointer = self._pointer()
        if version_id == pointer.get("id"):
            return "current"
        if version_id == pointer.get("previous"):
            return "previous"
        last = [e for e in self.history() if e.get("version") == version_id and e["action"] in ("promote", "refuse")]
        if last and last[-1]["action"] == "refuse":
            return "refused"
        return "retired" if last else "candidate"

    def versions(self) -> list[dict[str, Any]]:
        """One row per version, newest first: id, created, status, and a summary of its metrics
        (the latest promotion comparison's, on genes neither model trained on, where there was one)."""
        decided: dict[str, dict[str, Any]] = {}
        for e in self.history():   # the latest comparison a version took part in, on either side
            c = e.get("comparison") or {}
            for vid, side in ((e.get("version"), "candidate"), (e.get("from"), "current")):
                if vid and c.get(side):
                    decided[vid] = c[side]
        rows = []
        for vid in reversed(self.ids()):
            info = self.version_info(vid)
            rows.append({"id": vid, "created": info["created"], "status": self.status(vid),
                         "metrics": {**info.get("summary", {}), **decided.get(vid, {})}})
        return rows

    # ------------------------------------------------------------------ writing

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _record(self, event: dict[str, Any]) -> dict[str, Any]:
        event = {"at": _now(), **event}
        write_json(self.root / HISTORY_FILE, [*self.history(), event])
        return event

    def add(self, candidate_dir: str | Path) -> str:
        """Copy the consolidated model ``candidate_dir`` in as an immutable version; returns its
        id. Adding a model whose content id is already stored changes nothing."""
        candidate_dir = Path(candidate_dir)
        problem = model_problem(candidate_dir)
        if problem:
            raise VersionError(f"cannot add {candidate_dir} as a model version: {problem}")
        vid = content_id(candidate_dir)
        with self._locked():
            if (self.root / vid / VERSION_FILE).is_file():
                return vid
            manifest = read_json(candidate_dir / "manifest.json")
            with atomic_directory(self.root / vid) as tmp:
                shutil.copytree(candidate_dir, tmp, dirs_exist_ok=True)
                write_json(tmp / VERSION_FILE, {"id": vid, "created": _now(), "source": str(candidate_dir),
                                                "summary": _version_summary(manifest)})
            self._prune()
        return vid

    def _switch(self, target: str, previous: str | None, promoted: list[str], action: str,
                actor: str, reason: str, **extra: Any) -> dict[str, Any]:
        old = self._pointer()
        write_json(self.root / POINTER_FILE, {"id": target, "previous": previous, "promoted": promoted,
                                              "since": _now(), "action": action, "actor": actor, "reason": reason})
        return self._record({"action": action, "version": target, "from": old.get("id"), "actor": actor,
                             "reason": reason, **extra})

    def promote(self, version_id: str, reason: str, actor: str, **extra: Any) -> dict[str, Any]:
        """Make ``version_id`` current (the current one becomes previous); recorded in the history.
        ``extra`` (e.g. the promotion comparison) is stored with the event."""
        with self._locked():
            self.version_dir(version_id)
            pointer = self._pointer()
            if pointer.get("id") == version_id:
                return self._record({"action": "promote", "version": version_id, "from": version_id, "actor": actor,
                                     "reason": f"{reason} (already current: pointer unchanged)", **extra})
            promoted = [v for v in pointer.get("promoted", []) if v != version_id] + [version_id]
            return self._switch(version_id, pointer.get("id"), promoted, "promote", actor, reason, **extra)

    def refuse(self, version_id: str, reason: str, actor: str, **extra: Any) -> dict[str, Any]:
        """Record that ``version_id`` was not promoted, and why; the pointer does not move."""
        with self._locked():
            self.version_dir(version_id)
            return self._record({"action": "refuse", "version": version_id, "from": self.current_id(),
                                 "actor": actor, "reason": reason, **extra})

    def rollback(self, actor: str, reason: str) -> str:
        """Make the previous version current again; returns its id. The version promoted before
        that one (if still stored) becomes previous."""
        with self._locked():
            pointer = self._pointer()
            current, previous = pointer.get("id"), pointer.get("previous")
            if previous is None:
                raise VersionError(f"nothing to roll back to in {self.root}: "
                                   + (f"{current} is the only version ever promoted" if current else "no version is current"))
            if not (self.root / previous / VERSION_FILE).is_file():
                raise VersionError(f"cannot roll back to {previous}: its directory is gone; {self._known()}")
            stack = [v for v in pointer.get("promoted", []) if v != current]
            if not stack or stack[-1] != previous:
                stack = [v for v in stack if v != previous] + [previous]
            below = [v for v in stack[:-1] if (self.root / v / VERSION_FILE).is_file()]
            self._switch(previous, below[-1] if below else None, stack, "rollback", actor, reason)
            return previous

    def _prune(self) -> list[str]:
        """Remove the oldest versions beyond ``keep``, never the current or the previous one."""
        pointer = self._pointer()
        protected = {pointer.get("id"), pointer.get("previous")}
        ids = self.ids()
        keep = set(ids[-self.keep:]) | protected
        removed = [v for v in ids if v not in keep]
        for vid in removed:
            shutil.rmtree(self.root / vid)
            self._record({"action": "remove", "version": vid, "actor": "retention",
                          "reason": f"retention keeps the {self.keep} newest versions plus current and previous"})
        if removed and pointer.get("id"):
            pointer["promoted"] = [v for v in pointer.get("promoted", []) if v not in removed]
            write_json(self.root / POINTER_FILE, pointer)
        return removed

    def prune(self) -> list[str]:
        with self._locked():
            return self._prune()


def store_actor() -> str:
    """Who acts: ``$USER`` where set, else ``cli``."""
    return os.environ.get("USER") or "cli"
