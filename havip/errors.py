"""The error tree. Every error havip raises on purpose is a HavipError."""


class HavipError(Exception):
    """Base of every error havip raises on purpose."""


class ConfigError(HavipError):
    """The configuration is invalid. `problems` holds every `path: value: reason` line."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class AdapterError(HavipError):
    """A side effect (netlink, raw socket, Docker, gRPC) failed; the message says which and why."""


class ControlError(HavipError):
    """A control request could not be delivered or was refused."""
