"""The daemon: the event loop and the executor that applies actions."""
