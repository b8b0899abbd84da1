"""Errors raised for bad network input."""


class NetworkError(ValueError):
    """A network name, net file or route file that cannot be used; the message is one line."""
