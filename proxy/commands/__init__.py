"""The I/O side of `oversight` subcommands that are more than a call: rule checks."""
