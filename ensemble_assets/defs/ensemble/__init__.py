from ensemble_assets.defs.ensemble import assets, checks  # noqa: F401
