// Builds the dApp: src/main.ts (TypeScript, viem, Lightweight Charts, all from npm) bundled by
// esbuild into dist/, static files the API serves at `/`. Nothing is fetched at run time.
// Prints the size of what a browser downloads, raw and gzipped.
import { build } from "esbuild";
import { mkdirSync, readFileSync, rmSync, writeFileSync, readdirSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });

await build({
  entryPoints: { app: join(here, "src", "main.ts") },
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  outdir: dist,
  legalComments: "none",
  logLevel: "warning",
});
writeFileSync(join(dist, "index.html"), readFileSync(join(here, "index.html")));

let raw = 0;
let gzip = 0;
const files = {};
for (const name of readdirSync(dist).sort()) {
  const body = readFileSync(join(dist, name));
  const zipped = gzipSync(body, { level: 9 }).length;
  files[name] = { bytes: body.length, gzip: zipped };
  raw += body.length;
  gzip += zipped;
}
writeFileSync(join(dist, "build.json"), JSON.stringify({ files, bytes: raw, gzip }, null, 2));
const kb = (n) => (n / 1024).toFixed(1);
console.log(`dApp built in api/web/dist: ${kb(raw)} KB, ${kb(gzip)} KB gzipped`);
