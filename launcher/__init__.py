"""Login-node side: config → plan → preflight → submit → ledger → status/resume. Imports no ML library."""
__version__ = "0.1.0"
