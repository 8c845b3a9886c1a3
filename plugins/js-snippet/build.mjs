// Build: bundle + minify src/index.js with esbuild into dist/activelead.<hash>.js (immutable,
// content-hashed) and dist/activelead.js (the stable name), and src/stepup-entry.js (the proxy's
// step-up page) into dist/stepup.<hash>.js; write dist/manifest.json and print the sizes. Fails
// when a gzipped size is over its budget. Same sources, same bytes, same hash.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const BUDGET = 4096; // bytes, minified + gzipped: the snippet every page loads
const STEPUP_BUDGET = 4096; // the step-up page's script, loaded only when a post is held
const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, "dist");

async function bundle(entry, stem, budget) {
  const result = await build({
    entryPoints: [join(root, "src", entry)],
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
  const file = `${stem}.${hash}.js`;
  const gzip = gzipSync(code, { level: 9 }).length;
  for (const name of readdirSync(dist)) {
    if (new RegExp(`^${stem}\\.[0-9a-f]+\\.js$`).test(name) && name !== file) rmSync(join(dist, name));
  }
  writeFileSync(join(dist, file), code);
  console.log(`dist/${file}: ${code.length} bytes minified, ${gzip} bytes gzipped (budget ${budget})`);
  return { code, file, hash, bytes: code.length, gzipBytes: gzip, over: gzip > budget };
}

mkdirSync(dist, { recursive: true });
const main = await bundle("index.js", "activelead", BUDGET);
const stepup = await bundle("stepup-entry.js", "stepup", STEPUP_BUDGET);
writeFileSync(join(dist, "activelead.js"), main.code);
const manifest = {
  file: main.file, hash: main.hash, bytes: main.bytes, gzipBytes: main.gzipBytes, budgetGzipBytes: BUDGET,
  stepup: { file: stepup.file, hash: stepup.hash, bytes: stepup.bytes, gzipBytes: stepup.gzipBytes, budgetGzipBytes: STEPUP_BUDGET },
};
writeFileSync(join(dist, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
for (const [name, b, budget] of [["snippet", main, BUDGET], ["step-up script", stepup, STEPUP_BUDGET]]) {
  if (b.over) {
    console.error(`${name} over its size budget: ${b.gzipBytes} > ${budget} bytes gzipped`);
    process.exitCode = 1;
  }
}
