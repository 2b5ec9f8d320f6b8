"""Queue backends: the protocol every runtime uses, and its implementations."""
