"""Appliance tests: the one-file binary, install.sh into a DESTDIR root, the systemd unit."""
