"""The scraper stage: pages through the Dropi catalog from inside a logged-in Chromium.

One pass reads the catalog from offset 0 until a page comes back shorter than asked. Each page
is appended to the journal (and fsynced) before its lines go to the loader's queue, and the
pass position is saved after every page in `<data_dir>/scraper/progress.json`, so a crash, a
browser kill or a kill -9 resumes at the page where it stopped.

Mode `api` calls the catalog endpoint with `fetch` inside the app's page, using the app's own
token; mode `ui` clicks "Mostrar más productos" like a person and captures the app's responses.
Both yield the same pages. Page outcomes:

    ok            journaled and sent
    auth refused  (401/403, or isSuccess false with an auth message) log in again, same page
    429           wait Retry-After, same page
    other failure retry with backoff up to `max_page_retries`, then count it and move on
    browser gone  relaunch Chromium, same page

Where each part lives: `stage` (the passes: pacing, page outcomes, journal and send, the pass
summary), `session` (Chromium, login, the token, mode api's fetch), `ui` (mode ui's cursor),
`catalog` (the endpoint's request and answers, journal lines: pure), `files` (what is kept under
`<data_dir>/scraper`). Which Chromium to start is `dahell.browser`'s business.
"""

from __future__ import annotations

from dahell.stages.scraper.catalog import PageResult, journal_lines, jwt_claims
from dahell.stages.scraper.session import BrowserGone
from dahell.stages.scraper.stage import ScraperStage

__all__ = ["BrowserGone", "PageResult", "ScraperStage", "journal_lines", "jwt_claims"]
