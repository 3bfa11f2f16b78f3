"""Wire models of the HTTP API (``/v1``): shared by the server, the agent and the SDK."""
