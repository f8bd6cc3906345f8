"""Control socket: requests record an intent and wake the loop."""
