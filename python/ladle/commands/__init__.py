"""One module per ``ladle`` subcommand; each exposes ``register(subparsers)``."""
