"""EdgeFlow web plugin."""
