// The deployment as the API describes it (GET /v1/protocol): addresses, assets and the ABIs the
// dApp builds calls with and decodes custom errors with.
import type { Abi, AbiItem, Address } from "viem";
import { get, type Protocol } from "./api";

export interface Token { address: Address; symbol: string; decimals: number; price: number | null; }

export interface Deployment {
  chainId: number;
  hub: Address;
  base: Token;
  tokens: Map<string, Token>; // by lower-case address
  hubAbi: Abi;
  vaultAbi: Abi;
  capBps: number;
  raw: Protocol;
}

// The OpenZeppelin ERC-20 errors and the calls the dApp makes to a token.
export const erc20Abi = [
  { type: "function", name: "balanceOf", stateMutability: "view", inputs: [{ name: "a", type: "address" }], outputs: [{ type: "uint256" }] },
  { type: "function", name: "allowance", stateMutability: "view", inputs: [{ name: "o", type: "address" }, { name: "s", type: "address" }], outputs: [{ type: "uint256" }] },
  { type: "function", name: "approve", stateMutability: "nonpayable", inputs: [{ name: "s", type: "address" }, { name: "v", type: "uint256" }], outputs: [{ type: "bool" }] },
  { type: "error", name: "ERC20InsufficientBalance", inputs: [{ name: "sender", type: "address" }, { name: "balance", type: "uint256" }, { name: "needed", type: "uint256" }] },
  { type: "error", name: "ERC20InsufficientAllowance", inputs: [{ name: "spender", type: "address" }, { name: "allowance", type: "uint256" }, { name: "needed", type: "uint256" }] },
] as const satisfies Abi;

let loaded: Promise<Deployment> | null = null;

export function deployment(): Promise<Deployment> {
  loaded ??= load().catch((e) => {
    loaded = null;
    throw e;
  });
  return loaded;
}

const errorsOf = (abi: Abi): AbiItem[] => abi.filter((item) => item.type === "error");

async function load(): Promise<Deployment> {
  const p = await get<Protocol>("/v1/protocol");
  if (!p.hub || p.chain_id === null) throw new Error("The API knows no deployment yet.");
  const symbols = new Map<string, string>();
  for (const [name, address] of Object.entries(p.contracts)) {
    if (name.startsWith("token:")) symbols.set(address.toLowerCase(), name.slice(6));
  }
  const tokens = new Map<string, Token>();
  for (const a of p.assets) {
    const price = a.answer === null ? null : Number(a.answer) / 10 ** a.feed_decimals;
    tokens.set(a.token.toLowerCase(), {
      address: a.token as Address,
      symbol: symbols.get(a.token.toLowerCase()) ?? a.token.slice(0, 8),
      decimals: a.token_decimals,
      price,
    });
  }
  const hub = p.abis.ITandemHub as Abi;
  const vault = p.abis.ITandemVault as Abi;
  // Every call carries every error the protocol declares, so a revert from a vault inside a
  // hub call (or from the token) decodes too.
  const baseAddress = (p.contracts["token:USDC"] ?? p.assets[0]?.token) as Address;
  return {
    chainId: p.chain_id,
    hub: p.hub as Address,
    base: tokens.get(baseAddress.toLowerCase()) ?? { address: baseAddress, symbol: "BASE", decimals: 6, price: 1 },
    tokens,
    hubAbi: [...hub, ...errorsOf(vault), ...errorsOf(erc20Abi)],
    vaultAbi: [...vault, ...errorsOf(hub), ...errorsOf(erc20Abi)],
    capBps: p.params?.default_allocation_cap_bps ?? 2500,
    raw: p,
  };
}

export function token(dep: Deployment, address: string): Token {
  return dep.tokens.get(address.toLowerCase()) ?? { address: address as Address, symbol: address.slice(0, 8), decimals: 18, price: null };
}

