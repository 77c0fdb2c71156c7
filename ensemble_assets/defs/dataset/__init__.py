from ensemble_assets.defs.dataset import assets, checks  # noqa: F401
