"""`ape run deploy`: the same local deployment as `tandem deploy`, on the node Ape connects to.

To keep the deployment, deploy to a node you run (`tandem node`, or any anvil) by its URL:

    .venv/bin/tandem node &                     # http://127.0.0.1:8545, until stopped
    SOLCX_BINARY_PATH=$PWD/build/ape/solcx PATH=$PWD/node_modules/.bin:$PATH \
        ape run deploy --network http://127.0.0.1:8545

With `--network ethereum:local:foundry` Ape connects to an anvil already answering at its host
(APE_FOUNDRY_HOST), or starts one itself and stops it when the script ends: the deployment then
ends with it, so no address book is written for it. The deployment itself is
`tandem.protocol.deploy_local`: real Uniswap V2/V3, test assets, feeds, pools and the protocol,
recorded in the node's address book under deployments/ (TANDEM_DEPLOYMENTS_DIR to put it
elsewhere). A book whose contracts are still live on the node is not overwritten unless
`--force`.
"""

from __future__ import annotations

from typing import Any

import click
from ape.cli import ConnectedProviderCommand

from tandem import artifacts, chain
from tandem.config import load_settings
from tandem.errors import TandemError
from tandem.protocol import deploy_local

EPHEMERAL_NOTE = (
    "Ape started this node and stops it when the script ends, and the deployment with it: no "
    "address book was written. To keep a deployment, start a node (`tandem node`) and run "
    "`ape run deploy --network http://127.0.0.1:8545`."
)


@click.command(cls=ConnectedProviderCommand, short_help="deploy Uniswap, test assets and Tandem")
@click.option(
    "--force",
    is_flag=True,
    help="deploy even when this node's address book names contracts that are still live",
)
def cli(provider: Any, force: bool) -> None:
    uri = getattr(provider, "uri", None)
    if not isinstance(uri, str) or not uri.startswith(("http://", "https://")):
        raise click.ClickException(
            f"the {provider.name} provider has no HTTP RPC URL; deploy to a node by its URL, "
            "e.g. --network http://127.0.0.1:8545"
        )
    # Ape's own node (one it started) goes when the script ends: record nothing for it.
    ephemeral = getattr(provider, "process", None) is not None
    try:
        settings = load_settings()
        w3 = chain.connect(uri, settings=settings)
        dep = deploy_local(w3, settings=settings, save=not ephemeral, force=force)
    except TandemError as exc:
        raise click.ClickException(str(exc)) from exc
    chain_id = w3.eth.chain_id
    for name, address in dep.addresses().items():
        click.echo(f"{name:<28} {address}")
    if ephemeral:
        click.echo(EPHEMERAL_NOTE)
    else:
        book = artifacts.deployment_path(artifacts.book_key(w3), settings)
        click.echo(f"Address book: {book}")
    click.echo(f"TandemHub deployed at {dep.hub.address} on chain {chain_id} via {uri}")
