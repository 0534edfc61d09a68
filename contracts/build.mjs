// Compile every contracts/src/*.sol with solcjs's standard-JSON API and write contracts/build/Contracts.json
// as {contractName: {abi, bytecode}}. Exits non-zero, printing the compiler's errors, if any error is reported.
import { readFileSync, readdirSync, mkdirSync, writeFileSync, existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const started = Date.now();
const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..");
const srcDir = join(here, "src");
const outDir = join(here, "build");
const require = createRequire(join(root, "package.json"));
const solc = require("solc");

const sources = {};
for (const name of readdirSync(srcDir).filter((f) => f.endsWith(".sol")).sort()) {
  sources[`src/${name}`] = { content: readFileSync(join(srcDir, name), "utf8") };
}
if (Object.keys(sources).length === 0) {
  console.error(`no .sol files in ${srcDir}`);
  process.exit(1);
}

// Resolve imports such as "@openzeppelin/contracts/..." from node_modules; nothing is fetched from elsewhere.
function findImports(path) {
  const candidates = [join(root, "node_modules", path), join(here, path)];
  for (const file of candidates) {
    if (existsSync(file)) return { contents: readFileSync(file, "utf8") };
  }
  return { error: `import not found: ${path} (looked in node_modules; run ./dev up to install it)` };
}

const input = {
  language: "Solidity",
  sources,
  settings: {
    evmVersion: "cancun",
    optimizer: { enabled: true, runs: 200 },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};

const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const messages = output.errors ?? [];
const errors = messages.filter((m) => m.severity === "error");
// Warnings about our own sources are shown; those inside OpenZeppelin are only counted.
const warnings = messages.filter((m) => m.severity !== "error");
const ours = warnings.filter((m) => m.sourceLocation?.file?.startsWith("src/"));
for (const m of ours) console.warn(m.formattedMessage ?? m.message);
if (warnings.length > ours.length) console.warn(`(${warnings.length - ours.length} warning(s) in dependencies not shown)`);
if (errors.length > 0) {
  for (const e of errors) console.error(e.formattedMessage ?? e.message);
  console.error(`contracts: ${errors.length} compiler error(s); nothing written`);
  process.exit(1);
}

const artifacts = {};
for (const [file, contracts] of Object.entries(output.contracts ?? {})) {
  if (!file.startsWith("src/")) continue;
  for (const [name, c] of Object.entries(contracts)) {
    if (!c.evm.bytecode.object) continue; // interfaces and abstract contracts
    artifacts[name] = { abi: c.abi, bytecode: `0x${c.evm.bytecode.object}` };
  }
}
mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, "Contracts.json"), JSON.stringify(artifacts, null, 1));
const secs = ((Date.now() - started) / 1000).toFixed(1);
console.log(`contracts: compiled ${Object.keys(artifacts).join(", ")} with solc ${solc.version()} in ${secs} s`);
