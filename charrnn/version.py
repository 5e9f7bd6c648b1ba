"""The package version and distribution name, in a module of their own so that every layer may
read them."""

__version__ = "0.1.0"

# The name on the package index: `charrnn` there is an unrelated 2017 package. The command and
# the import stay `charrnn`.
DISTRIBUTION = "charrnn-cli"


def install_hint(extra: str) -> str:
    """The command that installs an optional extra (pip adds only the extra's packages to an
    installed charrnn, editable checkouts included)."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"
