"use strict";
// The login form: POST {api}/api/login, keep the JWT in localStorage, go to the catalog.
(function () {
  const form = document.getElementById("login-form");
  const error = document.getElementById("login-error");
  const twoFactor = document.getElementById("two-factor");

  function showError(text) {
    error.textContent = text;
    error.hidden = false;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const body = {
      email: form.elements.email.value,
      password: form.elements.password.value,
      white_brand_id: 1,
    };
    let data;
    try {
      const response = await fetch(window.DROPI_API + "/api/login", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      data = await response.json();
    } catch (e) {
      showError("No se pudo conectar con el servidor");
      return;
    }
    if (!data.isSuccess) {
      showError(data.message || "Credenciales inválidas");
      return;
    }
    if (data.requires_2fa || data.twoFactor) {
      twoFactor.hidden = false;
      return;
    }
    localStorage.setItem("DROPI_token", data.token);
    localStorage.setItem("DROPI_LoginResult", JSON.stringify({ token: data.token }));
    window.location.assign("/dashboard/search");
  });
})();
