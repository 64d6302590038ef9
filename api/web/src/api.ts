// The REST API of the same origin: JSON in and out, problem documents turned into errors that
// say what went wrong. The session token (Sign-In with Ethereum) is kept for this tab only.

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly title: string,
    detail: string,
    readonly problem = "", // the problem's name: `exchange-key-can-withdraw` for urn:tandem:problem:exchange-key-can-withdraw
  ) {
    super(detail);
  }
}

const TOKEN = "tandem.session";
let token: string | null = sessionStorage.getItem(TOKEN);

export function setSession(value: string | null): void {
  token = value;
  if (value) sessionStorage.setItem(TOKEN, value);
  else sessionStorage.removeItem(TOKEN);
}

export function hasSession(): boolean {
  return token !== null;
}

async function call<T>(method: string, path: string, body?: unknown, extra?: Record<string, string>): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json", ...extra };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "Offline", "The Tandem server did not answer. Check that it runs.");
  }
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    if (response.status === 401 && path.startsWith("/v1/account")) setSession(null);
    const detail = data?.detail ?? `${response.status} ${response.statusText}`;
    const problem = String(data?.type ?? "").replace(/^urn:tandem:problem:/, "");
    throw new ApiError(response.status, data?.title ?? "Error", String(detail), problem);
  }
  return data as T;
}

export const get = <T>(path: string, query?: Record<string, string | number | boolean | undefined>) => {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined && v !== "") params.set(k, String(v));
  const qs = params.toString();
  return call<T>("GET", qs ? `${path}?${qs}` : path);
};
export const post = <T>(path: string, body?: unknown, headers?: Record<string, string>) => call<T>("POST", path, body ?? {}, headers);
export const del = <T>(path: string) => call<T>("DELETE", path);
export const patch = <T>(path: string, body: unknown, headers?: Record<string, string>) => call<T>("PATCH", path, body, headers);

// --- what the API answers (the parts the dApp reads); big integers are decimal strings

export type Big = string;

export interface Metrics {
  master: string; vault: string; window: string; closed: boolean; ranked: boolean;
  history_days: number; master_equity_usd: Big; aum_usd: Big; roi: number; pnl_usd: Big;
  max_drawdown: number; volatility: number | null; sharpe: number | null; risk_score: number | null;
  win_rate: number | null; trades: number; followers_now: number; followers_ever: number;
  followers_in_profit: number; follower_median_return: number | null; followers_pnl_usd: Big;
}
export interface MasterPage { items: Metrics[]; next_cursor: string | null; }
export interface TradePage { block: number; items: Trade[]; next_cursor: string | null; }
export interface CurvePoint {
  block_number: number; timestamp: number; master_index: Big | null; master_aum: Big | null;
  pool_aum: Big | null; share_price: Big | null; followers: number; drawdown: number | null;
}
export interface Outcome {
  follower: string; invested_usd: Big; current_value_usd: Big; withdrawn_usd: Big;
  fees_paid_usd: Big; gifted_usd: Big; pnl_usd: Big; joined_at: number; left_at: number | null;
}
export interface FeeTerms {
  fee_bps: number | null; scheduled_fee_bps: number | null; scheduled_at: number | null;
  protocol_fee_share_bps: number | null;
}
export interface Profile {
  block: number; master: string; vault: string; metrics: Metrics[];
  aum: { master_usd: Big | null; pool_usd: Big | null; total_usd: Big | null };
  followers_now: number; followers_ever: number; followers: Outcome[]; fees: FeeTerms;
  equity_curve: CurvePoint[]; monthly_returns: { month: string; roi: number }[];
}
export interface Trade {
  block_number: number; log_index: number; tx_hash: string; timestamp: number; token_in: string;
  token_out: string; master_in: Big; pool_in: Big; master_out: Big; pool_out: Big;
  price_in: Big; price_out: Big;
}
export interface VaultState {
  block: number; vault: string; master: string; delegate: string | null;
  point: CurvePoint | null; master_book: { token: string; amount: Big }[];
  shares: Record<string, Big>;
  suspension: { suspended: boolean; block_number: number } | null; fees: FeeTerms;
}
export interface Position {
  vault: string; master: string; shares: Big; entry_value_usd: Big; current_value_usd: Big;
  realised_pnl_usd: Big; unrealised_pnl_usd: Big; fees_paid_usd: Big;
  limits: { stop_loss_bps: number; take_profit_bps: number; max_drawdown_bps: number };
  stop_loss_distance_bps: number | null; take_profit_distance_bps: number | null;
  max_drawdown_distance_bps: number | null;
}
export interface Follower {
  block: number; follower: string; fees_paid_usd: Big;
  account: { deposited: Big; withdrawn: Big; free: Big | null }; positions: Position[];
}
export interface Asset {
  token: string; token_decimals: number; feed_decimals: number; tradable: boolean; answer: Big | null;
}
export interface Protocol {
  block: number; chain_id: number | null; hub: string | null; assets: Asset[];
  params: { default_allocation_cap_bps: number; max_slippage_bps: number; paused: boolean } | null;
  contracts: Record<string, string>; abis: Record<string, unknown[]>;
}
export interface Notification {
  id: number; kind: string; vault: string | null; block_number: number; tx_hash: string;
  block_timestamp: number; created_at: number; data: Record<string, unknown>;
}
export interface Readiness { cursor: number; final_block: number; }
export interface Session { address: string; expires_at: number; second_factor: boolean; }
export interface ExchangeFollow {
  id: number; vault: string; allocation: string; cash: string; positions: Record<string, string>;
  markets: Record<string, string>; stop_loss_bps: number | null; max_drawdown_bps: number | null;
  status: string; reason: string | null;
}
export interface ExchangeKey {
  id: number; exchange: string; api_key_hint: string; status: string; reason: string | null;
  can_trade: boolean; can_withdraw: boolean; ip_restricted: boolean; checked_at: number;
  created_at: number; warnings: string[]; follows: ExchangeFollow[];
}
export interface DragRow {
  trade: string; vault: string; exchange: string; symbol: string; side: string; kind: string;
  status: string; reason: string | null; size: string; filled: string | null; average: string | null;
  master_price: string | null; slippage_bps: number | null; fee: string | null; block_time: number | null;
  known_ms: number | null; sent_ms: number | null; acked_ms: number | null; filled_ms: number | null;
}
export interface FollowDrag {
  follow_id: number; vault: string; exchange: string; orders: number; filled: number; skipped: number;
  exits: number; p50_filled_ms: number | null; p99_filled_ms: number | null; p50_sent_ms: number | null;
  mean_slippage_bps: number | null; fees: string;
}
export interface MyDrag { items: DragRow[]; next_cursor: string | null; follows: FollowDrag[]; }
