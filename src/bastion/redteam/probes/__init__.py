"""Probes: attack families, registered in `probes` (see `base.py` for the interface).

Importing this package registers the built-in families (data sets, jailbreaks, adaptive).
"""

from bastion.redteam.probes import adaptive, datasets, jailbreaks  # noqa: F401
from bastion.redteam.probes.base import (
    AttackContext,
    AttackResult,
    Detection,
    Probe,
    ProbeItem,
    probes,
)

__all__ = ["AttackContext", "AttackResult", "Detection", "Probe", "ProbeItem", "probes"]
