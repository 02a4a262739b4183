"""Hook implementations of the web plugin."""
