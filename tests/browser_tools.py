"""What the browser tests do as a person (or their phone) would: read the QR code off the
screen, and run axe-core on a page."""

import io
from pathlib import Path

import zxingcpp
from PIL import Image
from playwright.sync_api import Page

AXE = Path(__file__).resolve().parent / "browser" / "node_modules" / "axe-core" / "axe.min.js"
WCAG_21_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def csp_violations(target) -> list[str]:
    """Every Content-Security-Policy violation that a page or a whole browser context reports
    from now on (the list fills as they come): a test asserts it stays empty."""
    violations = []
    target.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return violations


def read_qr(page: Page, selector: str) -> str:
    """Screenshot the element and decode it, as the phone's camera does."""
    shot = page.locator(selector).screenshot()
    [barcode] = zxingcpp.read_barcodes(Image.open(io.BytesIO(shot)))
    return barcode.text


def axe_violations(page: Page) -> list[str]:
    """WCAG 2.1 A and AA violations on the page, one line each."""
    # Evaluated by the browser's debugging protocol, which the page's CSP does not govern (a
    # <script> tag added to the page would be refused: no inline script, by design).
    page.evaluate(AXE.read_text() + "\n;undefined")
    result = page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", WCAG_21_AA
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
        for v in result["violations"]
    ]
