"""The engine's edge, one concern a module: ``client`` (the send loop), ``key_scope`` (where
the key goes), ``timeouts`` (an image's attempts and deadline), ``backoff``, ``bodies``
(capped reads), ``messages``, ``exceptions``; under them the connection ``pool`` (h11 on
asyncio, ``connection``) and the ``proxy`` routes."""
