// The launch page in headless Chromium, driven by playwright-core (tests/browser_launch.rs
// runs it). The EHR opens `/launch/scan?…&mode=page`; the page frames the Posos simulator's
// Scan & Go; the script checks that a message posted by another window is ignored, clicks
// "Import to DPI" inside the frame, then waits for the page to show "ACK AA" (the simulator
// pushed the bundle to the daemon, which mapped it and delivered it to a python-hl7 receiver).
// It prints one JSON summary line on stdout and saves screenshots; diagnostics go to stderr.
//
// Environment: as launch.mjs (see chromium.mjs), plus PAGE_URL, SCREENSHOT_DIR,
// STEP_TIMEOUT_MS, ACK_TIMEOUT_MS, TOTAL_TIMEOUT_MS.
import path from 'node:path';
import { env, launch } from './chromium.mjs';

const stepTimeout = Number(process.env.STEP_TIMEOUT_MS ?? 10000);
const ackTimeout = Number(process.env.ACK_TIMEOUT_MS ?? 20000);
const totalTimeout = Number(process.env.TOTAL_TIMEOUT_MS ?? 45000);
const shots = env('SCREENSHOT_DIR');

let context;
const watchdog = setTimeout(() => {
  console.error(`launch_page.mjs: gave up after ${totalTimeout} ms`);
  process.exit(3);
}, totalTimeout);

const responses = [];
const violations = [];
let exitCode = 0;
let page;
try {
  context = await launch(stepTimeout);
  context.on('response', (response) => {
    responses.push({ url: response.url(), status: response.status() });
  });
  context.on('console', (message) => {
    const text = message.text();
    if (/Content Security Policy/i.test(text)) {
      violations.push(text);
    }
    console.error(`page console: ${text}`);
  });

  page = context.pages()[0] ?? (await context.newPage());
  const answer = await page.goto(env('PAGE_URL'));
  const policy = answer?.headers()['content-security-policy'] ?? null;
  await page.locator('#headline').waitFor();
  const waiting = await page.locator('#headline').innerText();

  // A message from a window that is not Scan & Go (the page itself) is ignored.
  await page.evaluate(() => window.postMessage({ status: 'error', prescription: null }, '*'));
  await page.locator('#launch[data-ignored="1"]').waitFor();
  const afterForged = await page.locator('#scan-status').innerText();

  const frame = page.frameLocator('#scan');
  await frame.getByRole('button', { name: 'Import to DPI' }).click();
  await page.screenshot({ path: path.join(shots, 'launch-page-imported.png'), fullPage: true });
  await page.locator('#headline', { hasText: 'ACK AA' }).waitFor({ timeout: ackTimeout });
  await page.locator('#scan-status', { hasText: 'Scan & Go' }).waitFor();
  await page.screenshot({ path: path.join(shots, 'launch-page-ack.png'), fullPage: true });

  const summary = {
    policy,
    waiting,
    after_forged: afterForged,
    headline: await page.locator('#headline').innerText(),
    scan_status: await page.locator('#scan-status').innerText(),
    steps: await page.locator('#steps li').allInnerTexts(),
    messages: await page.locator('#messages li').allInnerTexts(),
    state: await page.locator('#launch').getAttribute('data-state'),
    violations,
    responses,
  };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
} catch (error) {
  console.error(`launch_page.mjs: ${error?.stack ?? error}`);
  console.error(`responses so far: ${JSON.stringify(responses)}`);
  if (page) {
    console.error(`page text: ${await page.locator('body').innerText().catch(() => '?')}`);
    await page
      .screenshot({ path: path.join(shots, 'launch-page-failed.png'), fullPage: true })
      .catch(() => {});
  }
  exitCode = 1;
} finally {
  await context?.close().catch((e) => console.error(`launch_page.mjs: close: ${e}`));
  clearTimeout(watchdog);
}
process.exit(exitCode);
