"""One booster for a whole ensemble, so that prediction is one XGBoost call.

Every member's three one-vs-rest boosters (``binary:logistic``, one output each) are merged into
one multi-target XGBoost model with one output column per (member, class): the trees are copied
unchanged in their order, each tagged with its column (``tree_info``), split features are
renumbered from the member's feature order to the ensemble's feature order, and each column keeps
its booster's own intercept (``base_score``). XGBoost then computes, for column (i, c), exactly
what member i's class-c booster computes — the same trees summed in the same order from the same
intercept through the same sigmoid — so the column is bit-for-bit that booster's probability
(tested). The per-instance calibration (isotonic/Platt on each member's one-vs-rest output, row
renormalisation, weighted average) is then applied to those columns unchanged, which keeps the
ensemble's semantics exact while the trees run in one call.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np


class MergeError(ValueError):
    """The boosters cannot be merged exactly (the reason says why); predict per instance instead."""


def _model_json(booster: Any) -> dict[str, Any]:
    return json.loads(bytes(booster.save_raw("json")))


def merge_boosters(boosters: Sequence[tuple[Any, Sequence[str]]], features: Sequence[str],
                   one_output: bool = False) -> Any:
    """Merge ``(booster, its feature names)`` pairs into one multi-target ``xgboost.Booster``
    over ``features`` (which must contain every member's features): output column k of the
    merged model is booster k's predicted probability, for rows laid out in ``features`` order.

    ``one_output=True`` puts every tree on one output instead (a plain single booster with the
    same trees; its prediction means nothing, it is the speed yardstick of the benchmark)."""
    import xgboost as xgb

    if not boosters:
        raise MergeError("no boosters to merge")
    index = {f: j for j, f in enumerate(features)}
    template: dict[str, Any] | None = None
    trees: list[dict[str, Any]] = []
    tree_info: list[int] = []
    intercepts: list[str] = []
    for k, (booster, names) in enumerate(boosters):
        model = _model_json(booster)
        learner = model["learner"]
        objective = learner["objective"]["name"]
        if objective != "binary:logistic":
            raise MergeError(f"booster {k} has objective {objective!r}; only binary:logistic boosters are merged")
        param = learner["learner_model_param"]
        if int(param.get("num_target", "1")) != 1 or int(param.get("num_class", "0")) > 1:
            raise MergeError(f"booster {k} has more than one output")
        gbm = learner["gradient_booster"]
        if gbm.get("name") != "gbtree" or int(gbm["model"]["gbtree_model_param"].get("num_parallel_tree", "1")) != 1:
            raise MergeError(f"booster {k} is not a plain gbtree model (one tree per round)")
        own = list(learner.get("feature_names") or names)
        if list(names) != own:
            raise MergeError(f"booster {k}'s feature names differ from its manifest's")
        missing = [f for f in own if f not in index]
        if missing:
            raise MergeError(f"booster {k} uses feature(s) outside the merged feature list: {missing[:5]}")
        remap = np.asarray([index[f] for f in own], dtype=np.int64)
        intercepts.append(param["base_score"].strip("[]"))
        for tree in gbm["model"]["trees"]:
            if any(int(t) != 0 for t in tree.get("split_type", [])):
                raise MergeError(f"booster {k} has categorical splits")
            leaf = np.asarray(tree["left_children"]) == -1
            split = np.asarray(tree["split_indices"], dtype=np.int64)
            t = dict(tree)
            t["split_indices"] = np.where(leaf, 0, remap[np.where(leaf, 0, split)]).tolist()
            t["tree_param"] = {**tree["tree_param"], "num_feature": str(len(features))}
            t["id"] = len(trees)
            trees.append(t)
            tree_info.append(0 if one_output else k)
        if template is None:
            template = model
    assert template is not None
    learner = template["learner"]
    learner["learner_model_param"].update(
        base_score="[" + ",".join(intercepts[:1] if one_output else intercepts) + "]",
        num_target=str(1 if one_output else len(boosters)),
        num_feature=str(len(features)), num_class="0")
    learner["feature_names"] = list(features)
    learner["feature_types"] = ["float"] * len(features)
    learner["attributes"] = {}
    model = learner["gradient_booster"]["model"]
    model["trees"] = trees
    model["tree_info"] = tree_info
    model["gbtree_model_param"]["num_trees"] = str(len(trees))
    # every tree is its own "round": the merged model is only ever predicted whole
    model["iteration_indptr"] = list(range(len(trees) + 1))
    merged = xgb.Booster()
    merged.load_model(bytearray(json.dumps(template).encode()))
    return merged


def merged_columns(member_keys: Sequence[str], classes: Sequence[str]) -> list[list[str]]:
    """The (member, class) of each output column, in the merged model's order."""
    return [[key, c] for key in member_keys for c in classes]
