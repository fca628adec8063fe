"""End-to-end recipes behind the CLI commands, usable from Python."""
