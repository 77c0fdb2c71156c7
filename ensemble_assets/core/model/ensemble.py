"""Model artifacts: one loader and one prediction interface for an instance of any kind, an
ensemble, or a mixed ensemble (instances of several kinds).

A model directory holds the kind's model files (XGBoost's own ``.ubj``; plain arrays in ``.npz``
for scikit-learn kinds) and a ``manifest.json`` (model type, feature names, classes, fill
values, calibrators, metrics, and the SHA-256 of every file). No pickle.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pyarrow as pa

from ensemble_assets.core.data.features import source_columns, to_feature_matrix
from ensemble_assets.core.data.schema import CLASSES, is_kmer
from ensemble_assets.core.io import atomic_directory, read_json, sha256_file, write_json
from ensemble_assets.core.model.merged_booster import MergeError, merge_boosters, merged_columns
from ensemble_assets.core.training.calibration import calibrate_proba
from ensemble_assets.core.training.kinds import ModelLoadError, get_kind
from ensemble_assets.core.training.settings import MODEL_FORMAT, MODEL_FORMAT_VERSION, READABLE_FORMAT_VERSIONS

if TYPE_CHECKING:
    from ensemble_assets.core.model.versions import ModelStore


class ModelError(ValueError):
    """A model directory that cannot be loaded, or input that does not fit the model."""


# The decision rule at a model's operating point, shared by predict_calls, the CLI and scoring.
SPLICE_RULE = ("splice call = p_donor + p_acceptor >= splice_threshold; predicted_type = donor or acceptor, "
               "whichever has the larger probability (donor on a tie); otherwise neither")


def splice_calls(proba: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """The calls of ``SPLICE_RULE`` for n×3 probabilities (neither, donor, acceptor):
    ``p_splice`` (float), ``splice_call`` (bool) and ``predicted_type`` (str)."""
    proba = np.asarray(proba, dtype=np.float64)
    p_splice = proba[:, 1] + proba[:, 2]
    call = p_splice >= threshold
    kind = np.where(proba[:, 2] > proba[:, 1], CLASSES[2], CLASSES[1])
    return {"p_splice": p_splice, "splice_call": call,
            "predicted_type": np.where(call, kind, CLASSES[0]).astype(object)}


def _as_table(X: Any) -> pa.Table | np.ndarray:
    if isinstance(X, (pa.Table, pa.RecordBatch)):
        return X if isinstance(X, pa.Table) else pa.Table.from_batches([X])
    if isinstance(X, np.ndarray):
        return X
    if hasattr(X, "columns") and hasattr(X, "dtypes"):  # a pandas DataFrame
        return pa.Table.from_pandas(X, preserve_index=False)
    raise ModelError(f"unsupported input type {type(X).__name__}: pass a pyarrow Table, a DataFrame or an array")


def align_features(X: Any, features: Sequence[str], fill: dict[str, float]) -> np.ndarray:
    """Columns of ``X`` aligned to ``features`` by name: a missing k-mer is 0, any other missing
    feature is an error naming it; extra columns are ignored. A numpy array must already have
    exactly the model's columns in the model's order."""
    t = _as_table(X)
    if isinstance(t, np.ndarray):
        if t.ndim != 2 or t.shape[1] != len(features):
            raise ModelError(f"array input has shape {t.shape}; the model expects {len(features)} columns "
                             "(pass a table to align by name)")
        return np.ascontiguousarray(t, dtype=np.float32)
    names = set(t.schema.names)
    # a computed feature is read by name where the input has it, else computed from its sources
    missing = [c for c in source_columns([f for f in features if f not in names]) if c not in names and not is_kmer(c)]
    if missing:
        raise ModelError(f"input lacks {len(missing)} column(s) the model reads: {', '.join(missing[:20])}")
    kmer_fill = {f: (0.0 if is_kmer(f) else fill[f]) for f in features}
    try:
        return to_feature_matrix(t, features, kmer_fill, source="input")
    except ValueError as exc:
        raise ModelError(str(exc)) from exc


class _Classifier:
    classes_ = np.asarray(CLASSES)

    @property
    def feature_names_in_(self) -> np.ndarray:
        return np.asarray(self.get_feature_names(), dtype=object)

    @property
    def n_features_in_(self) -> int:
        return len(self.get_feature_names())

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    @property
    def operating_point(self) -> dict[str, Any] | None:
        """The stored operating point (consolidated models): ``splice_threshold`` chosen on
        out-of-fold predictions of the training genes, and the rule; None for an instance."""
        return self.manifest.get("operating_point")

    def predict_calls(self, X: Any, threshold: float | None = None) -> dict[str, np.ndarray]:
        """Splice calls at the model's stored operating point (``SPLICE_RULE``): ``p_splice``,
        ``splice_call``, ``predicted_type``, plus ``proba`` (n×3). ``threshold`` overrides it."""
        if threshold is None:
            if not self.operating_point:
                raise ModelError(f"model {self.path} stores no operating point (only consolidated models do); "
                                 "pass threshold= explicitly")
            threshold = float(self.operating_point["splice_threshold"])
        proba = self.predict_proba(X)
        return {"proba": proba, **splice_calls(proba, threshold)}


class InstanceModel(_Classifier):
    """One instance of any kind (``model_type``): the kind's raw n×3 probabilities, then the
    per-class calibration fitted on its out-of-fold predictions."""

    def __init__(self, path: str | Path, manifest: dict[str, Any]):
        self.path = Path(path)
        self.manifest = manifest
        self.model_type: str = manifest["model_type"]
        self.features: list[str] = manifest["feature_names"]
        self.fill: dict[str, float] = manifest["fill_values"]
        try:
            self.predictor = get_kind(self.model_type).load_predictor(self.path, manifest)
        except ModelLoadError as exc:
            raise ModelError(str(exc)) from exc
        self.boosters = getattr(self.predictor, "boosters", [])   # XGBoost kinds
        self.calibrators = manifest["calibrators"]

    total_instances = 1

    def get_feature_names(self) -> list[str]:
        return list(self.features)

    def raw_proba(self, Xm: np.ndarray) -> np.ndarray:
        return self.predictor.raw_proba(Xm)

    def predict_proba_aligned(self, Xm: np.ndarray) -> np.ndarray:
        return calibrate_proba(self.calibrators, self.raw_proba(Xm))

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.predict_proba_aligned(align_features(X, self.features, self.fill))


def _feature_union(feature_lists: Sequence[Sequence[str]]) -> list[str]:
    """Ordered union of the members' features (first-seen order): the ensemble's column order."""
    names: list[str] = []
    seen: set[str] = set()
    for features in feature_lists:
        for f in features:
            if f not in seen:
                seen.add(f)
                names.append(f)
    return names


class EnsembleModel(_Classifier):
    """Weighted average of the members' calibrated probabilities; features aligned by name.

    With a merged booster (``merged_booster.ubj``, written by ``consolidate``) all members' trees
    run in one XGBoost call; each member's calibration is then applied to its own columns exactly
    as the per-instance path does (``predict_proba_per_instance``), so both give the same numbers."""

    def __init__(self, path: str | Path, manifest: dict[str, Any], members: list[InstanceModel]):
        self.path = Path(path)
        self.manifest = manifest
        self.members = members
        w = np.asarray([m["weight"] for m in manifest["members"]], dtype=np.float64)
        self.weights = w / w.sum()
        self.features = _feature_union([m.features for m in members])
        self.fill: dict[str, float] = {}
        for m in members:
            for f in m.features:
                self.fill.setdefault(f, 0.0 if is_kmer(f) else m.fill[f])  # as align_features does
        self.merged = None
        info = manifest.get("merged_booster")
        columns = [[mm["partition_key"], c] for mm in manifest["members"] for c in CLASSES]
        if info and info.get("feature_names") == self.features and info.get("columns") == columns:
            import xgboost as xgb

            self.merged = xgb.Booster()
            self.merged.load_model(str(self.path / info["file"]))

    @property
    def total_instances(self) -> int:
        return len(self.members)

    def get_feature_names(self) -> list[str]:
        return list(self.features)

    def predict_proba(self, X: Any) -> np.ndarray:
        if self.merged is None:
            return self.predict_proba_per_instance(X)
        t = _as_table(X)
        if isinstance(t, np.ndarray):  # positional, in self.features order: impute as a table would be
            if t.ndim != 2 or t.shape[1] != len(self.features):
                raise ModelError(f"array input has shape {t.shape}; the model expects {len(self.features)} columns")
            Xu = np.ascontiguousarray(t, dtype=np.float32)
            bad = ~np.isfinite(Xu)
            if bad.any():
                if np.isinf(np.asarray(t, dtype=np.float64)).any():
                    raise ModelError("input: the array has infinite value(s)")
                Xu = Xu.copy() if Xu is t else Xu
                rows, cols = np.nonzero(bad)
                Xu[rows, cols] = np.asarray([self.fill[f] for f in self.features], dtype=np.float64)[cols]
        else:
            Xu = align_features(t, self.features, self.fill)
        raw = np.asarray(self.merged.inplace_predict(Xu)).reshape(len(Xu), 3 * len(self.members))
        out = None
        for i, (w, m) in enumerate(zip(self.weights, self.members)):
            p = w * calibrate_proba(m.calibrators, raw[:, 3 * i:3 * i + 3].astype(np.float64))
            out = p if out is None else out + p
        return out

    def predict_proba_per_instance(self, X: Any) -> np.ndarray:
        """The reference semantics: each member predicts and calibrates on its own, then the
        weighted average (three XGBoost calls per member)."""
        t = _as_table(X)
        if isinstance(t, np.ndarray):  # positional: map the union order to each member by name
            if t.ndim != 2 or t.shape[1] != len(self.features):
                raise ModelError(f"array input has shape {t.shape}; the model expects {len(self.features)} columns")
            t = pa.table({f: t[:, j] for j, f in enumerate(self.features)})
        out = None
        cache: dict[tuple[str, ...], np.ndarray] = {}
        for w, m in zip(self.weights, self.members):
            key = tuple(m.features)
            if key not in cache:
                cache[key] = align_features(t, m.features, m.fill)
            p = w * m.predict_proba_aligned(cache[key])
            out = p if out is None else out + p
        return out


def _inside(path: Path, name: Any) -> bool:
    """A manifest's file name is a relative path that stays inside the model directory."""
    if not isinstance(name, str) or not name or "\\" in name or name.startswith("/"):
        return False
    parts = Path(name).parts
    return not Path(name).is_absolute() and ".." not in parts and "." not in parts


