"""EdgeFlow k8s plugin."""
