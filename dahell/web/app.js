// dahell status page: polls /status, browses look-alikes through /api/products and /similar.
// No build step, no dependencies. Numbers and prices are formatted for Colombia (es-CO, COP).
"use strict";

(() => {
  const POLL_MS = 2000;
  const LOCALE = "es-CO";
  const TOKEN_KEY = "dahell.token";
  const STATE_ORDER = ["starting", "running", "idle", "stalled", "backoff", "parked", "failed", "stopped"];
  // Outcomes charted as "throughput" per stage (others are summed when a stage is not listed).
  const PRIMARY = { scraper: ["products"], vectorizer: ["embedded", "failed"] };
  const BAD = new Set(["rejected", "failed", "page_errors"]);

  const num = new Intl.NumberFormat(LOCALE);
  const num1 = new Intl.NumberFormat(LOCALE, { maximumFractionDigits: 1 });
  const dist = new Intl.NumberFormat(LOCALE, { minimumFractionDigits: 3, maximumFractionDigits: 3 });
  const cop = new Intl.NumberFormat(LOCALE, { style: "currency", currency: "COP", maximumFractionDigits: 0 });
  const clock = new Intl.DateTimeFormat(LOCALE, { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
  const dayClock = new Intl.DateTimeFormat(LOCALE, { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", hourCycle: "h23" });

  const { $, el, svg } = Dahell; // common.js, loaded first
  let skewMs = 0; // server clock minus ours, so "3 min ago" is right even when the clocks differ
  let pollTimer = null;
  let searchTimer = null;
  let searchSeq = 0;

  // --- auth -----------------------------------------------------------------------------

  // common.js (loaded first) owns the token and the fetch; the status page adds its token form on 401.
  async function api(path) {
    try {
      return await Dahell.api(path);
    } catch (err) {
      if (err.status !== 401) throw err;
      $("token-form").hidden = false;
      throw new Dahell.ApiError(401, "This daemon needs its HTTP token (open the page as /?token=…).");
    }
  }

  // --- helpers --------------------------------------------------------------------------

  function ago(iso) {
    const seconds = Math.max(0, (Date.now() + skewMs - Date.parse(iso)) / 1000);
    if (seconds < 60) return Math.round(seconds) + " s ago";
    if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
    if (seconds < 86400) return num1.format(seconds / 3600) + " h ago";
    return num1.format(seconds / 86400) + " days ago";
  }

  function timeOf(iso) {
    const date = new Date(iso);
    const today = new Date(Date.now() + skewMs).toDateString() === date.toDateString();
    return today ? clock.format(date) : dayClock.format(date);
  }

  function price(value) {
    return value === null || value === undefined || value === "" ? "–" : cop.format(Number(value));
  }

  // The contract says `supplier`; dahell.similar also answers `supplier_name` / `store_name`.
  function supplierOf(p) {
    return p.supplier || p.store_name || p.supplier_name || "supplier ?";
  }

  function label(outcome) {
    return outcome.replace(/_/g, " ");
  }

  // --- status ---------------------------------------------------------------------------

  async function poll() {
    clearTimeout(pollTimer);
    try {
      const status = await api("/status");
      skewMs = Date.parse(status.now) - Date.now();
      $("banner").hidden = true;
      $("token-form").hidden = true;
      render(status);
    } catch (err) {
      showBanner(err.status === 401 ? err.message : "Cannot reach the daemon: " + err.message + ". Retrying…");
    }
    pollTimer = setTimeout(poll, POLL_MS);
  }

  function showBanner(text) {
    const banner = $("banner");
    banner.textContent = text;
    banner.hidden = false;
    const pill = $("health-pill");
    pill.className = "pill pill-unknown";
    pill.textContent = "unreachable";
  }

  function render(status) {
    const pill = $("health-pill");
    pill.className = "pill " + (status.healthy ? "pill-ok" : "pill-bad");
    pill.textContent = status.healthy ? "healthy" : "unhealthy";
    $("health-reasons").textContent = (status.unhealthy_reasons || []).join("; ");
    $("fact-version").textContent = status.version || "–";
    $("fact-started").textContent = timeOf(status.started_at) + " (" + ago(status.started_at) + ")";
    $("fact-lag").textContent = num1.format(status.loop_lag_ms || 0) + " ms";
    $("fact-updated").textContent = clock.format(new Date(status.now));
    renderTotals(status);
    renderStages(status);
    renderErrors(status.recent_errors || []);
  }

  function renderTotals(status) {
    const totals = status.totals || {};
    const emb = totals.embeddings || {};
    $("total-products").textContent = totals.products === undefined ? "–" : num.format(totals.products);
    $("total-suppliers").textContent = totals.suppliers === undefined ? "–" : num.format(totals.suppliers);
    const done = emb.done || 0;
    const all = done + (emb.pending || 0) + (emb.failed || 0);
    $("total-embedded").textContent = num.format(done);
    $("total-embedding-detail").textContent =
      num.format(emb.pending || 0) + " pending · " + num.format(emb.failed || 0) + " failed";
    $("embedding-bar").style.width = (all ? (100 * done) / all : 0).toFixed(1) + "%";
    const queues = Object.entries(status.queues || {});
    $("total-queues").textContent = queues.length
      ? queues.map(([name, depth]) => name + " " + num.format(depth)).join(" · ")
      : "–";
  }

  function renderStages(status) {
    const box = $("stages");
    const names = Object.keys(status.stages || {});
    if (!names.length) {
      box.replaceChildren(el("p", { class: "muted", text: "No stage is running." }));
      return;
    }
    const history = status.history || [];
    box.replaceChildren(...names.map((name) => stageCard(name, status.stages[name], history)));
  }

  function stageCard(name, stage, history) {
    const state = stage.state || "unknown";
    const counters = stage.counters || {};
    const outcomes = Object.keys(counters).filter((key) => !key.includes(":"));
    const series = throughput(name, history);
    const reasons = Object.entries(counters).filter(([key]) => key.includes(":"));
    return el(
      "article",
      { class: "stage state-" + state, "data-stage": name, "aria-labelledby": "stage-" + name },
      el(
        "header",
        { class: "stage-head" },
        el("h3", { id: "stage-" + name, text: name }),
        el("span", { class: "badge badge-" + state, "data-state": state, text: state })
      ),
      el(
        "p",
        { class: "since" },
        "since " + timeOf(stage.since) + ", " + ago(stage.since),
        stage.restarts ? el("span", { class: "restarts", text: " · " + stage.restarts + " restart" + (stage.restarts === 1 ? "" : "s") }) : " · no restarts",
        stage.queue_depth === null || stage.queue_depth === undefined ? null : " · queue " + num.format(stage.queue_depth)
      ),
      stage.reason || stage.last_error
        ? el(
            "p",
            { class: "stage-error" },
            stage.reason ? el("strong", { text: stage.reason }) : null,
            stage.reason && stage.last_error ? ": " : null,
            stage.last_error || null
          )
        : null,
      chart(name, series),
      outcomes.length
        ? el(
            "dl",
            { class: "counters" },
            outcomes.map((key) =>
              el(
                "div",
                { class: BAD.has(key) && counters[key] ? "counter bad" : "counter", "data-outcome": key },
                el("dt", { text: label(key) }),
                el("dd", { text: num.format(counters[key]) })
              )
            )
          )
        : el("p", { class: "muted counters-empty", text: "Nothing counted yet." }),
      reasons.length
        ? el(
            "details",
            { class: "reasons" },
            el("summary", { text: "By reason (" + reasons.length + ")" }),
            el(
              "ul",
              {},
              reasons
                .sort((a, b) => b[1] - a[1])
                .map(([key, n]) => el("li", {}, el("code", { text: key }), " " + num.format(n)))
            )
          )
        : null
    );
  }

  // Units per minute between consecutive history samples (cumulative counters -> rates).
  function throughput(name, history) {
    const wanted = PRIMARY[name];
    const total = (sample) => {
      const counts = (sample.stages || {})[name] || {};
      let sum = 0;
      for (const [key, value] of Object.entries(counts)) {
        if (key.includes(":")) continue;
        if (wanted && !wanted.includes(key)) continue;
        sum += Number(value) || 0;
      }
      return sum;
    };
    const points = [];
    for (let i = 1; i < history.length; i++) {
      const dt = (Date.parse(history[i].t) - Date.parse(history[i - 1].t)) / 60000;
      if (!(dt > 0)) continue;
      const delta = Math.max(0, total(history[i]) - total(history[i - 1])); // restarts reset counts
      points.push({ t: Date.parse(history[i].t), v: delta / dt });
    }
    return points;
  }

  function chart(name, points) {
    const W = 300;
    const H = 64;
    const PAD = 4;
    const last = points.length ? points[points.length - 1].v : 0;
    const peak = points.reduce((m, p) => Math.max(m, p.v), 0);
    const unit = name === "scraper" ? "products" : "units";
    const summary = points.length
      ? "now " + num1.format(last) + " " + unit + "/min, peak " + num1.format(peak)
      : "collecting samples…";
    const figure = el("figure", { class: "chart" });
    const box = svg("svg", {
      viewBox: `0 0 ${W} ${H}`,
      preserveAspectRatio: "none",
      role: "img",
      class: "spark",
      "data-points": String(points.length),
      "aria-label": `Throughput of ${name} over the last minutes: ${summary}`,
    });
    box.append(svg("line", { x1: 0, y1: H - PAD, x2: W, y2: H - PAD, class: "axis" }));
    if (points.length >= 2) {
      const t0 = points[0].t;
      const span = Math.max(1, points[points.length - 1].t - t0);
      const top = peak > 0 ? peak : 1;
      const xy = points.map((p) => [
        ((p.t - t0) / span) * W,
        H - PAD - (p.v / top) * (H - 2 * PAD),
      ]);
      const line = xy.map(([x, y]) => x.toFixed(1) + "," + y.toFixed(1)).join(" ");
      box.append(svg("polygon", { points: `0,${H - PAD} ${line} ${W},${H - PAD}`, class: "area" }));
      box.append(svg("polyline", { points: line, class: "line" }));
      const [lx, ly] = xy[xy.length - 1];
      box.append(svg("circle", { cx: lx, cy: ly, r: 2.5, class: "dot" }));
    } else if (points.length === 1) {
      // One interval so far: a level line at its rate, until the next sample arrives.
      const y = peak > 0 ? PAD + 2 : H - PAD;
      box.append(svg("line", { x1: 0, y1: y, x2: W, y2: y, class: "line pending" }));
      box.append(svg("circle", { cx: W - 3, cy: y, r: 2.5, class: "dot" }));
    }
    figure.append(box);
    figure.append(el("figcaption", {}, el("span", { text: "throughput" }), el("span", { text: summary })));
    return figure;
  }

  function renderErrors(errors) {
    const body = $("errors-body");
    if (!errors.length) {
      body.replaceChildren(el("tr", {}, el("td", { colspan: "4", class: "muted", text: "No errors." })));
      return;
    }
    body.replaceChildren(
      ...errors.slice(0, 20).map((err) =>
        el(
          "tr",
          {},
          el("td", { class: "nowrap" }, el("time", { datetime: err.at, title: err.at, text: timeOf(err.at) })),
          el("td", { text: err.stage }),
          el("td", {}, el("code", { text: err.reason })),
          el("td", { class: "detail", text: err.detail || "" })
        )
      )
    );
  }

  // --- look-alike browser ---------------------------------------------------------------

  async function search(q) {
    const seq = ++searchSeq;
    const note = $("products-note");
    note.textContent = "Searching…";
    try {
      const data = await api("/api/products?limit=24&q=" + encodeURIComponent(q));
      if (seq !== searchSeq) return;
      const products = data.products || [];
      note.textContent = products.length
        ? (q ? products.length + (products.length === 1 ? " product matches “" : " products match “") + q + "”." : "Recent products with an embedding. Pick one to see its look-alikes.")
        : q
          ? "No product matches “" + q + "”."
          : "No product has an embedding yet.";
      $("products").replaceChildren(...products.map((p) => productCard(p, { pickable: true })));
    } catch (err) {
      if (seq === searchSeq) note.textContent = "Search failed: " + err.message;
    }
  }

  function photo(product, size) {
    const img = el("img", {
      src: product.image_url || "",
      alt: product.title ? "Photo of " + product.title : "Product photo",
      loading: "lazy",
      decoding: "async",
      referrerpolicy: "no-referrer",
      width: size,
      height: size,
    });
    img.addEventListener("error", () => img.classList.add("broken"), { once: true });
    return img;
  }

  function productCard(p, { pickable = false, distance = null } = {}) {
    const body = [
      photo(p, 160),
      el(
        "span",
        { class: "card-text" },
        el("span", { class: "card-title", text: p.title || "Product " + p.product_id }),
        el("span", { class: "card-supplier", text: supplierOf(p) }),
        el(
          "span",
          { class: "card-prices" },
          el("span", { title: "Sale price (what the dropshipper pays)" }, "sale ", el("b", { text: price(p.sale_price) })),
          el("span", { title: "Suggested retail price" }, "suggested ", el("b", { text: price(p.suggested_price) }))
        ),
        distance === null
          ? el("span", { class: "card-meta", text: "#" + p.product_id + (p.has_embedding === false ? " · no embedding yet" : "") })
          : el("span", { class: "card-meta distance", text: "distance " + dist.format(Number(distance)) + " · #" + p.product_id })
      ),
    ];
    if (!pickable) return el("li", { class: "card", "data-product-id": p.product_id }, ...body);
    return el(
      "li",
      { class: "card", "data-product-id": p.product_id },
      el(
        "button",
        {
          type: "button",
          class: "card-button",
          disabled: p.has_embedding === false,
          "aria-label": "Show look-alikes of " + (p.title || "product " + p.product_id),
          onclick: () => pick(p.product_id),
        },
        ...body
      )
    );
  }

  async function pick(productId) {
    for (const card of document.querySelectorAll("#products .card")) {
      card.classList.toggle("selected", card.dataset.productId === String(productId));
    }
    const panel = $("similar");
    panel.hidden = false;
    $("similar-title").textContent = "Nearest neighbours of #" + productId;
    $("neighbours-note").textContent = "Loading…";
    $("neighbours").replaceChildren();
    $("picked").replaceChildren();
    try {
      const data = await api("/similar/" + encodeURIComponent(productId) + "?k=12");
      const p = data.product;
      $("similar-title").textContent = "Look-alikes of “" + (p.title || "#" + p.product_id) + "”";
      $("picked").replaceChildren(
        photo(p, 320),
        el(
          "figcaption",
          {},
          el("strong", { text: p.title || "Product " + p.product_id }),
          el("span", { text: supplierOf(p) + (p.supplier_id ? " (#" + p.supplier_id + ")" : "") }),
          el("span", {}, "sale ", el("b", { text: price(p.sale_price) }), " · suggested ", el("b", { text: price(p.suggested_price) })),
          el("span", { class: "muted", text: "#" + p.product_id })
        )
      );
      const neighbours = data.neighbours || [];
      $("neighbours-note").textContent = neighbours.length
        ? neighbours.length + " nearest by image (cosine distance: 0 is identical)."
        : "No other product has an embedding yet.";
      $("neighbours").replaceChildren(...neighbours.map((n) => productCard(n, { distance: n.distance })));
      window.history.replaceState(null, "", "#product=" + productId);
    } catch (err) {
      $("neighbours-note").textContent =
        err.status === 404 ? "Not available: " + err.message : "Could not load look-alikes: " + err.message;
    }
    panel.focus({ preventScroll: true });
    panel.scrollIntoView({ behavior: "smooth", block: "start" });
  }

  // --- wiring ---------------------------------------------------------------------------

  function init() {
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
      $("token-input").value = "";
      poll();
      search($("search-input").value.trim());
    });
    $("search-form").addEventListener("submit", (event) => {
      event.preventDefault();
      clearTimeout(searchTimer);
      search($("search-input").value.trim());
    });
    $("search-input").addEventListener("input", () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => search($("search-input").value.trim()), 300);
    });
    $("similar-close").addEventListener("click", () => {
      $("similar").hidden = true;
      window.history.replaceState(null, "", window.location.pathname + window.location.search);
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) poll();
    });
    poll();
    search("");
    const match = /^#product=(\d+)$/.exec(window.location.hash);
    if (match) pick(match[1]);
  }

  // Exposed for tests and the curious: the numbers the charts are drawn from.
  window.dahell = { throughput, STATE_ORDER };
  init();
})();
