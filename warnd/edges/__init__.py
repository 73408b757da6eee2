"""What talks to the world: the daemon process, the hooks listener and the monitor,
acknowledgement intake, the sender, dispatch and channels, vendor callbacks, feeds and
their alarms, health, metrics, logs, signatures, systemd notification.
"""
