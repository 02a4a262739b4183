pytest_plugins = ["edgeflow.testing.contract"]
