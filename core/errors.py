"""User-facing errors: the CLI prints them as one line on stderr and exits with code 2."""


class UserError(Exception):
    """Bad input from the user (flags, config, prompts, paths). Message is one line."""


class ConfigError(UserError):
    """An unknown config key or an invalid value."""
