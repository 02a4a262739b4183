"""EdgeFlow dualredis plugin."""
