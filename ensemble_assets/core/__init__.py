"""Pure-Python core of ensemble_assets: no Dagster import anywhere below this package.

Usable on its own from a notebook, a benchmark or a GPU box (numpy, pyarrow, scikit-learn and
xgboost are enough for training from Parquet; DuckDB is used when installed).
"""
