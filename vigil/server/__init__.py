"""vigil's HTTP service: the JSON API under /api/v1, /metrics, local API docs; served by `vigil run`.

The server reads and writes through the store (vigil/store/) and the watchlist editor, and reads what the pipeline
publishes through vigil/live.py; it never calls a stage. See the README's "Service" section for the endpoints.
"""
