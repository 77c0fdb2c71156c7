"""Datasets that ship with the package: the synthetic demo generator (the data contract's every
column family, realistic score and label structure), used by ``ensemble-assets demo-data``, the
default ``train`` and the tests."""

from ensemble_assets.datasets.demo import DemoSpec, write_demo_dataset

__all__ = ["DemoSpec", "write_demo_dataset"]
