"""argparse entry points only: parse, call the library, print."""
