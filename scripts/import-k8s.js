// Runs cdk8s-cli's own k8s importer against a local JSON schema instead of
// the GitHub download it hard-codes, so imports/ can be generated offline.
// Usage: node scripts/import-k8s.js <definitions.json> <k8s-version> <outdir>
'use strict';
const fs = require('fs');
const path = require('path');

// cdk8s-cli's package "exports" hide lib/, so load its modules by file path.
const cli = path.join(__dirname, '..', 'node_modules', 'cdk8s-cli', 'lib');
const util = require(path.join(cli, 'util.js'));
const { ImportKubernetesApi } = require(path.join(cli, 'import', 'k8s.js'));

async function main() {
  const [schemaPath, version, outdir] = process.argv.slice(2);
  if (!schemaPath || !version || !outdir) {
    console.error('usage: import-k8s.js <definitions.json> <k8s-version> <outdir>');
    process.exit(2);
  }
  // The importer calls util.download(url); answer it from the local file.
  util.download = async () => fs.readFileSync(schemaPath, 'utf-8');
  const options = await ImportKubernetesApi.match({ source: `k8s@${version}` }, {});
  await new ImportKubernetesApi(options).import({ targetLanguage: 'python', outdir });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