def _verify(path: Path, manifest: dict[str, Any]) -> None:
    """Every file the manifest references is listed with its SHA-256, stays inside the model
    directory, exists and matches its checksum."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ModelError(f"model {path}: manifest.json lists no file checksums; refusing to load unverified files")
    referenced = (list(manifest.get("boosters", {}).values()) if manifest.get("kind") == "instance"
                  else [f"{m.get('path')}/manifest.json" for m in manifest.get("members", [])])
    for name in [*files, *referenced]:
        if not _inside(path, name):
            raise ModelError(f"model {path}: manifest.json references {name!r}, which is not a file inside the model")
    unlisted = [n for n in referenced if n not in files]
    if unlisted:
        raise ModelError(f"model {path}: manifest.json references {', '.join(unlisted)} without a checksum")
    for name, digest in files.items():
        f = path / name
        if not f.is_file():
            raise ModelError(f"model {path}: file {name} listed in manifest.json is missing")
        if sha256_file(f) != digest:
            raise ModelError(f"model {path}: file {name} does not match its checksum in manifest.json "
                             "(altered or truncated)")


def _read_manifest(path: Path) -> dict[str, Any]:
    mf = path / "manifest.json"
    if not mf.is_file():
        raise ModelError(f"{path} is not a model directory (no manifest.json)")
    try:
        manifest = read_json(mf)
    except ValueError as exc:
        raise ModelError(f"{mf} is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ModelError(f"{mf} is not a model manifest (a JSON object is expected)")
    if manifest.get("format") != MODEL_FORMAT:
        raise ModelError(f"{mf}: unknown model format {manifest.get('format')!r}")
    version = manifest.get("format_version")
    if version not in READABLE_FORMAT_VERSIONS:
        newer = isinstance(version, int) and version > MODEL_FORMAT_VERSION
        raise ModelError(
            f"{mf}: model format version {version!r} is not supported by this release, which reads versions "
            f"{', '.join(map(str, READABLE_FORMAT_VERSIONS))}; "
            + ("it was written by a newer release: upgrade ensemble_assets to load it" if newer
               else "retrain the model with this release"))
    if manifest.get("kind") == "instance":
        if version == 1:   # version 1 only knew three one-vs-rest boosters
            manifest.setdefault("model_type", "xgboost_ovr")
            if manifest["model_type"] != "xgboost_ovr":
                raise ModelError(f"{mf}: format version 1 has no model type {manifest['model_type']!r}")
        if "model_type" not in manifest:
            raise ModelError(f"{mf}: an instance manifest of format version {version} needs 'model_type'")
    _verify(path, manifest)
    return manifest


def model_problem(path: str | Path) -> str | None:
    """Why the model directory ``path`` cannot be loaded (absent, no or unreadable manifest, a
    file missing or altered), or None when every file is present and matches its checksum."""
    try:
        manifest = _read_manifest(Path(path))
    except ModelError as exc:
        return str(exc)
    if manifest.get("kind") == "ensemble":
        for m in manifest.get("members", []):
            problem = model_problem(Path(path) / m["path"])
            if problem:
                return problem
    return None


def load_model(ref: str | Path, store: "ModelStore | None" = None) -> InstanceModel | EnsembleModel:
    """Load an instance or an ensemble directory; verifies every file's checksum first.

    Without ``store``, ``ref`` is a model directory. With a ``ModelStore``, ``ref`` may also be a
    version id, ``"current"`` or ``"previous"`` (``store.resolve``)."""
    path = store.resolve(ref) if store is not None else Path(ref)
    manifest = _read_manifest(path)
    if manifest["kind"] == "instance":
        return InstanceModel(path, manifest)
    if manifest["kind"] == "ensemble":
        members = [load_model(path / m["path"]) for m in manifest["members"]]
        return EnsembleModel(path, manifest, members)  # type: ignore[arg-type]
    raise ModelError(f"{path / 'manifest.json'}: unknown model kind {manifest['kind']!r}")


def consolidate(instance_dirs: dict[str, Path], out_dir: str | Path, holdout_genes: Sequence[str] = (),
                extra: dict[str, Any] | None = None,
                operating_point: Callable[[Path], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Copy the instances into one self-contained ensemble directory, weighted by their
    out-of-fold macro F1 (normalised), and write its manifest atomically.

    ``operating_point(model_dir)``: computes the model's operating point from the complete (not
    yet visible) directory; stored as ``manifest["operating_point"]``."""
    members = []
    manifests = {}
    for key, d in sorted(instance_dirs.items()):
        manifests[key] = _read_manifest(Path(d))
        f1 = manifests[key]["metrics"]["oof"]["macro_f1"] or 0.0
        members.append({"partition_key": key, "path": f"instances/{key}", "oof_macro_f1": f1,
                        "model_type": manifests[key]["model_type"]})
    total = sum(m["oof_macro_f1"] for m in members)
    for m in members:
        m["weight"] = (m["oof_macro_f1"] / total) if total > 0 else 1.0 / len(members)
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        files = {}
        for key, d in sorted(instance_dirs.items()):
            dest = tmp / "instances" / key
            dest.mkdir(parents=True)
            for name in [*manifests[key]["files"], "manifest.json"]:
                shutil.copy2(Path(d) / name, dest / name)
            files[f"instances/{key}/manifest.json"] = sha256_file(dest / "manifest.json")
        feature_union = sorted({f for mf in manifests.values() for f in mf["feature_names"]})
        merged = _write_merged_booster(tmp, sorted(instance_dirs), manifests)
        if merged.get("file"):
            files[merged["file"]] = sha256_file(tmp / merged["file"])
        manifest = {
            "format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "kind": "ensemble",
            "classes": list(CLASSES), "members": members, "n_features_union": len(feature_union),
            "weighting": "out-of-fold macro F1, normalised to sum to 1",
            "model_types": sorted({m["model_type"] for m in members}),
            "holdout_genes": list(holdout_genes), "files": files,
            "merged_booster": merged if merged.get("file") else None,
            "merged_booster_note": merged.get("note", ""), **(extra or {}),
        }
        write_json(tmp / "manifest.json", manifest)
        if operating_point is not None:
            manifest["operating_point"] = operating_point(tmp)
            write_json(tmp / "manifest.json", manifest)
    return manifest


