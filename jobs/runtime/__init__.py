"""Leaves the node side builds on: log, processes, ports, polling, checkpoint markers, templates."""
