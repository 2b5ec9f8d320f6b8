"""A FastAPI service that accepts report requests with 202 Accepted and serves their status."""
