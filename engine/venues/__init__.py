"""Venues: where orders go. base.py is the protocol every venue implements."""
