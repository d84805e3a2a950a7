// Starts headless Chromium under playwright-core as tests/browser/launch.mjs does (same
// flags, same environment), for the other browser scripts: PLAYWRIGHT_CORE_DIR, CHROMIUM,
// SPARTICUZ_CHROMIUM_DIR (optional), USER_DATA_DIR.
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

export const env = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`environment variable ${name} is not set`);
    process.exit(2);
  }
  return value;
};

const QUIET_FLAGS = [
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const SYSTEM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu'];
const PERMISSIVE_FLAGS = ['--disable-web-security', '--allow-running-insecure-content'];

const flags = async () => {
  const dir = process.env.SPARTICUZ_CHROMIUM_DIR;
  if (!dir) {
    return [...SYSTEM_FLAGS, ...QUIET_FLAGS];
  }
  const entry = createRequire(path.join(dir, 'package.json')).resolve('@sparticuz/chromium');
  const { default: sparticuz } = await import(pathToFileURL(entry).href);
  const args = sparticuz.args.filter((flag) => !PERMISSIVE_FLAGS.includes(flag));
  return [...args, ...QUIET_FLAGS.filter((flag) => !args.includes(flag))];
};

/// A persistent context on a fresh profile, with `stepTimeout` as every wait's default.
export const launch = async (stepTimeout) => {
  const require = createRequire(path.join(env('PLAYWRIGHT_CORE_DIR'), 'package.json'));
  const { chromium } = require('playwright-core');
  const context = await chromium.launchPersistentContext(env('USER_DATA_DIR'), {
    executablePath: env('CHROMIUM'),
    headless: true,
    args: await flags(),
    timeout: stepTimeout,
  });
  context.setDefaultTimeout(stepTimeout);
  context.setDefaultNavigationTimeout(stepTimeout);
  return context;
};
