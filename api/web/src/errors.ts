// Every failure as a sentence: a rejection in the wallet, a wrong network, a contract's custom
// error (decoded with the ABIs the API serves), a problem document from the API.
import { BaseError, ContractFunctionRevertedError, UserRejectedRequestError } from "viem";
import { ApiError } from "./api";
import { bps } from "./format";

export class WrongNetwork extends Error {}
export class Reverted extends Error {}

type Explain = (args: readonly unknown[]) => string;
const n = (v: unknown) => Number(v);

const EXPLAIN: Record<string, Explain> = {
  InsufficientFreeBalance: (a) => `Your Tandem account has ${a[0]} base units free but ${a[1]} are needed. Deposit more first.`,
  AllocationCapExceeded: (a) => `This allocation (${a[1]} base units) would put more of your capital with one master than your cap allows (${a[2]}). Deposit more, or allocate less.`,
  EntryCostAboveBound: (a) => `Buying into the master's positions would cost more than your bound of ${bps(n(a[2]))}: the pool's swaps are too expensive right now. Raise the bound or try a smaller amount.`,
  EntryFillAboveOracle: () => "The pool's price is off the oracle's (pushed there, or the feed is stale): the entry was refused to protect the other followers. Try again later.",
  CopyingIsSuspended: () => "Copying of this master is suspended (their drawdown is past the protocol's bound).",
  ProtocolPaused: () => "The protocol is paused by its guardian. Exits still work.",
  StalePrice: () => "A price feed is stale, so the protocol cannot value the pool now. Try again after the next price update.",
  InvalidPrice: () => "A price feed answered an invalid price. Try again later.",
  SlippageExceeded: (a) => `The swap would return ${a[0]}, less than the minimum ${a[1]}. Nothing was swapped.`,
  LossBudgetExceeded: () => "The pool's weekly loss budget is used up: this swap would lose more against the oracle than it allows. Try again later, or exit in kind.",
  ExitInAllocationBlock: () => "Shares cannot be exited in the block they were allocated in. Try again in a moment.",
  PoolAboveMasterMultiple: () => "The pool would be larger than the protocol allows against the master's own equity. Allocate less.",
  MasterBelowPoolMultiple: () => "The master's own equity would fall below what the pool's size requires.",
  LimitsOutOfBounds: () => "A limit is out of bounds: stop-loss and drawdown at most 90%, take-profit at most 500%.",
  NoPosition: () => "You hold no shares in this vault.",
  InsufficientShares: (a) => `You hold ${a[0]} shares, fewer than the ${a[1]} asked for.`,
  ZeroAmount: () => "The amount is zero.",
  ZeroShares: () => "The allocation is too small to buy a share.",
  DepositAndWithdrawalInOneBlock: () => "A deposit and a withdrawal cannot share a block. Try again in a moment.",
  UnknownVault: () => "This address is not a Tandem vault.",
  AssetNotTradable: () => "The pool holds a token the protocol has made untradable: new allocations cannot buy into it.",
  NotMaster: () => "Only the vault's master may do this.",
  NotMasterOrDelegate: () => "Only the vault's master or their delegate may trade.",
  InsufficientMasterBalance: (a) => `The master's book holds ${a[1]} of that token, less than the ${a[2]} asked for.`,
  VaultExists: () => "You already have a vault.",
  ERC20InsufficientBalance: (a) => `Your wallet holds ${a[1]} base units, fewer than the ${a[2]} needed.`,
  ERC20InsufficientAllowance: () => "The token's approval is too small. Approve again.",
};

export function readable(error: unknown): string {
  if (error instanceof WrongNetwork || error instanceof Reverted) return error.message;
  if (error instanceof ApiError) return `${error.title}: ${error.message}`;
  if (error instanceof BaseError) {
    const rejected = error.walk(
      (e) => e instanceof UserRejectedRequestError || (e as { code?: number })?.code === 4001,
    );
    if (rejected) return "You rejected the request in your wallet: nothing was sent.";
    const revert = error.walk((e) => e instanceof ContractFunctionRevertedError);
    if (revert instanceof ContractFunctionRevertedError) {
      const name = revert.data?.errorName;
      if (name) {
        const explain = EXPLAIN[name];
        const args = revert.data?.args ?? [];
        return `The contract refused it (${name}). ${explain ? explain(args) : `${name}(${args.join(", ")})`}`;
      }
      return `The contract refused it: ${revert.reason ?? revert.shortMessage}`;
    }
    if (/chain/i.test(error.name)) return "Your wallet is on another network. Switch to the platform's network and try again.";
    return error.shortMessage;
  }
  const code = (error as { code?: number })?.code;
  if (code === 4001) return "You rejected the request in your wallet: nothing was sent.";
  if (error instanceof Error) return error.message;
  return String(error);
}
