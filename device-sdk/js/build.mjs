// Bundles the SDK (dist/offsync.js, ESM), the field app and its copy of the SDK into
// sync-service's static folder, or (--tests) each test file into build/test/ for node --test.
import { build } from "esbuild";
import { readdirSync, mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));
const staticDir = join(here, "..", "..", "sync-service", "sync_service", "static", "app");
const common = { bundle: true, format: "esm", target: "es2022", sourcemap: true, logLevel: "warning" };

if (process.argv.includes("--tests")) {
  const tests = readdirSync(join(here, "test")).filter((f) => f.endsWith(".test.ts"));
  mkdirSync(join(here, "build", "test"), { recursive: true });
  await build({
    ...common,
    platform: "node",
    entryPoints: tests.map((f) => join(here, "test", f)),
    outdir: join(here, "build", "test"),
    outExtension: { ".js": ".mjs" },
    external: ["fake-indexeddb"],
  });
} else {
  await build({ ...common, platform: "browser", entryPoints: [join(here, "src", "index.ts")], outfile: join(here, "dist", "offsync.js") });
  mkdirSync(staticDir, { recursive: true });
  await build({ ...common, platform: "browser", minify: true, entryPoints: [join(here, "src", "index.ts")], outfile: join(staticDir, "offsync.js") });
  await build({ ...common, platform: "browser", minify: true, entryPoints: [join(here, "app", "main.ts")], outfile: join(staticDir, "app.js") });
}
