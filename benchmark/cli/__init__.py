"""The command line (``python -m benchmark``): ``commands`` (``main``, one function per
subcommand), ``parser`` (the argparse tree), ``inputs`` (checks of user input before anything
runs), ``reporter`` (what a finished run prints), ``doctor`` (what this machine can run)."""
