"""The acme broker held to EdgeFlow's broker contract, as a third party runs it."""

from edgeflow.testing.contract import BrokerContract


class TestAcmeIsABroker(BrokerContract):
    pass
