// Wallets: found by EIP-6963 announcements (and window.ethereum when nobody announces), or the
// demo account of a local platform (a key made in this tab, funded by the API's faucet). Sign-In
// with Ethereum against the API's accounts endpoints.
import {
  createPublicClient,
  createWalletClient,
  custom,
  defineChain,
  http,
  type Abi,
  type Account,
  type Address,
  type Chain,
  type EIP1193Provider,
  type PublicClient,
  type WalletClient,
} from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { createSiweMessage } from "viem/siwe";
import { get, post, setSession, hasSession } from "./api";
import { deployment, type Deployment } from "./chain";
import { Reverted, WrongNetwork } from "./errors";

export interface WalletInfo { uuid: string; name: string; icon?: string; rdns?: string; }
interface Announced { info: WalletInfo; provider: EIP1193Provider; }

export interface Connected {
  kind: "injected" | "demo";
  name: string;
  address: Address;
  chainId: number;
  wallet: WalletClient;
  reads: PublicClient;
  account: Account | Address;
  provider?: EIP1193Provider;
}

const announced = new Map<string, Announced>();
const listeners = new Set<() => void>();
let current: Connected | null = null;

export function onWalletChange(fn: () => void): () => void {
  listeners.add(fn);
  return () => listeners.delete(fn);
}
const changed = () => listeners.forEach((fn) => fn());

window.addEventListener("eip6963:announceProvider", ((event: CustomEvent<Announced>) => {
  announced.set(event.detail.info.uuid, event.detail);
  changed();
}) as EventListener);
window.dispatchEvent(new Event("eip6963:requestProvider"));

export function wallets(): Announced[] {
  const list = [...announced.values()];
  const legacy = (window as unknown as { ethereum?: EIP1193Provider }).ethereum;
  if (list.length === 0 && legacy) {
    list.push({ info: { uuid: "window.ethereum", name: "Browser wallet" }, provider: legacy });
  }
  return list;
}

export const connected = (): Connected | null => current;

function chainOf(dep: Deployment): Chain {
  return defineChain({
    id: dep.chainId,
    name: dep.chainId === 31337 ? "Local (anvil)" : `Chain ${dep.chainId}`,
    nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
    rpcUrls: { default: { http: [`${location.origin}/v1/demo/rpc`] } },
  });
}

export async function connectInjected(uuid: string): Promise<Connected> {
  const found = wallets().find((w) => w.info.uuid === uuid);
  if (!found) throw new Error("That wallet is gone. Reload the page.");
  const dep = await deployment();
  const provider = found.provider;
  const accounts = (await provider.request({ method: "eth_requestAccounts" })) as Address[];
  if (!accounts.length) throw new Error("The wallet shared no account.");
  const chainId = Number(await provider.request({ method: "eth_chainId" }));
  const chain = chainOf(dep);
  const transport = custom(provider);
  current = {
    kind: "injected",
    name: found.info.name,
    address: accounts[0],
    chainId,
    wallet: createWalletClient({ account: accounts[0], chain, transport }),
    reads: createPublicClient({ chain, transport }) as PublicClient,
    account: accounts[0],
    provider,
  };
  localStorage.setItem("tandem.wallet", uuid);
  const p = provider as EIP1193Provider & { on?: (e: string, f: (x: unknown) => void) => void };
  p.on?.("accountsChanged", (list) => {
    const next = (list as Address[])[0];
    if (!current || current.provider !== provider) return;
    if (!next) return disconnect();
    if (next.toLowerCase() !== current.address.toLowerCase()) {
      setSession(null);
      current = { ...current, address: next, account: next, wallet: createWalletClient({ account: next, chain, transport }) };
    }
    changed();
  });
  p.on?.("chainChanged", (id) => {
    if (!current || current.provider !== provider) return;
    current = { ...current, chainId: Number(id) };
    changed();
  });
  changed();
  return current;
}

export async function demoAvailable(): Promise<boolean> {
  try {
    return (await get<{ enabled: boolean }>("/v1/demo")).enabled;
  } catch {
    return false;
  }
}

export async function connectDemo(): Promise<Connected> {
  const dep = await deployment();
  let key = sessionStorage.getItem("tandem.demoKey") as `0x${string}` | null;
  const fresh = !key;
  if (!key) key = generatePrivateKey();
  const account = privateKeyToAccount(key);
  if (fresh) await post("/v1/demo/faucet", { address: account.address });
  sessionStorage.setItem("tandem.demoKey", key);
  const chain = chainOf(dep);
  const transport = http(`${location.origin}/v1/demo/rpc`);
  current = {
    kind: "demo",
    name: "Demo account",
    address: account.address,
    chainId: dep.chainId,
    wallet: createWalletClient({ account, chain, transport }),
    reads: createPublicClient({ chain, transport }) as PublicClient,
    account,
  };
  localStorage.setItem("tandem.wallet", "demo");
  changed();
  return current;
}

