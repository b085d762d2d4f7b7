"""The store: what vigil keeps between runs, behind small typed interfaces.

One SQLite file, ``<data_dir>/events.sqlite3`` (WAL, ``synchronous=FULL``), holds the events the alert sinks write
(``alerts``, ``outbox``) and the service's own tables: ``users``, ``api_tokens``, ``sessions``, ``audit``,
``acknowledgements``, ``false_matches``. The watchlist stays a YAML file (:mod:`vigil.store.watchlist` edits it).
The CLI (`vigil user|token|audit`) and the HTTP server (vigil/server/) read and write through these modules only.
"""
