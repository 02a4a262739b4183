"""Tests of the edgeflow-web plugin: real redis-server, real uvicorn, real Chromium."""
