// Builds dist/ (ESM library entries), and ../../assets/switchboard.js (the minified browser bundle
// the Rust binary embeds). `node build.mjs --size` prints the core's minified and gzipped size.
// Type declarations come from `tsc -p tsconfig.json` (see package.json "build").
import { build } from 'esbuild';
import { gzipSync } from 'node:zlib';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const common = { bundle: true, format: 'esm', target: 'es2020', platform: 'neutral', logLevel: 'warning' };

if (process.argv.includes('--size')) {
  const r = await build({ ...common, entryPoints: [here('src/index.ts')], minify: true, write: false });
  const code = r.outputFiles[0].contents;
  console.log(`core (src/index.ts) minified: ${code.length} bytes, minified+gzipped: ${gzipSync(code, { level: 9 }).length} bytes`);
  process.exit(0);
}

// library: readable ESM; react.js keeps `react` and the core as imports
await build({ ...common, entryPoints: [here('src/index.ts')], outfile: here('dist/index.js') });
await build({
  ...common,
  entryPoints: [here('src/react.ts')],
  outfile: here('dist/react.js'),
  external: ['react', './index.js'],
});

// browser bundle for the demo page: minified ESM, `import { connect } from '/switchboard.js'`
await build({
  ...common,
  platform: 'browser',
  entryPoints: [here('src/index.ts')],
  outfile: here('../../assets/switchboard.js'),
  minify: true,
  legalComments: 'none',
  banner: { js: '// switchboard-client (clients/js) - built by `npm run build`, do not edit' },
});
const size = readFileSync(here('../../assets/switchboard.js')).length;
console.log(`built dist/ and assets/switchboard.js (${size} bytes)`);
