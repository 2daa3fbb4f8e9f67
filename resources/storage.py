"""The object store every asset reads from and writes to, as a Dagster resource."""

from __future__ import annotations

import dagster as dg
from pydantic import PrivateAttr

from flux_pipeline.store.run_heartbeat import RunHeartbeat
from flux_pipeline.store.settings import StoreSettings
from flux_pipeline.store.storage import ObjectStore


class ObjectStoreResource(dg.ConfigurableResource["ObjectStoreResource"], StoreSettings):
    """The storage root shared by all assets: a local folder or an ``s3://bucket/prefix`` URI.

    Assets hand data to each other through this store (not Dagster's IO manager), so a run on
    another machine, or a CLI call without ``DAGSTER_HOME``, sees the same inputs. In a run, it
    also keeps the run's heartbeat (``_runs/{run_id}.json``) from set-up to tear-down: the
    evidence the ``flux_dead_runs`` sensor reads.
    """

    _heartbeat: RunHeartbeat | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if context.run is not None:
            self._heartbeat = RunHeartbeat(self.store(), context.run.run_id)
            self._heartbeat.start()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None

    def store(self) -> ObjectStore:
        """The :class:`ObjectStore` at :attr:`root`."""
        return ObjectStore.from_uri(self.root)
