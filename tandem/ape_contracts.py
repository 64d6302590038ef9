"""Tandem's contracts as Ape instances whose ABI holds every custom error a revert of theirs may
carry (the hub's, the adapters', the libraries'), so Ape names the error and its arguments.

A vault passes on the reverts of the hub, its adapters and the DEX router as they are; with the
ABI of ``TandemVault.json`` alone, Ape shows such a revert as an unknown selector::

    from tandem import ape_contracts

    vault = ape_contracts.vault("0x...")
    try:
        vault.trade(order, sender=master)
    except vault.HopNotAllowed as err:  # also ape.exceptions.CustomError
        err.inputs  # {"token": "0x..."}

Needs Ape (``pip install -e '.[ape]'``) and a network connected, as in ``ape console``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tandem import artifacts
from tandem.config import Settings
from tandem.reverts import with_errors

if TYPE_CHECKING:
    from ape.contracts import ContractInstance
    from ethpm_types import ContractType

# The interface a contract is called through: every function, event and error of its own.
INTERFACES = {"TandemVault": artifacts.VAULT_INTERFACE, "TandemHub": "ITandemHub"}


def contract_type(name: str, settings: Settings | None = None) -> ContractType:
    """Ape's contract type for ``name`` (``TandemVault`` or ``TandemHub``): its interface's ABI
    with every error of ``tandem/abi/TandemErrors.json`` added."""
    from ethpm_types import ContractType

    if name not in INTERFACES:
        raise ValueError(f"no Ape contract type for {name!r}: choose one of {sorted(INTERFACES)}")
    abi: list[dict[str, Any]] = with_errors(artifacts.load(INTERFACES[name], settings).abi)
    return ContractType.model_validate({"contractName": name, "abi": abi})


def at(name: str, address: str, settings: Settings | None = None) -> ContractInstance:
    """The contract ``name`` at ``address`` on Ape's connected network, with the merged ABI
    (Ape keeps it for the address, so a revert from there is decoded with it too)."""
    from ape import chain

    return chain.contracts.instance_at(address, contract_type=contract_type(name, settings))


def vault(address: str, settings: Settings | None = None) -> ContractInstance:
    """A vault: its three parts' functions and events, and every error a revert of it may carry."""
    return at("TandemVault", address, settings)


def hub(address: str, settings: Settings | None = None) -> ContractInstance:
    """The hub, with every error a revert of it may carry."""
    return at("TandemHub", address, settings)


__all__ = ["at", "contract_type", "hub", "vault"]
