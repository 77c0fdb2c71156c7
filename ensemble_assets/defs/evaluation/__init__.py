from ensemble_assets.defs.evaluation import assets, checks  # noqa: F401
