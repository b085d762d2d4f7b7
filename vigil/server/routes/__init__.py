"""API routes, one module per resource; each route names the permission it needs (vigil/server/roles.py)."""
