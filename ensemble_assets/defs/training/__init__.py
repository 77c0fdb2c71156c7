from ensemble_assets.defs.training import assets  # noqa: F401
