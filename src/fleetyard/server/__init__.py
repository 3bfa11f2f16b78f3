"""The HTTP server: FastAPI routers over service functions."""
