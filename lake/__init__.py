"""Lake: a self-hosted, tamper-evident CloudTrail event lake.

    import lake
    lk = lake.connect("./lake-data")
    store = lk.create_store("audit")
    store.append(records)
    store.scan().filter(...).collect()
"""

from .errors import LakeError
from .lake import Lake, connect

__all__ = ["Lake", "LakeError", "connect"]
__version__ = "0.1.0"
