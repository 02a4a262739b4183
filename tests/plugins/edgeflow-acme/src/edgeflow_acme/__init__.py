"""A third-party EdgeFlow plugin: a broker, a gateway interface, a deployer and a metrics exporter."""
