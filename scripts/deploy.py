"""`ape run deploy`: the same local deployment as `tandem deploy`, on Ape's connected node.

    SOLCX_BINARY_PATH=$PWD/build/ape/solcx PATH=$PWD/node_modules/.bin:$PATH \
        ape run deploy --network ethereum:local:foundry

With the foundry provider Ape starts anvil (or connects to one already answering at its host,
e.g. APE_FOUNDRY_HOST=http://127.0.0.1:8545). The deployment itself is
`tandem.protocol.deploy_local`: real Uniswap V2/V3, test assets, feeds, pools and the protocol,
recorded in deployments/<chain id>.json (TANDEM_DEPLOYMENTS_DIR to put it elsewhere).
"""

from __future__ import annotations

import click
from ape import chain as ape_chain

from tandem import chain
from tandem.config import load_settings
from tandem.errors import TandemError
from tandem.protocol import deploy_local


def main() -> None:
    provider = ape_chain.provider
    uri = getattr(provider, "uri", None)
    if not isinstance(uri, str) or not uri.startswith(("http://", "https://")):
        raise click.ClickException(
            f"the {provider.name} provider has no HTTP RPC URL; "
            "use a local anvil, e.g. --network ethereum:local:foundry"
        )
    try:
        settings = load_settings()
        w3 = chain.connect(uri, settings=settings)
        dep = deploy_local(w3, settings=settings)
    except TandemError as exc:
        raise click.ClickException(str(exc)) from exc
    chain_id = w3.eth.chain_id
    for name, address in dep.addresses().items():
        click.echo(f"{name:<28} {address}")
    click.echo(f"Address book: {settings.paths.deployment(chain_id)}")
    click.echo(f"TandemHub deployed at {dep.hub.address} on chain {chain_id} via {uri}")
