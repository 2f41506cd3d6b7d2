// Shared by the research and product pages (the status page uses its API calls): language, Colombian
// formatting, the API, DOM helpers.
// No build step, no dependencies. Spanish by default; ?lang=en (remembered in localStorage).
"use strict";

window.Dahell = (() => {
  const LANG_KEY = "dahell.lang";
  const TOKEN_KEY = "dahell.token"; // the status page's token form stores the HTTP token under the same key
  const LANGS = ["es", "en"];

  // Every user-facing string of the research pages, by language. Keys are English.
  const STRINGS = {
    es: {
      "app.tagline": "Investigación de productos Dropi",
      "nav.status": "Estado",
      "nav.research": "Investigación",
      "lang.label": "Idioma",
      "research.title": "Investigación de productos",
      "research.lead": "Qué se vende, con qué margen y cuántos proveedores venden el mismo artículo.",
      "filters.by": "Ordenar por",
      "by.sales": "Más vendidos",
      "by.margin": "Mayor margen",
      "by.suppliers": "Más proveedores",
      "by.new": "Más nuevos",
      "filters.category": "Categoría",
      "filters.city": "Ciudad",
      "filters.min_margin": "Margen mínimo (%)",
      "filters.any": "Todas",
      "filters.apply": "Aplicar",
      "filters.clear": "Limpiar",
      "csv.download": "Descargar CSV",
      "csv.filename": "dahell-investigacion",
      "col.photo": "Foto",
      "col.product": "Producto",
      "col.supplier": "Proveedor",
      "col.sale_price": "Precio proveedor",
      "col.suggested_price": "Precio sugerido",
      "col.margin": "Margen",
      "col.margin_pct": "Margen %",
      "col.units_7d": "Unid./día (7\u00a0d)",
      "col.units_30d": "Unid./día (30\u00a0d)",
      "col.days_observed": "Días observados",
      "col.stock": "Stock",
      "col.trend": "Tendencia de stock",
      "col.suppliers": "Proveedores del artículo",
      "col.group_min_price": "Precio más bajo del artículo",
      "col.categories": "Categorías",
      "col.cities": "Ciudades",
      "col.first_seen": "Visto por primera vez",
      "col.product_id": "ID",
      "col.url": "Enlace",
      "days_observed": "{n} días observados",
      "day_observed": "{n} día observado",
      "suppliers.one": "1 proveedor",
      "suppliers.many": "{n} proveedores",
      "from_price": "desde {price}",
      "page.range": "{from}–{to} de {total}",
      "page.prev": "Anterior",
      "page.next": "Siguiente",
      "window.end": "Datos hasta {at}",
      "pending": "{n} productos esperan su embedding: sus grupos de proveedores aún pueden crecer.",
      "pending.none": "Todas las fotos tienen embedding.",
      "loading": "Cargando…",
      "empty": "Ningún producto cumple estos filtros.",
      "error.unreachable": "No se pudo contactar al daemon: {detail}",
      "error.not_found": "No existe el producto {id}.",
      "error.invalid": "Parámetro no válido: {detail}",
      "token.label": "Este daemon pide su token HTTP",
      "token.use": "Usar token",
      "no_price": "sin precio sugerido",
      "trend.label": "Stock de los últimos {n} días: de {first} a {last}",
      "trend.none": "sin historial",
      "product.back": "← Volver a la investigación",
      "product.stock_chart": "Stock por bodega",
      "product.stock_chart_desc": "Unidades en stock en cada bodega a lo largo del tiempo.",
      "product.price_chart": "Historial de precios",
      "product.offers": "Ofertas del mismo artículo",
      "product.offers_lead": "{n} proveedores venden este artículo, de {min} a {max}. Ventas del artículo: {units} unid./día (30\u00a0d).",
      "product.no_group": "Este producto aún no tiene grupo: no se conoce otro proveedor del mismo artículo.",
      "product.cheapest": "Más barato",
      "product.this": "Este producto",
      "product.distance": "distancia {d}",
      "product.identical": "foto idéntica",
      "product.sku": "SKU",
      "product.type": "Tipo",
      "product.first_seen": "Visto desde",
      "product.last_seen": "Última vez",
      "product.open_dropi": "Ver en Dropi",
      "product.units_per_day": "unid./día",
      "product.no_stock_history": "Sin historial de stock.",
      "product.no_price_history": "Sin historial de precios.",
      "product.when": "Fecha",
      "product.warehouse": "Bodega",
      "product.stock_now": "Stock actual",
      "product.sold_7d": "Vendidas (7\u00a0d)",
      "product.sold_30d": "Vendidas (30\u00a0d)",
      "product.title": "Producto {id}",
      "series.sale_price": "Precio proveedor",
      "series.suggested_price": "Precio sugerido",
      "footer": "Estimaciones a partir de las bajadas de stock entre capturas; los reabastecimientos no cuentan como ventas.",
    },
    en: {
      "app.tagline": "Dropi product research",
      "nav.status": "Status",
      "nav.research": "Research",
      "lang.label": "Language",
      "research.title": "Product research",
      "research.lead": "What sells, at what margin, and how many suppliers sell the same item.",
      "filters.by": "Sort by",
      "by.sales": "Best sellers",
      "by.margin": "Highest margin",
      "by.suppliers": "Most suppliers",
      "by.new": "Newest",
      "filters.category": "Category",
      "filters.city": "City",
      "filters.min_margin": "Minimum margin (%)",
      "filters.any": "All",
      "filters.apply": "Apply",
      "filters.clear": "Clear",
      "csv.download": "Download CSV",
      "csv.filename": "dahell-research",
      "col.photo": "Photo",
      "col.product": "Product",
      "col.supplier": "Supplier",
      "col.sale_price": "Sale price",
      "col.suggested_price": "Suggested price",
      "col.margin": "Margin",
      "col.margin_pct": "Margin %",
      "col.units_7d": "Units/day (7\u00a0d)",
      "col.units_30d": "Units/day (30\u00a0d)",
      "col.days_observed": "Days observed",
      "col.stock": "Stock",
      "col.trend": "Stock trend",
      "col.suppliers": "Suppliers of the item",
      "col.group_min_price": "Item's lowest price",
      "col.categories": "Categories",
      "col.cities": "Cities",
      "col.first_seen": "First seen",
      "col.product_id": "ID",
      "col.url": "Link",
      "days_observed": "{n} days observed",
      "day_observed": "{n} day observed",
      "suppliers.one": "1 supplier",
      "suppliers.many": "{n} suppliers",
      "from_price": "from {price}",
      "page.range": "{from}–{to} of {total}",
      "page.prev": "Previous",
      "page.next": "Next",
      "window.end": "Data up to {at}",
      "pending": "{n} products still wait for an embedding: their supplier groups may still grow.",
      "pending.none": "Every photo has an embedding.",
      "loading": "Loading…",
      "empty": "No product matches these filters.",
      "error.unreachable": "Cannot reach the daemon: {detail}",
      "error.not_found": "There is no product {id}.",
      "error.invalid": "Invalid parameter: {detail}",
      "token.label": "This daemon needs its HTTP token",
      "token.use": "Use token",
      "no_price": "no suggested price",
      "trend.label": "Stock over the last {n} days: from {first} to {last}",
      "trend.none": "no history",
      "product.back": "← Back to research",
      "product.stock_chart": "Stock per warehouse",
      "product.stock_chart_desc": "Units in stock in each warehouse over time.",
      "product.price_chart": "Price history",
      "product.offers": "Offers of the same item",
      "product.offers_lead": "{n} suppliers sell this item, from {min} to {max}. Item sales: {units} units/day (30\u00a0d).",
      "product.no_group": "This product has no group yet: no other supplier of the same item is known.",
      "product.cheapest": "Cheapest",
      "product.this": "This product",
      "product.distance": "distance {d}",
      "product.identical": "identical photo",
      "product.sku": "SKU",
      "product.type": "Type",
      "product.first_seen": "Seen since",
      "product.last_seen": "Last seen",
      "product.open_dropi": "Open in Dropi",
      "product.units_per_day": "units/day",
      "product.no_stock_history": "No stock history.",
      "product.no_price_history": "No price history.",
      "product.when": "Date",
      "product.warehouse": "Warehouse",
      "product.stock_now": "Stock now",
      "product.sold_7d": "Sold (7\u00a0d)",
      "product.sold_30d": "Sold (30\u00a0d)",
      "product.title": "Product {id}",
      "series.sale_price": "Sale price",
      "series.suggested_price": "Suggested price",
      "footer": "Estimates from stock decreases between captures; restocks do not count as sales.",
    },
  };

  function pickLang() {
    const url = new URL(window.location.href);
    const asked = url.searchParams.get("lang");
    if (LANGS.includes(asked)) {
      localStorage.setItem(LANG_KEY, asked);
      return asked;
    }
    const kept = localStorage.getItem(LANG_KEY);
    return LANGS.includes(kept) ? kept : "es";
  }

  const lang = pickLang();
  const locale = lang === "es" ? "es-CO" : "en-US";

  function t(key, vars) {
    const text = (STRINGS[lang] && STRINGS[lang][key]) || STRINGS.es[key] || key;
    return text.replace(/\{(\w+)\}/g, (_, name) => (vars && name in vars ? String(vars[name]) : ""));
  }

  // --- numbers, pesos, dates -------------------------------------------------------------
  // The same rules as `dahell top` (dahell/i18n.py): pesos `$ 45.000` in Spanish, `$ 45,000` in
  // English, with a plain space (Intl's es-CO currency format puts a no-break space there; the
  // cells do not wrap anyway); percentages `33,3 %` / `33.3%`.
  const int = new Intl.NumberFormat(locale, { maximumFractionDigits: 0 });
  const dec1 = new Intl.NumberFormat(locale, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
  const count = new Intl.NumberFormat(locale, { maximumFractionDigits: 0 });
  const upTo1 = new Intl.NumberFormat(locale, { maximumFractionDigits: 1 });
  const dist = new Intl.NumberFormat(locale, { minimumFractionDigits: 3, maximumFractionDigits: 3 });
  const dateFmt = new Intl.DateTimeFormat(locale, { day: "numeric", month: "short", year: "numeric", timeZone: "America/Bogota" });
  const shortDate = new Intl.DateTimeFormat(locale, { day: "numeric", month: "short", timeZone: "America/Bogota" });
  const dateTime = new Intl.DateTimeFormat(locale, {
    day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZone: "America/Bogota",
  });

  const missing = (v) => v === null || v === undefined || v === "" || Number.isNaN(Number(v));

  function money(value) {
    if (missing(value)) return "–";
    const n = Math.round(Number(value));
    return (n < 0 ? "-" : "") + "$ " + int.format(Math.abs(n)).replace(/\u00a0/g, " ");
  }
  const pct = (value) => (missing(value) ? "–" : dec1.format(Number(value)) + (lang === "es" ? " %" : "%"));
  const rate = (value) => (missing(value) ? "–" : dec1.format(Number(value)));
  const number = (value) => (missing(value) ? "–" : count.format(Number(value)));
  const days = (value) => (missing(value) ? "–" : upTo1.format(Number(value)));
  const distance = (value) => (missing(value) ? "–" : dist.format(Number(value)));
  const date = (iso) => (iso ? dateFmt.format(new Date(iso)) : "–");
  const day = (iso) => (iso ? shortDate.format(new Date(iso)) : "–");
  const when = (iso) => (iso ? dateTime.format(new Date(iso)) : "–");

  // --- DOM ---------------------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(key, value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // A product photo: lazy, no referrer, a grey square when the CDN has none.
  function photo(url, alt, cls) {
    const img = el("img", { src: url || null, alt: alt || "", loading: "lazy", decoding: "async", class: cls || "photo" });
    img.addEventListener("error", () => img.classList.add("broken"));
    if (!url) img.classList.add("broken");
    return img;
  }

  // Fill every [data-i18n] element with its string, set <html lang>, and wire the switch.
  function translatePage() {
    document.documentElement.lang = lang === "es" ? "es-CO" : "en";
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    for (const node of document.querySelectorAll("[data-i18n-label]")) node.setAttribute("aria-label", t(node.dataset.i18nLabel));
    for (const link of document.querySelectorAll("[data-lang]")) {
      const url = new URL(window.location.href);
      url.searchParams.set("lang", link.dataset.lang);
      link.href = url.pathname + url.search;
      if (link.dataset.lang === lang) link.setAttribute("aria-current", "true");
    }
  }

  // --- the daemon's API --------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message, body) {
      super(message);
      this.status = status;
      this.body = body;
    }
  }

  function takeTokenFromUrl() {
    const url = new URL(window.location.href);
    const token = url.searchParams.get("token");
    if (token) {
      sessionStorage.setItem(TOKEN_KEY, token);
      url.searchParams.delete("token");
      window.history.replaceState(null, "", url.pathname + url.search + url.hash);
    }
  }

  async function api(path) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = "Bearer " + token;
    const resp = await fetch(path, { headers, cache: "no-store" });
    let body = null;
    try {
      body = await resp.json();
    } catch (_) {
      body = null;
    }
    if (!resp.ok) throw new ApiError(resp.status, (body && (body.detail || body.error)) || resp.statusText, body);
    return body;
  }

  // A token form under the header when the daemon answers 401; `retry` runs once it is given.
  function askForToken(retry) {
    let form = $("token-form");
    if (!form) {
      form = el(
        "form",
        { class: "token-form", id: "token-form" },
        el("label", { for: "token-input", text: t("token.label") }),
        el("input", { id: "token-input", type: "password", autocomplete: "off", required: true }),
        el("button", { type: "submit", text: t("token.use") })
      );
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
        form.hidden = true;
        retry();
      });
      document.querySelector("main").before(form);
    }
    form.hidden = false;
  }

  function showError(err, retry) {
    const banner = $("banner");
    if (err && err.status === 401) {
      askForToken(retry);
      banner.hidden = true;
      return;
    }
    banner.textContent = t("error.unreachable", { detail: err ? err.message : "?" });
    banner.hidden = false;
  }

  // CSV for spreadsheets: RFC 4180 quoting, CRLF, UTF-8 with a BOM so Excel reads accents.
  function csv(rows) {
    const cell = (v) => {
      if (v === null || v === undefined) return "";
      const s = String(v);
      return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
    };
    return "\ufeff" + rows.map((row) => row.map(cell).join(",")).join("\r\n") + "\r\n";
  }

  function download(name, text, type) {
    const url = URL.createObjectURL(new Blob([text], { type }));
    const link = el("a", { href: url, download: name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }

  takeTokenFromUrl();

  return {
    lang, locale, t, money, pct, rate, number, days, distance, date, day, when, missing,
    $, el, svg, photo, translatePage, api, ApiError, showError, csv, download,
  };
})();
