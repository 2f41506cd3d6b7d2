// The product page: /api/products/<id> as a stock-per-warehouse chart, a price history and the
// offers of the same item side by side. Charts are inline SVG drawn here (no library).
"use strict";

(() => {
  const D = window.Dahell;
  const { t, $, el, svg } = D;
  const COLORS = ["#2f6fde", "#e8590c", "#2b8a3e", "#ae3ec9", "#c92a2a", "#0c8599", "#f59f00", "#5c7cfa", "#846358", "#495057"];
  const DAY_MS = 86_400_000;

  function productId() {
    const match = window.location.pathname.match(/\/product\/([^/]+)\/?$/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  async function load() {
    const id = productId();
    document.title = "dahell · " + t("product.title", { id });
    try {
      const detail = await D.api("/api/products/" + encodeURIComponent(id));
      $("banner").hidden = true;
      render(detail);
    } catch (err) {
      if (err.status === 404 || err.status === 400) {
        $("product").replaceChildren(el("p", { class: "empty", text: t("error.not_found", { id }) }));
        $("product").removeAttribute("aria-busy");
        return;
      }
      D.showError(err, load);
    }
  }

  function render(detail) {
    const p = detail.product || {};
    document.title = "dahell · " + (p.title || t("product.title", { id: p.product_id }));
    const end = endOf(detail);
    renderHeader(p);
    renderStock(detail.stock || [], end);
    renderPrices(detail.prices || [], end);
    renderGroup(detail.group, p);
    $("product").removeAttribute("aria-busy");
  }

  // The charts run to the newest moment known: the last sighting or the last history point.
  function endOf(detail) {
    const times = [detail.product && detail.product.last_seen_at, detail.at];
    for (const s of detail.stock || []) for (const pt of s.series || []) times.push(pt.at);
    for (const pt of detail.prices || []) times.push(pt.at);
    const ms = times.filter(Boolean).map((v) => Date.parse(v)).filter((v) => !Number.isNaN(v));
    return ms.length ? Math.max(...ms) : Date.now();
  }

  // --- header ------------------------------------------------------------------------------

  function renderHeader(p) {
    const fact = (label, value, cls) => el("div", { class: "fact " + (cls || "") }, el("dt", { text: label }), el("dd", {}, value));
    const margin = D.missing(p.margin)
      ? el("span", { class: "muted", text: t("no_price") })
      : el("span", { class: p.margin < 0 ? "neg" : "pos" }, D.money(p.margin), el("small", { text: " (" + D.pct(p.margin_pct) + ")" }));
    const observed = t(Number(p.days_observed) === 1 ? "day_observed" : "days_observed", { n: D.days(p.days_observed || 0) });
    $("product").replaceChildren(
      el("figure", { class: "hero-photo" }, D.photo(p.image_url, p.title || "", "hero")),
      el(
        "div",
        { class: "hero-text" },
        el("h2", { class: "product-title", id: "product-title", text: p.title || "#" + p.product_id }),
        el(
          "p",
          { class: "muted" },
          el("span", { class: "supplier", text: p.supplier_name || "–" }),
          " · #" + p.product_id,
          p.sku ? " · " + t("product.sku") + " " + p.sku : "",
          p.product_type ? " · " + p.product_type : ""
        ),
        (p.categories || []).length ? el("p", { class: "chips" }, p.categories.map((c) => el("span", { class: "chip", text: c }))) : null,
        el(
          "dl",
          { class: "facts-grid" },
          fact(t("col.sale_price"), D.money(p.sale_price), "money"),
          fact(t("col.suggested_price"), D.missing(p.suggested_price) ? "–" : D.money(p.suggested_price), "money"),
          fact(t("col.margin"), margin),
          fact(t("col.units_7d"), el("span", {}, D.rate(p.units_per_day_7d), el("small", { class: "muted", text: " · " + observed }))),
          fact(t("col.units_30d"), D.rate(p.units_per_day_30d)),
          fact(t("product.stock_now"), D.number(p.stock)),
          fact(t("col.suppliers"), D.number(p.group_suppliers || 1)),
          fact(t("product.first_seen"), D.date(p.first_seen_at || p.created_at)),
          fact(t("product.last_seen"), D.when(p.last_seen_at))
        ),
        p.url ? el("p", {}, el("a", { href: p.url, rel: "noopener noreferrer", target: "_blank", text: t("product.open_dropi") + " ↗" })) : null
      )
    );
  }

  // --- charts --------------------------------------------------------------------------------

  // series: [{key, label, color, points: [{t: ms, v: number}]}]; values hold until the next point.
  function stepChart(series, end, opts) {
    const W = 880, H = 260, L = opts.left || 56, R = 16, T = 12, B = 30;
    const all = series.flatMap((s) => s.points);
    let t0 = Math.min(...all.map((p) => p.t));
    let t1 = Math.max(end, ...all.map((p) => p.t));
    if (t1 - t0 < DAY_MS) t0 = t1 - DAY_MS;
    const top = Math.max(...all.map((p) => p.v), 1);
    // Stock starts at zero; prices zoom in on their range, so a 3% move is visible.
    const vmin = opts.zero ? 0 : niceFloor(Math.min(...all.map((p) => p.v)) * 0.9);
    const vmax = vmin + niceMax(Math.max(top - vmin, top * 0.05));
    const x = (ms) => L + ((ms - t0) * (W - L - R)) / (t1 - t0);
    const y = (v) => T + (H - T - B) * (1 - (v - vmin) / (vmax - vmin));
    const grid = [];
    const parts = divisions(vmax - vmin);
    for (let i = 0; i <= parts; i++) {
      const v = vmin + ((vmax - vmin) * i) / parts;
      grid.push(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      grid.push(svg("text", { class: "tick", x: L - 8, y: y(v) + 4, "text-anchor": "end" }, opts.format(v)));
    }
    // Day ticks a whole number of days apart from the first point (captures come daily).
    const ticks = [];
    const step = Math.max(1, Math.ceil((t1 - t0) / DAY_MS / 6)) * DAY_MS;
    for (let ms = t0; ms <= t1 + 60_000; ms += step) {
      const anchor = ms === t0 ? "start" : ms + step > t1 + 60_000 && x(t1) - x(ms) < 30 ? "end" : "middle";
      ticks.push(svg("text", { class: "tick", x: x(ms), y: H - 8, "text-anchor": anchor }, D.day(new Date(ms).toISOString())));
    }
    const lines = series.map((s) => {
      const pts = [...s.points].sort((a, b) => a.t - b.t);
      let d = "";
      pts.forEach((p, i) => {
        d += (i ? ` H ${x(p.t).toFixed(1)} V ` : `M ${x(p.t).toFixed(1)} `) + y(p.v).toFixed(1);
      });
      d += ` H ${x(t1).toFixed(1)}`;
      const dots = pts.map((p) =>
        svg("circle", { class: "pt", cx: x(p.t).toFixed(1), cy: y(p.v).toFixed(1), r: 3, fill: s.color },
          svg("title", {}, `${s.label}: ${opts.format(p.v)} · ${D.when(new Date(p.t).toISOString())}`))
      );
      return svg(
        "g",
        { class: "series", "data-series": s.key, stroke: s.color },
        svg("title", {}, s.label),
        svg("path", { class: "series-line", d, stroke: s.color, "stroke-dasharray": s.dashed ? "6 4" : null }),
        dots
      );
    });
    return svg(
      "svg",
      { class: "chart " + (opts.cls || ""), viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.label, preserveAspectRatio: "xMidYMid meet" },
      svg("title", {}, opts.label),
      svg("g", { class: "axes" }, grid, ticks, svg("line", { class: "axis", x1: L, x2: W - R, y1: y(vmin), y2: y(vmin) })),
      lines
    );
  }

  // How many grid intervals split `span` into round steps (1, 2, 2.5 or 5 times a power of 10).
  function divisions(span) {
    for (const n of [4, 5, 3, 6, 2]) {
      const step = span / n;
      const exp = Math.pow(10, Math.floor(Math.log10(step)));
      if ([1, 2, 2.5, 5, 10].some((m) => Math.abs(step - m * exp) < 1e-9 * span)) return n;
    }
    return 4;
  }

  function niceFloor(v) {
    if (v <= 0) return 0;
    const step = Math.pow(10, Math.floor(Math.log10(v)));
    return Math.floor(v / step) * step;
  }

  function niceMax(v) {
    const exp = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * exp >= v * 1.05) return m * exp;
    return 10 * exp;
  }

  function legend(items) {
    return el(
      "ul",
      { class: "legend" },
      items.map((s) =>
        el(
          "li",
          { "data-series": s.key },
          el("span", { class: "swatch" + (s.dashed ? " dashed" : ""), style: `--c:${s.color}` }),
          el("span", { class: "legend-label", text: s.label }),
          s.detail ? el("span", { class: "muted", text: s.detail }) : null
        )
      )
    );
  }

  function renderStock(stock, end) {
    const box = $("stock-chart");
    const series = stock
      .filter((w) => (w.series || []).length)
      .map((w, i) => ({
        key: String(w.warehouse_id),
        label: w.city || w.name || "#" + w.warehouse_id,
        detail: (w.name && w.name !== w.city ? w.name + " · " : "") + t("product.stock_now") + " " + D.number(w.series[w.series.length - 1].stock),
        color: COLORS[i % COLORS.length],
        points: w.series.map((p) => ({ t: Date.parse(p.at), v: Number(p.stock) })),
      }));
    if (!series.length) {
      box.replaceChildren(el("p", { class: "muted", text: t("product.no_stock_history") }));
      return;
    }
    const chart = stepChart(series, end, { label: t("product.stock_chart"), format: (v) => D.number(v), cls: "stock-chart", zero: true });
    box.replaceChildren(chart, legend(series));
  }

  function renderPrices(prices, end) {
    const box = $("price-chart");
    const points = prices.map((p) => ({ ...p, t: Date.parse(p.at) })).filter((p) => !Number.isNaN(p.t));
    if (!points.length) {
      box.replaceChildren(el("p", { class: "muted", text: t("product.no_price_history") }));
      return;
    }
    const series = [
      { key: "sale_price", label: t("series.sale_price"), color: COLORS[0], points: points.filter((p) => !D.missing(p.sale_price)).map((p) => ({ t: p.t, v: Number(p.sale_price) })) },
      { key: "suggested_price", label: t("series.suggested_price"), color: COLORS[2], dashed: true, points: points.filter((p) => !D.missing(p.suggested_price)).map((p) => ({ t: p.t, v: Number(p.suggested_price) })) },
    ].filter((s) => s.points.length);
    const chart = stepChart(series, end, { label: t("product.price_chart"), format: (v) => D.money(v), cls: "price-chart", left: 84 });
    const table = el(
      "table",
      { class: "history" },
      el("thead", {}, el("tr", {}, el("th", { text: t("product.when") }), el("th", { class: "num", text: t("col.sale_price") }), el("th", { class: "num", text: t("col.suggested_price") }))),
      el(
        "tbody",
        {},
        [...points].reverse().slice(0, 12).map((p) =>
          el("tr", {}, el("td", { text: D.when(p.at) }), el("td", { class: "num money", text: D.money(p.sale_price) }), el("td", { class: "num money", text: D.money(p.suggested_price) }))
        )
      )
    );
    box.replaceChildren(el("div", { class: "price-layout" }, el("div", {}, chart, legend(series)), table));
  }

  // --- the group's offers --------------------------------------------------------------------

  function renderGroup(group, product) {
    const list = $("offers");
    if (!group || !(group.offers || []).length) {
      $("offers-lead").textContent = t("product.no_group");
      list.replaceChildren();
      return;
    }
    $("offers-lead").textContent = t("product.offers_lead", {
      n: D.number(group.suppliers),
      min: D.money(group.min_price),
      max: D.money(group.max_price),
      units: D.rate(group.units_per_day_30d),
    });
    const offers = [...group.offers].sort((a, b) => (a.sale_price ?? Infinity) - (b.sale_price ?? Infinity));
    list.replaceChildren(...offers.map((o) => offer(o, group, product)));
  }

  function offer(o, group, product) {
    const cheapest = o.product_id === group.cheapest_product_id || (group.cheapest_product_id == null && o.sale_price === group.min_price);
    const self = String(o.product_id) === String(product.product_id);
    const classes = ["offer", cheapest ? "cheapest" : "", self ? "self" : ""].join(" ").trim();
    const similarity = self ? null : D.missing(o.distance) ? t("product.identical") : t("product.distance", { d: D.distance(o.distance) });
    return el(
      "li",
      { class: classes, "data-product-id": o.product_id },
      el("a", { class: "offer-link", href: "/product/" + encodeURIComponent(o.product_id) },
        el("div", { class: "offer-photo" }, D.photo(o.image_url, o.title || "", "offer-img"),
          el("span", { class: "tags" },
            cheapest ? el("span", { class: "tag tag-cheap", text: t("product.cheapest") }) : null,
            self ? el("span", { class: "tag tag-self", text: t("product.this") }) : null)),
        el(
          "div",
          { class: "offer-text" },
          el("span", { class: "offer-title", text: o.title || "#" + o.product_id }),
          el("span", { class: "offer-supplier", text: o.supplier_name || "–" }),
          el("span", { class: "offer-price money", text: D.money(o.sale_price) }),
          el(
            "dl",
            { class: "offer-facts" },
            el("div", {}, el("dt", { text: t("col.suggested_price") }), el("dd", { class: "money", text: D.money(o.suggested_price) })),
            el("div", {}, el("dt", { text: t("col.margin") }), el("dd", { class: "money", text: D.money(o.margin) })),
            el("div", {}, el("dt", { text: t("col.units_30d") }), el("dd", { text: D.rate(o.units_per_day_30d) })),
            el("div", {}, el("dt", { text: t("col.stock") }), el("dd", { text: D.number(o.stock) }))
          ),
          similarity ? el("span", { class: "offer-meta", text: similarity }) : null
        )
      )
    );
  }

  function init() {
    D.translatePage();
    const view = sessionStorage.getItem("dahell.research_view");
    if (view && view.startsWith("/research")) $("back").href = view;
    load();
  }

  init();
})();
