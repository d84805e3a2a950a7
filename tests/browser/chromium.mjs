// Starts headless Chromium under playwright-core for every browser script (launch.mjs,
// console.mjs), from the environment tests/common/browser.rs sets: PLAYWRIGHT_CORE_DIR,
// CHROMIUM, SPARTICUZ_CHROMIUM_DIR (optional), USER_DATA_DIR.
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

// Without these Chromium keeps dialing Google's hosts, which a closed network refuses.
const QUIET_FLAGS = [
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
// A system Chromium (Debian's `chromium`): headless, no sandbox (tests may run as root), no GPU.
const SYSTEM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu'];
// Of @sparticuz/chromium's `args`, those that would let pages do what a user's browser forbids:
// the test must see the same-origin rules the EHR's browser applies.
const PERMISSIVE_FLAGS = ['--disable-web-security', '--allow-running-insecure-content'];

// @sparticuz/chromium's headless shell starts with the package's own `args` (headless shell,
// single process, no zygote, SwiftShader), less the permissive ones, plus the quiet ones.
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
