from ensemble_assets.defs.scoring import assets, checks  # noqa: F401
