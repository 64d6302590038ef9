// Numbers as people read them. USD values from the API have 18 decimals.

const E18 = 10n ** 18n;

export function toNumber(value: string | bigint | null | undefined, decimals = 18): number {
  if (value === null || value === undefined) return NaN;
  const big = typeof value === "bigint" ? value : BigInt(value);
  const unit = 10n ** BigInt(decimals);
  return Number(big / unit) + Number(big % unit) / Number(unit);
}

const usdFmt = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", maximumFractionDigits: 2 });
export function usd(value: string | bigint | null | undefined, decimals = 18): string {
  const n = toNumber(value, decimals);
  return Number.isNaN(n) ? "–" : usdFmt.format(n);
}

export function signedUsd(value: string | bigint | null | undefined): string {
  const n = toNumber(value);
  if (Number.isNaN(n)) return "–";
  return (n > 0 ? "+" : "") + usdFmt.format(n);
}

export function pct(ratio: number | null | undefined, digits = 1): string {
  if (ratio === null || ratio === undefined || Number.isNaN(ratio)) return "–";
  return `${(ratio * 100).toFixed(digits)}%`;
}

export function bps(value: number | null | undefined): string {
  if (value === null || value === undefined) return "off";
  return `${(value / 100).toFixed(value % 100 ? 2 : 0)}%`;
}

export function amount(units: string | bigint, decimals: number, digits = 4): string {
  const n = toNumber(units, decimals);
  return n.toLocaleString("en-US", { maximumFractionDigits: n >= 1000 ? 2 : digits });
}

export function short(address: string | null | undefined): string {
  return address ? `${address.slice(0, 6)}…${address.slice(-4)}` : "–";
}

export function date(seconds: number): string {
  return new Date(seconds * 1000).toISOString().slice(0, 16).replace("T", " ");
}

export function cls(n: number | string | bigint | null | undefined): string {
  if (n === null || n === undefined) return "";
  const v = typeof n === "number" ? n : Number(n);
  return v > 0 ? "good" : v < 0 ? "bad" : "";
}

export function esc(text: unknown): string {
  return String(text ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function parseUnits(text: string, decimals: number): bigint | null {
  const t = text.trim().replace(/,/g, "");
  if (!/^\d+(\.\d+)?$/.test(t)) return null;
  const [whole, frac = ""] = t.split(".");
  if (frac.length > decimals) return null;
  return BigInt(whole) * 10n ** BigInt(decimals) + BigInt(frac.padEnd(decimals, "0") || "0");
}

export { E18 };
