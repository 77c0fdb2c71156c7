from ensemble_assets.defs.models import assets, checks  # noqa: F401
