"""Capture input: frames ``(timestamp, linktype, bytes, wire_length)`` from files or interfaces."""
