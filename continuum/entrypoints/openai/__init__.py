"""The OpenAI-compatible server (FastAPI) with the agent API extensions."""
