"""`gpucost simulate`: placeholder until the simulator lands (owned by the simulator server)."""

import click


@click.group()
def simulate() -> None:
    """Run the built-in provider simulator."""
