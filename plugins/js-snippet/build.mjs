// Build: bundle + minify src/index.js with esbuild into dist/activelead.<hash>.js (immutable,
// content-hashed) and dist/activelead.js (the stable name), write dist/manifest.json and print
// the size. Fails when the gzipped size is over the budget. Same sources, same bytes, same hash.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const BUDGET = 4096; // bytes, minified + gzipped
const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, "dist");

const result = await build({
  entryPoints: [join(root, "src/index.js")],
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  legalComments: "none",
  charset: "ascii",
  write: false,
});
const code = result.outputFiles[0].contents;
const hash = createHash("sha256").update(code).digest("hex").slice(0, 12);
const file = `activelead.${hash}.js`;
const gzip = gzipSync(code, { level: 9 }).length;

mkdirSync(dist, { recursive: true });
for (const name of readdirSync(dist)) {
  if (/^activelead\.[0-9a-f]+\.js$/.test(name) && name !== file) rmSync(join(dist, name));
}
writeFileSync(join(dist, file), code);
writeFileSync(join(dist, "activelead.js"), code);
const manifest = { file, hash, bytes: code.length, gzipBytes: gzip, budgetGzipBytes: BUDGET };
writeFileSync(join(dist, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
console.log(`dist/${file}: ${code.length} bytes minified, ${gzip} bytes gzipped (budget ${BUDGET})`);
if (gzip > BUDGET) {
  console.error(`snippet over its size budget: ${gzip} > ${BUDGET} bytes gzipped`);
  process.exit(1);
}
