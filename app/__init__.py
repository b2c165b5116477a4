"""imchat: a self-hosted instant-messaging server and web client for LAN and intranet chat."""

__version__ = "0.2.0.dev0"
