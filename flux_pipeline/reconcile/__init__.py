"""The bill reconciled: the account's record of requests against the ledgers and lineage
under the root (``flux-pipeline reconcile``, asset ``account_reconciliation``)."""

from flux_pipeline.reconcile.reconciliation import (
    Reconciliation,
    days_between,
    reconcile,
)
from flux_pipeline.reconcile.states import STATES, ReconciledRequest

__all__ = [
    "STATES",
    "ReconciledRequest",
    "Reconciliation",
    "days_between",
    "reconcile",
]
