from ensemble_assets.defs.explanation import assets  # noqa: F401
