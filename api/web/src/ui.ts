// Small helpers shared by the pages.
import { readable } from "./errors";
import { esc } from "./format";

export type Cleanup = () => void;

export const view = () => document.getElementById("view") as HTMLElement;

export function q<T extends HTMLElement = HTMLElement>(root: ParentNode, selector: string): T {
  const el = root.querySelector(selector);
  if (!el) throw new Error(`missing ${selector}`);
  return el as T;
}

export function errorBox(error: unknown): string {
  return `<div class="error" role="alert" data-test="error">${esc(readable(error))}</div>`;
}

export function banner(html: string): void {
  (document.getElementById("banner") as HTMLElement).innerHTML = html;
}

/** Runs ``action`` with the button disabled; shows a readable error in ``out`` if it fails. */
export async function busy(button: HTMLButtonElement, out: HTMLElement | null, action: () => Promise<void>): Promise<void> {
  const label = button.textContent;
  button.disabled = true;
  button.textContent = "Working…";
  if (out) out.innerHTML = "";
  try {
    await action();
  } catch (e) {
    if (out) out.innerHTML = errorBox(e);
    else banner(errorBox(e));
  } finally {
    button.disabled = false;
    button.textContent = label;
  }
}
