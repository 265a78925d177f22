"""The daemon: election state machine and its operational parts (logs, metrics, HTTP, systemd)."""
