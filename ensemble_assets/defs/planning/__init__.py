from ensemble_assets.defs.planning import assets, checks  # noqa: F401