MERGED_BOOSTER = "merged_booster.ubj"


def _write_merged_booster(tmp: Path, keys: list[str], manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Merge every member's boosters into ``merged_booster.ubj`` (core.merged_booster); on a model
    that cannot be merged exactly, write nothing and say why (prediction then runs per instance)."""
    import xgboost as xgb

    features = _feature_union([manifests[k]["feature_names"] for k in keys])
    fill: dict[str, float] = {}
    pairs = []
    try:
        for k in keys:
            mf = manifests[k]
            if mf.get("model_type", "xgboost_ovr") != "xgboost_ovr":
                raise MergeError(f"member {k} is a {mf['model_type']} instance (only one-vs-rest boosters merge)")
            for f in mf["feature_names"]:
                if not is_kmer(f) and fill.setdefault(f, mf["fill_values"][f]) != mf["fill_values"][f]:
                    raise MergeError(f"members impute feature {f!r} with different fill values")
            for c in CLASSES:
                b = xgb.Booster()
                b.load_model(str(tmp / "instances" / k / mf["boosters"][c]))
                pairs.append((b, mf["feature_names"]))
        merged = merge_boosters(pairs, features)
    except MergeError as exc:
        return {"note": f"no merged booster ({exc}); prediction runs per instance"}
    merged.save_model(str(tmp / MERGED_BOOSTER))
    return {"file": MERGED_BOOSTER, "feature_names": features, "columns": merged_columns(keys, CLASSES),
            "n_trees": sum(b.num_boosted_rounds() for b, _ in pairs),
            "note": "all members' boosters in one multi-target booster (one column per member and class); "
                    "per-member calibration applied to its columns: same numbers as per-instance prediction"}
