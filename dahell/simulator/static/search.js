"use strict";
// The catalog page: pages through POST {api}/api/products/v4/index and renders cards.
(function () {
  const token = localStorage.getItem("DROPI_token");
  if (!token) {
    window.location.assign("/login");
    return;
  }
  const list = document.getElementById("products");
  const more = document.getElementById("load-more");
  const error = document.getElementById("search-error");
  const end = document.getElementById("end-of-list");
  const pageSize = window.DROPI_PAGE_SIZE;
  let nextStart = 0;
  let loading = false;

  function card(product) {
    const div = document.createElement("div");
    div.className = "product-card";
    div.dataset.id = product.id;
    const h = document.createElement("h3");
    h.textContent = product.name;
    const price = document.createElement("p");
    price.textContent = "$ " + product.sale_price;
    div.append(h, price);
    return div;
  }

  async function loadPage() {
    if (loading || more.hidden) return;
    loading = true;
    error.hidden = true;
    const body = {
      privated_product: false, userVerified: false, favorite: false, with_collection: true,
      get_stock: false, no_count: true, search_type: "simple", country: "COLOMBIA",
      order_by: "", order_type: "asc", keywords: "",
      startData: nextStart, pageSize: pageSize,
    };
    try {
      const response = await fetch(window.DROPI_API + "/api/products/v4/index", {
        method: "POST",
        headers: {
          "Content-Type": "application/json",
          "X-Authorization": "Bearer " + localStorage.getItem("DROPI_token"),
        },
        body: JSON.stringify(body),
      });
      const data = await response.json().catch(() => ({}));
      const objects = data.objects || (data.data && data.data.objects);
      if (!response.ok || !data.isSuccess || !objects) {
        error.textContent = data.message || "Error " + response.status;
        error.hidden = false;
        return;
      }
      objects.forEach((p) => list.append(card(p)));
      nextStart += objects.length;
      if (objects.length < pageSize) {
        more.hidden = true;
        end.hidden = false;
      }
    } catch (e) {
      error.textContent = "No se pudo conectar con el servidor";
      error.hidden = false;
    } finally {
      loading = false;
    }
  }

  more.addEventListener("click", loadPage);
  loadPage();
})();