export function disconnect(): void {
  current = null;
  setSession(null);
  localStorage.removeItem("tandem.wallet");
  changed();
}

/** Reconnects the wallet of the last visit without a prompt, when it still shares the account. */
export async function restore(): Promise<void> {
  const last = localStorage.getItem("tandem.wallet");
  if (!last) return;
  try {
    if (last === "demo" && sessionStorage.getItem("tandem.demoKey")) await connectDemo();
    else {
      const w = wallets().find((x) => x.info.uuid === last);
      if (!w) return;
      const accounts = (await w.provider.request({ method: "eth_accounts" })) as Address[];
      if (accounts.length) await connectInjected(last);
    }
  } catch {
    /* a wallet that no longer answers: stay disconnected */
  }
}

export async function wrongNetwork(): Promise<{ have: number; want: number } | null> {
  if (!current) return null;
  const dep = await deployment();
  return current.chainId === dep.chainId ? null : { have: current.chainId, want: dep.chainId };
}

export async function switchNetwork(): Promise<void> {
  if (!current?.provider) return;
  const dep = await deployment();
  await current.provider.request({
    method: "wallet_switchEthereumChain",
    params: [{ chainId: `0x${dep.chainId.toString(16)}` }],
  });
  current = { ...current, chainId: Number(await current.provider.request({ method: "eth_chainId" })) };
  changed();
}

export function requireWallet(): Connected {
  if (!current) throw new Error("Connect a wallet first.");
  return current;
}

async function ensureChain(w: Connected): Promise<void> {
  const dep = await deployment();
  const id = w.provider ? Number(await w.provider.request({ method: "eth_chainId" })) : w.chainId;
  if (id !== w.chainId) {
    current = { ...w, chainId: id };
    changed();
  }
  if (id !== dep.chainId) {
    throw new WrongNetwork(`Your wallet is on chain ${id}; Tandem here runs on chain ${dep.chainId}. Switch networks in your wallet, then try again: nothing was sent.`);
  }
}

export interface Call { address: Address; abi: Abi; functionName: string; args: readonly unknown[]; }

/** Simulates the call (a revert is reported before anything is signed), sends it and waits for
 *  its receipt. Returns the transaction hash. */
export async function send(call: Call, onSent?: (hash: string) => void): Promise<`0x${string}`> {
  const w = requireWallet();
  await ensureChain(w);
  const { request } = await w.reads.simulateContract({ ...call, account: w.account } as never);
  // A margin over the estimate: calls that try a swap and catch its failure (entry swaps, exits)
  // need more than the least gas that lets them succeed.
  const gas = await w.reads.estimateContractGas({ ...call, account: w.account } as never);
  const hash = await w.wallet.writeContract({ ...(request as object), gas: (gas * 13n) / 10n } as never);
  onSent?.(hash);
  const receipt = await w.reads.waitForTransactionReceipt({ hash, pollingInterval: 250 });
  if (receipt.status !== "success") throw new Reverted(`The transaction ${hash.slice(0, 10)}… reverted on-chain: nothing it would have done happened.`);
  return hash;
}

export async function read<T>(call: Call): Promise<T> {
  const w = requireWallet();
  return (await w.reads.readContract(call as never)) as T;
}

export async function simulate<T>(call: Call): Promise<T> {
  const w = requireWallet();
  const { result } = await w.reads.simulateContract({ ...call, account: w.account } as never);
  return result as T;
}

// --- Sign-In with Ethereum

export const signedIn = (): boolean => hasSession();

/** An EIP-4361 message over a fresh nonce stating ``statement``, signed by the wallet now. */
export async function signStatement(statement: string, lifetimeMs = 86_400_000): Promise<{ message: string; signature: string }> {
  const w = requireWallet();
  const n = await post<{ nonce: string; domain: string; uri: string; chain_id: number }>("/v1/auth/nonce");
  const message = createSiweMessage({
    address: w.address,
    chainId: n.chain_id,
    domain: n.domain,
    nonce: n.nonce,
    uri: n.uri,
    version: "1",
    statement,
    issuedAt: new Date(),
    expirationTime: new Date(Date.now() + lifetimeMs),
  });
  const signature = await w.wallet.signMessage({ account: w.account, message });
  return { message, signature };
}

export async function signIn(): Promise<void> {
  const signed = await signStatement("Sign in to Tandem to see your notifications.");
  const session = await post<{ token: string }>("/v1/auth/sign-in", signed);
  setSession(session.token);
  changed();
}

export async function signOut(): Promise<void> {
  try {
    await fetch("/v1/auth/session", { method: "DELETE", headers: { Authorization: `Bearer ${sessionStorage.getItem("tandem.session")}` } });
  } finally {
    setSession(null);
    changed();
  }
}
