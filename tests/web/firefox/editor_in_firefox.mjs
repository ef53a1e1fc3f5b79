// The editor in Firefox (ESR, WebDriver BiDi): load, add a node by search, load a bundled workflow,
// queue it against the real server and wait for its WEBP and MP4 previews.
// Usage: node editor_in_firefox.mjs SERVER_URL ARTIFACT_DIR   → prints one JSON line with the findings.
import puppeteer from "puppeteer-core";

const [url, artifacts] = process.argv.slice(2);
const browser = await puppeteer.launch({ browser: "firefox", executablePath: process.env.FIREFOX || "/usr/bin/firefox-esr",
  headless: true });
const findings = { errors: [] };
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => findings.errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error" && !m.text().includes("favicon")) findings.errors.push(m.text()); });
  await page.setViewport({ width: 1400, height: 900 });
  await page.goto(url, { waitUntil: "networkidle0" });
  await page.waitForSelector("body[data-ready=true]", { timeout: 30000 });

  // Double-click the canvas, search, Enter: a KSampler with real form controls.
  await page.mouse.click(700, 400, { count: 2 });
  await page.waitForSelector("#search-input", { visible: true });
  await page.type("#search-input", "ksampler");
  await page.keyboard.press("Enter");
  await page.waitForSelector(".node[data-type='KSampler']");
  findings.ksamplerControls = await page.$$eval(".node[data-type='KSampler'] input, .node[data-type='KSampler'] select",
    (els) => els.length);

  // A bundled workflow from the menu, queued with the Queue button.
  const option = await page.$$eval("#workflows-menu option", (os) => os.map((o) => o.value).find((v) => v.includes("tiny_svd_demo")));
  findings.menuOption = option || null;
  await page.select("#workflows-menu", option);
  await page.waitForSelector(".node[data-type='SaveVideo']");
  findings.nodes = await page.$$eval(".node", (els) => els.length);
  await page.click("#queue-button");
  await page.waitForSelector(".node[data-type='SaveVideo'] video[src]", { timeout: 180000 });
  await page.waitForSelector(".node[data-type='SaveAnimatedWEBP'] img[src]", { timeout: 60000 });
  findings.webpLoaded = await page.$eval(".node[data-type='SaveAnimatedWEBP'] img[src]",
    (img) => new Promise((done) => (img.complete ? done(img.naturalWidth > 0) : img.addEventListener("load", () => done(img.naturalWidth > 0)))));
  // Playing H.264 needs the system's codecs (ffmpeg); record whether Firefox could read the metadata.
  findings.mp4ReadyState = await page.$eval(".node[data-type='SaveVideo'] video[src]",
    (v) => new Promise((done) => { if (v.readyState >= 1) done(v.readyState); else { v.addEventListener("loadedmetadata", () => done(v.readyState)); setTimeout(() => done(v.readyState), 5000); } }));
  await page.screenshot({ path: `${artifacts}/firefox-finished.png` });
} catch (error) {
  findings.failure = String(error && error.stack || error);
} finally {
  await browser.close();
}
console.log(JSON.stringify(findings));
