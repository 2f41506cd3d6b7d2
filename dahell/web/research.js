// The research page: /api/research as a sortable, filterable, paginated table, and its CSV.
// The filters live in the address (?by=&category=&city=&min_margin=&offset=), so a view can be
// bookmarked or shared; the CSV is built here from exactly the rows on screen.
"use strict";

(() => {
  const D = window.Dahell;
  const { t, $, el, svg } = D;
  const LIMIT = 50;
  const BACK_KEY = "dahell.research_view"; // the product page's "back" returns to this view
  const SORTS = ["sales", "margin", "suppliers", "new"];
  const seenCategories = new Set();
  const seenCities = new Set();
  let current = null; // the last answer: {at, total, items, ...}
  let seq = 0;

  function readState() {
    const q = new URLSearchParams(window.location.search);
    const by = SORTS.includes(q.get("by")) ? q.get("by") : "sales";
    return {
      by,
      category: q.get("category") || "",
      city: q.get("city") || "",
      min_margin: q.get("min_margin") || "",
      offset: Math.max(0, parseInt(q.get("offset") || "0", 10) || 0),
    };
  }

  function writeState(state, push) {
    const q = new URLSearchParams(window.location.search);
    for (const [key, value] of Object.entries(state)) {
      if (value === "" || value === null || (key === "offset" && !value) || (key === "by" && value === "sales")) q.delete(key);
      else q.set(key, value);
    }
    const url = window.location.pathname + (q.toString() ? "?" + q : "");
    if (push) window.history.pushState(null, "", url);
    else window.history.replaceState(null, "", url);
  }

  function formState() {
    return {
      by: $("f-by").value,
      category: $("f-category").value.trim(),
      city: $("f-city").value.trim(),
      min_margin: $("f-min-margin").value.trim(),
      offset: 0,
    };
  }

  function fillForm(state) {
    $("f-by").value = state.by;
    $("f-category").value = state.category;
    $("f-city").value = state.city;
    $("f-min-margin").value = state.min_margin;
    for (const th of document.querySelectorAll("th.sortable")) {
      const active = th.dataset.sort === state.by;
      th.classList.toggle("sorted", active);
      th.setAttribute("aria-sort", active ? "descending" : "none");
    }
  }

  async function load() {
    const state = readState();
    sessionStorage.setItem(BACK_KEY, window.location.pathname + window.location.search);
    fillForm(state);
    const query = new URLSearchParams({ by: state.by, limit: String(LIMIT), offset: String(state.offset) });
    for (const key of ["category", "city", "min_margin"]) if (state[key] !== "") query.set(key, state[key]);
    const mine = ++seq;
    document.body.classList.add("busy");
    try {
      const page = await D.api("/api/research?" + query);
      if (mine !== seq) return;
      $("banner").hidden = true;
      current = page;
      render(page, state);
    } catch (err) {
      if (mine !== seq) return;
      if (err.status === 400 && err.body && err.body.parameter) {
        $("banner").textContent = t("error.invalid", { detail: err.body.parameter + ": " + (err.body.detail || "") });
        $("banner").hidden = false;
      } else {
        D.showError(err, load);
      }
    } finally {
      if (mine === seq) document.body.classList.remove("busy");
    }
  }

  // --- rendering -------------------------------------------------------------------------

  function render(page, state) {
    const items = page.items || [];
    $("window-end").textContent = page.at ? t("window.end", { at: D.when(page.at) }) : "";
    const pending = Number(page.pending_embeddings || 0);
    $("pending").textContent = pending ? t("pending", { n: D.number(pending) }) : t("pending.none");
    $("pending").classList.toggle("has-pending", pending > 0);
    $("pending").dataset.pending = String(pending);
    const body = $("rows");
    if (!items.length) {
      body.replaceChildren(el("tr", {}, el("td", { colspan: 10, class: "empty", text: t("empty") })));
    } else {
      body.replaceChildren(...items.map(row));
    }
    remember(items);
    const total = Number(page.total || 0);
    const from = total ? state.offset + 1 : 0;
    const to = state.offset + items.length;
    $("range").textContent = t("page.range", { from: D.number(from), to: D.number(to), total: D.number(total) });
    $("prev").disabled = state.offset <= 0;
    $("next").disabled = to >= total;
    $("csv").disabled = !items.length;
  }

  function row(item) {
    const link = productLink(item.product_id);
    const margin = item.margin;
    return el(
      "tr",
      { "data-product-id": item.product_id },
      el("td", { class: "c-photo" }, el("a", { href: link, tabindex: "-1", "aria-hidden": "true" }, D.photo(item.image_url, "", "thumb"))),
      el(
        "td",
        { class: "c-title" },
        el("a", { class: "title", href: link, text: item.title || "#" + item.product_id }),
        el("span", { class: "sub" }, "#" + item.product_id, (item.categories || []).length ? " · " + item.categories.join(", ") : "")
      ),
      el(
        "td",
        { class: "c-supplier" },
        el("span", { class: "supplier", text: item.supplier_name || "–" }),
        (item.cities || []).length ? el("span", { class: "sub", text: item.cities.join(", ") }) : null
      ),
      el("td", { class: "num money", "data-col": "sale_price", text: D.money(item.sale_price) }),
      el(
        "td",
        { class: "num money", "data-col": "suggested_price" },
        D.missing(item.suggested_price) ? el("span", { class: "muted", text: "–", title: t("no_price") }) : D.money(item.suggested_price)
      ),
      el(
        "td",
        { class: "num", "data-col": "margin" },
        el("span", { class: "money " + (D.missing(margin) ? "muted" : margin < 0 ? "neg" : "pos"), text: D.money(margin) }),
        el("span", { class: "sub", text: D.pct(item.margin_pct) })
      ),
      el("td", { class: "num", "data-col": "units_per_day_7d", text: D.rate(item.units_per_day_7d) }),
      el(
        "td",
        { class: "num", "data-col": "units_per_day_30d" },
        el("span", { class: "strong", text: D.rate(item.units_per_day_30d) }),
        el("span", { class: "sub", text: observed(item.days_observed) })
      ),
      el("td", { class: "c-trend" }, sparkline(item.stock_trend || [], item.stock)),
      el(
        "td",
        { class: "num", "data-col": "group_suppliers" },
        el("span", { class: "suppliers-badge" + (item.group_suppliers > 1 ? " many" : ""), text: D.number(item.group_suppliers || 1) }),
        item.group_suppliers > 1 && !D.missing(item.group_min_price)
          ? el("span", { class: "sub", text: t("from_price", { price: D.money(item.group_min_price) }) })
          : null
      )
    );
  }

  function observed(days) {
    const n = Number(days || 0);
    return t(n === 1 ? "day_observed" : "days_observed", { n: D.days(n) });
  }

  function productLink(id) {
    return "/product/" + encodeURIComponent(id);
  }

  // A 96x28 line of total stock per day, oldest first; the last value is a dot.
  function sparkline(values, stock) {
    const W = 96, H = 28, P = 3;
    if (!values.length) return el("span", { class: "muted sub", text: t("trend.none") });
    const points = values.length === 1 ? [values[0], values[0]] : values;
    const max = Math.max(...points, 1);
    const min = Math.min(...points, 0);
    const x = (i) => P + (i * (W - 2 * P)) / (points.length - 1);
    const y = (v) => H - P - ((v - min) * (H - 2 * P)) / (max - min || 1);
    const d = points.map((v, i) => (i ? "L" : "M") + x(i).toFixed(1) + " " + y(v).toFixed(1)).join(" ");
    const falling = points[points.length - 1] < points[0];
    const label = t("trend.label", { n: values.length, first: D.number(values[0]), last: D.number(values[values.length - 1]) });
    return svg(
      "svg",
      { class: "trend" + (falling ? " falling" : ""), viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": label },
      svg("title", {}, label),
      svg("path", { class: "trend-area", d: d + ` L ${x(points.length - 1).toFixed(1)} ${H - P} L ${x(0).toFixed(1)} ${H - P} Z` }),
      svg("path", { class: "trend-line", d }),
      svg("circle", { class: "trend-dot", cx: x(points.length - 1).toFixed(1), cy: y(points[points.length - 1]).toFixed(1), r: 2.2 })
    );
  }

  function remember(items) {
    for (const item of items) {
      for (const c of item.categories || []) seenCategories.add(c);
      for (const c of item.cities || []) seenCities.add(c);
    }
    const options = (set) => [...set].sort((a, b) => a.localeCompare(b, D.locale)).map((v) => el("option", { value: v }));
    $("categories").replaceChildren(...options(seenCategories));
    $("cities").replaceChildren(...options(seenCities));
  }

  // --- CSV: the rows on screen, numbers as numbers ----------------------------------------

  const CSV_COLUMNS = [
    ["col.product_id", (i) => i.product_id],
    ["col.product", (i) => i.title],
    ["col.supplier", (i) => i.supplier_name],
    ["col.sale_price", (i) => i.sale_price],
    ["col.suggested_price", (i) => i.suggested_price],
    ["col.margin", (i) => i.margin],
    ["col.margin_pct", (i) => i.margin_pct],
    ["col.units_7d", (i) => i.units_per_day_7d],
    ["col.units_30d", (i) => i.units_per_day_30d],
    ["col.days_observed", (i) => i.days_observed],
    ["col.stock", (i) => i.stock],
    ["col.suppliers", (i) => i.group_suppliers],
    ["col.group_min_price", (i) => i.group_min_price],
    ["col.categories", (i) => (i.categories || []).join("; ")],
    ["col.cities", (i) => (i.cities || []).join("; ")],
    ["col.first_seen", (i) => i.first_seen_at],
    ["col.url", (i) => new URL(productLink(i.product_id), window.location.origin).href],
  ];

  function downloadCsv() {
    if (!current) return;
    const items = current.items || [];
    const rows = [CSV_COLUMNS.map(([key]) => t(key).replace(/\u00a0/g, " ")), ...items.map((item) => CSV_COLUMNS.map(([, get]) => get(item)))];
    const stamp = (current.at || new Date().toISOString()).slice(0, 10);
    D.download(`${t("csv.filename")}-${stamp}.csv`, D.csv(rows), "text/csv;charset=utf-8");
  }

  // --- wiring ------------------------------------------------------------------------------

  function go(state) {
    writeState(state, true);
    load();
  }

  function init() {
    D.translatePage();
    $("filters").addEventListener("submit", (event) => {
      event.preventDefault();
      go(formState());
    });
    $("f-by").addEventListener("change", () => go(formState()));
    $("f-clear").addEventListener("click", () => go({ by: $("f-by").value, category: "", city: "", min_margin: "", offset: 0 }));
    for (const button of document.querySelectorAll("th.sortable button")) {
      button.addEventListener("click", () => go({ ...readState(), by: button.dataset.sort, offset: 0 }));
    }
    $("prev").addEventListener("click", () => go({ ...readState(), offset: Math.max(0, readState().offset - LIMIT) }));
    $("next").addEventListener("click", () => go({ ...readState(), offset: readState().offset + LIMIT }));
    $("csv").addEventListener("click", downloadCsv);
    window.addEventListener("popstate", load);
    load();
  }

  init();
})();
