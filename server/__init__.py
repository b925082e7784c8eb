"""The HTTP search service (FastAPI)."""
