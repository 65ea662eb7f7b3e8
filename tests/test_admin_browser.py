"""The dump list in the Django admin, driven in a real headless Chromium through Playwright."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from tests.conftest import REPO, run_command
from tests.test_stale import dump_behind_the_code, migrate

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = REPO / "bench-results" / "screenshots"


@pytest.fixture
def browser_page() -> Iterator:
    if CHROMIUM is None:
        pytest.skip("no Chromium installed (Debian package 'chromium'); .ci/run installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        page.set_default_timeout(20_000)
        yield page
        browser.close()


@pytest.fixture
def two_dumps(dumps_dir: Path) -> tuple[Path, Path]:
    """A stale dump and a current one, and an admin user (before Playwright's event loop starts)."""
    stale = dump_behind_the_code("default")
    migrate("default")
    current = Path(run_command("generatedump", "dev").out.split()[-1])
    User.objects.create_superuser("admin", "admin@example.com", "browser-pw")
    return stale, current


def test_admin_filter_verify_and_screenshot(live_server, two_dumps: tuple[Path, Path], browser_page) -> None:
    stale, current = two_dumps
    page = browser_page

    page.goto(f"{live_server.url}/admin/login/?next=/admin/seeddump/dumprecord/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "browser-pw")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/seeddump/dumprecord/")
    table = page.locator("#result_list")
    assert stale.name in table.inner_text() and current.name in table.inner_text()
    assert "stale: 1 behind" in table.inner_text()
    # Readable at 1600 px beside the admin's app sidebar (open, as it is by default): no column off screen.
    assert page.locator("#nav-sidebar").is_visible()
    widths = page.evaluate(
        "[document.querySelector('#result_list').getBoundingClientRect().right,"
        " document.documentElement.scrollWidth, window.innerWidth]"
    )
    print("result list right edge, page width, window width:", widths)
    assert widths[0] <= widths[2] and widths[1] <= widths[2], widths

    page.click("#changelist-filter >> text=Stale")
    page.wait_for_url("**schema=stale**")
    rows = page.locator("#result_list > tbody > tr")
    assert rows.count() == 1 and stale.name in rows.first.inner_text()

    page.check("#action-toggle")
    page.select_option("select[name=action]", "verify_checksums")
    page.click("button[name=index]")
    message = page.locator(".messagelist li").first.inner_text()
    assert f"Checksum OK for {stale.name}" in message

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / "admin-dump-list.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    page.goto(f"{live_server.url}/admin/seeddump/dumprecord/?schema=current")
    page.click(f"text={current.name}")
    detail = page.locator("#content").inner_text()
    assert "reality_node" in detail and "3000" in detail and '"checksum": "sha256:' in detail
