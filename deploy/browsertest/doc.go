// Package browsertest drives the viewer portal in a real browser: headless Chromium from the
// distribution's package (apt-get install chromium), through the DevTools protocol (chromedp),
// against a single-process Logbook started in the test. It is its own module and test binary, so
// its embedded ClickHouse engine is the only one in its process.
package browsertest
