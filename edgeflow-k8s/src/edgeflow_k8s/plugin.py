"""Hook implementations of the k8s plugin."""
