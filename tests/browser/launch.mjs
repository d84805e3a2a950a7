// The launch flow in headless Chromium, driven by playwright-core (tests/browser_launch.rs runs
// it). An opener page (the EHR) opens the launch URL in a popup; the popup follows the 302 to
// the Posos simulator's Scan & Go page, which must name the patient and the user; the script
// clicks "Import to DPI", waits for the `#success` (or `#error`) hash and for the postMessage
// the opener receives, then prints one JSON summary line on stdout. Diagnostics go to stderr.
//
// Environment: PLAYWRIGHT_CORE_DIR (npm folder holding playwright-core), CHROMIUM (executable),
// SPARTICUZ_CHROMIUM_DIR (npm folder holding @sparticuz/chromium, when CHROMIUM is its unpacked
// binary: the browser then starts with that package's `args`), USER_DATA_DIR (a fresh empty
// folder), OPENER_URL, STEP_TIMEOUT_MS, TOTAL_TIMEOUT_MS.
import { env, launch } from './chromium.mjs';

const stepTimeout = Number(process.env.STEP_TIMEOUT_MS ?? 10000);
const totalTimeout = Number(process.env.TOTAL_TIMEOUT_MS ?? 30000);

let context;
// Last resort: never outlive the Rust side's patience, even if a close hangs.
const watchdog = setTimeout(() => {
  console.error(`launch.mjs: gave up after ${totalTimeout} ms`);
  process.exit(3);
}, totalTimeout);

const responses = [];
let exitCode = 0;
try {
  context = await launch(stepTimeout);
  context.on('response', (response) => {
    responses.push({ url: response.url(), status: response.status() });
  });
  context.on('console', (message) => console.error(`page console: ${message.text()}`));

  const opener = context.pages()[0] ?? (await context.newPage());
  await opener.goto(env('OPENER_URL'));
  // A click, as the EHR's button would be: window.open from a user gesture.
  const [popup] = await Promise.all([
    opener.waitForEvent('popup'),
    opener.click('#launch'),
  ]);
  await popup.waitForLoadState('domcontentloaded');
  const page = {
    url: popup.url(),
    title: await popup.title(),
    heading: await popup.locator('h1').innerText(),
    user: await popup.locator('tr:has(th:text-is("User")) td').innerText(),
    patient: await popup.locator('tr:has(th:text-is("Patient")) td').innerText(),
    facility: await popup.locator('tr:has(th:text-is("Facility")) td').innerText(),
  };

  await popup.getByRole('button', { name: 'Import to DPI' }).click();
  await popup.waitForURL((url) => url.hash === '#success' || url.hash === '#error');
  const result = await popup.locator('#result').innerText();
  const received = await opener.waitForFunction(() =>
    window.received.length > 0 ? window.received : null,
  );

  const summary = {
    final_url: popup.url(),
    page,
    result,
    messages: await received.jsonValue(),
    opener_log: await opener.locator('#log').innerText(),
    responses,
  };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
} catch (error) {
  console.error(`launch.mjs: ${error?.stack ?? error}`);
  console.error(`responses so far: ${JSON.stringify(responses)}`);
  exitCode = 1;
} finally {
  await context?.close().catch((e) => console.error(`launch.mjs: close: ${e}`));
  clearTimeout(watchdog);
}
process.exit(exitCode);
