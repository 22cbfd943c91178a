"""User-facing errors: the CLI prints them as one line on stderr and exits with code 2."""


class UserError(Exception):
    """Bad input from the user (flags, config, prompts, paths). Message is one line."""


class ConfigError(UserError):
    """An unknown config key or an invalid value."""


#: Characters that reorder or hide text in a terminal: bidi controls and zero-width marks.
_INVISIBLE = frozenset(
    "\u061c\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2066\u2067\u2068\u2069\ufeff"
)


def printable_line(text: str, limit: int = 600) -> str:
    """``text`` made safe to print as one terminal line: control characters (C0 incl. NUL and
    newlines, DEL, C1) and bidi / zero-width marks escaped as ``\\xNN`` / ``\\uNNNN``, then cut
    to ``limit`` characters with a note of how many were dropped.

    >>> printable_line("bad\\x00name\\u202egpj.exe\\n", limit=80)
    'bad\\\\x00name\\\\u202egpj.exe\\\\n'
    """
    out = []
    for char in text:
        code = ord(char)
        if char == "\n":
            out.append("\\n")
        elif code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif char in _INVISIBLE:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    line = "".join(out)
    if len(line) > limit:
        line = f"{line[:limit]}... ({len(line) - limit} more characters)"
    return line
