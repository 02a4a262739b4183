"""Hook implementations of the dualredis plugin."""
