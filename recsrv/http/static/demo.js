/* The recsrv demo shop: a one-page store driven by the storefront SDK (/sdk.js).
 *
 * Routes live in the hash: "" (all products), #category=<name>, #search=<text>,
 * #item=<id> (a product page with three recommendation panels) and #cart.
 */
(function () {
  "use strict";

  const CATEGORIES = {
    running: { emoji: "👟", colour: "#dbeafe" },
    camping: { emoji: "⛺", colour: "#dcfce7" },
    hiking: { emoji: "🥾", colour: "#fef3c7" },
    cycling: { emoji: "🚲", colour: "#fee2e2" },
    yoga: { emoji: "🧘", colour: "#f3e8ff" },
    kitchen: { emoji: "🍳", colour: "#ffedd5" },
    coffee: { emoji: "☕", colour: "#efe4d6" },
    tea: { emoji: "🍵", colour: "#ecfccb" },
    books: { emoji: "📚", colour: "#e0e7ff" },
    garden: { emoji: "🌱", colour: "#ccfbf1" },
  };
  const OTHER = { emoji: "🛍️", colour: "#e5e7eb" };
  const CART_KEY = "recsrv_demo_cart";
  const money = new Intl.NumberFormat("en-IE", { style: "currency", currency: "EUR" });

  const $ = (selector) => document.querySelector(selector);
  let items = new Map(); // item_id → catalog entry
  let rec = null;
  let lastLive = null; // the last list the live subscription received
  let cart = loadCart();

  // -- small DOM helpers ---------------------------------------------------------

  function h(tag, attrs, children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") el.textContent = value;
      else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else el.setAttribute(name, value === true ? "" : value);
    }
    for (const child of [].concat(children || [])) {
      if (child) el.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return el;
  }

  function style(category) { return CATEGORIES[category] || OTHER; }

  function tile(item, size) {
    const look = style(item && item.category);
    return h("span", { class: "tile " + (size || ""), style: "--tile:" + look.colour, "aria-hidden": "true", text: look.emoji });
  }

  function title(id) { const item = items.get(id); return item ? item.title : id; }

  function reasonText(reason) {
    const [kind, source] = String(reason || "").split(/:(.*)/);
    if (kind === "similar_to") return "similar to " + title(source);
    if (kind === "bought_together") return "bought with " + title(source);
    if (kind === "bought_before") return "you bought this before";
    if (kind === "popular") return "popular right now";
    if (kind === "same_category") return "more in this category";
    return kind;
  }

  // -- cards -----------------------------------------------------------------------

  function card(item) {
    return h("a", { class: "card", href: "#item=" + encodeURIComponent(item.item_id), "data-item-id": item.item_id }, [
      tile(item, "lg"),
      h("span", { class: "card-title", text: item.title }),
      h("span", { class: "card-meta" }, [
        h("span", { class: "price", text: money.format(item.price) }),
        item.in_stock ? null : h("span", { class: "sold-out", text: "sold out" }),
      ]),
    ]);
  }

  /** One entry of a recommendation list: a link to the product with its reason. */
  function mini(entry) {
    const item = items.get(entry.item_id) || { item_id: entry.item_id, title: entry.item_id, price: null };
    return h("a", { class: "mini", href: "#item=" + encodeURIComponent(entry.item_id), "data-item-id": entry.item_id, title: "score " + Number(entry.score).toFixed(3) }, [
      tile(item, "sm"),
      h("span", { class: "mini-body" }, [
        h("span", { class: "mini-title", text: item.title }),
        h("span", { class: "mini-meta" }, [
          item.price == null ? null : h("span", { class: "price", text: money.format(item.price) }),
          h("small", { class: "reason", text: reasonText(entry.reason) }),
        ]),
      ]),
    ]);
  }

  function fillList(el, list, empty) {
    el.textContent = "";
    const entries = (list && list.items) || [];
    if (!entries.length) { el.appendChild(h("li", { class: "empty", text: empty })); return; }
    for (const entry of entries) el.appendChild(h("li", {}, mini(entry)));
  }

  // -- cart --------------------------------------------------------------------------

  function loadCart() {
    try { return JSON.parse(localStorage.getItem(CART_KEY)) || {}; } catch (_) { return {}; }
  }

  function saveCart() {
    try { localStorage.setItem(CART_KEY, JSON.stringify(cart)); } catch (_) { /* private mode */ }
    const count = Object.values(cart).reduce((sum, n) => sum + n, 0);
    $("#cart-count").textContent = String(count);
    $("#cart-link").classList.toggle("has-items", count > 0);
  }

  function addToCart(id) {
    cart[id] = (cart[id] || 0) + 1;
    rec.addToCart(id, 1);
    saveCart();
  }

  function removeFromCart(id) {
    const quantity = cart[id] || 1;
    delete cart[id];
    rec.removeFromCart(id, quantity);
    saveCart();
    showCart();
  }

  function checkout() {
    const lines = Object.keys(cart).map((id) => ({ item_id: id, quantity: cart[id], price: items.get(id).price }));
    if (!lines.length) return;
    rec.purchase(lines);
    cart = {};
    saveCart();
    showCart("Thank you! Your order is on its way (well, not really).");
  }

  // -- views -------------------------------------------------------------------------

  function show(name) {
    for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== "view-" + name;
    for (const link of document.querySelectorAll("#categories a")) link.classList.remove("active");
  }

  function showHome(category, search) {
    show("home");
    $("#search").value = search || "";
    const wanted = (search || "").trim().toLowerCase();
    const shown = (category || wanted ? Array.from(items.values()) : mixed()).filter((item) => {
      if (category && item.category !== category) return false;
      if (!wanted) return true;
      return (item.title + " " + item.tags.join(" ")).toLowerCase().includes(wanted);
    });
    $("#grid-title").textContent = search ? "Results for “" + search + "”" : category ? capitalise(category) : "All products";
    $("#strip").hidden = Boolean(category || search);
    const grid = $("#grid");
    grid.textContent = "";
    for (const item of shown) grid.appendChild(card(item));
    if (!shown.length) grid.appendChild(h("p", { class: "empty", text: "Nothing matches." }));
    const active = document.querySelector('#categories a[data-category="' + (category || "") + '"]');
    if (active) active.classList.add("active");
  }

  /** Every product, the categories taken in turn, so the front page shows a bit of each. */
  function mixed() {
    const queues = new Map();
    for (const item of items.values()) {
      if (!queues.has(item.category)) queues.set(item.category, []);
      queues.get(item.category).push(item);
    }
    const lists = Array.from(queues.values());
    const out = [];
    for (let n = 0; out.length < items.size; n++) {
      for (const list of lists) if (n < list.length) out.push(list[n]);
    }
    return out;
  }

  function showProduct(id) {
    const item = items.get(id);
    if (!item) { location.hash = ""; return; }
    show("product");
    rec.view(id);
    const inCart = cart[id] || 0;
    const button = h("button", { id: "add-to-cart", class: "primary", disabled: !item.in_stock, text: item.in_stock ? "Add to cart" : "Sold out", onclick: () => {
      addToCart(id);
      button.textContent = "Added ✓";
      $("#in-cart").textContent = cart[id] + " in your cart";
      setTimeout(() => { button.textContent = "Add to cart"; }, 1200);
    } });
    const product = $("#product");
    product.textContent = "";
    product.appendChild(tile(item, "xl"));
    product.appendChild(h("div", { class: "product-info" }, [
      h("a", { class: "crumb", href: "#category=" + item.category, text: style(item.category).emoji + " " + capitalise(item.category) }),
      h("h1", { text: item.title }),
      h("p", { class: "product-price", text: money.format(item.price) }),
      h("p", { class: "tags" }, item.tags.map((tag) => h("span", { class: "tag", text: tag }))),
      h("div", { class: "buy" }, [button, h("span", { id: "in-cart", class: "in-cart", text: inCart ? inCart + " in your cart" : "" })]),
      h("p", { class: "hint", text: "Every click on this page goes to recsrv; the “Recommended for you” list is pushed back over Server-Sent Events." }),
    ]));
    renderLive();
    const similar = $("#panel-similar");
    const together = $("#panel-bought-together");
    similar.textContent = "";
    together.textContent = "";
    rec.similar(id, 6).then((list) => { if (current().item === id) fillList(similar, list, "Nothing similar yet."); });
    rec.boughtTogether(id, 6).then((list) => { if (current().item === id) fillList(together, list, "Nobody has bought this with anything yet."); });
  }

  function showCart(message) {
    show("cart");
    const box = $("#cart");
    box.textContent = "";
    if (message) box.appendChild(h("p", { class: "notice", text: message }));
    const ids = Object.keys(cart).filter((id) => items.has(id));
    if (!ids.length) {
      box.appendChild(h("p", { class: "empty" }, ["Your cart is empty. ", h("a", { href: "#", text: "Keep shopping" })]));
      return;
    }
    const rows = h("ul", { class: "cart-lines" });
    let total = 0;
    for (const id of ids) {
      const item = items.get(id);
      total += item.price * cart[id];
      rows.appendChild(h("li", { class: "cart-line" }, [
        tile(item, "sm"),
        h("a", { class: "cart-title", href: "#item=" + encodeURIComponent(id), "data-item-id": id, text: item.title }),
        h("span", { class: "qty", text: "× " + cart[id] }),
        h("span", { class: "price", text: money.format(item.price * cart[id]) }),
        h("button", { class: "remove", "data-item-id": id, "aria-label": "Remove " + item.title, text: "Remove", onclick: () => removeFromCart(id) }),
      ]));
    }
    box.appendChild(rows);
    box.appendChild(h("div", { class: "cart-total" }, [
      h("span", { text: "Total " }), h("strong", { text: money.format(total) }),
      h("button", { id: "checkout", class: "primary", text: "Buy now", onclick: checkout }),
    ]));
  }

  function renderLive() {
    const panel = $("#panel-recommended");
    if (lastLive) fillList(panel, lastLive, "No recommendations yet.");
    else if (!panel.children.length) panel.appendChild(h("li", { class: "empty", text: "Waiting for recsrv…" }));
  }

  function onLive(list) {
    lastLive = list;
    if (!$("#view-product").hidden) {
      renderLive();
      const box = $("#panel-recommended").closest(".panel");
      box.classList.remove("flash");
      void box.offsetWidth; // restart the highlight animation
      box.classList.add("flash");
    }
    const model = list.model || {};
    $("#live-strategy").textContent = list.strategy || "–";
    $("#live-events").textContent = Number(model.events || 0).toLocaleString("en");
    $("#live-time").textContent = new Date().toLocaleTimeString("en-GB");
  }

  // -- routing and start-up ----------------------------------------------------------

  function current() {
    const raw = location.hash.slice(1);
    if (raw === "cart") return { cart: true };
    return Object.fromEntries(new URLSearchParams(raw));
  }

  function route() {
    const where = current();
    if (where.item) showProduct(where.item);
    else if (where.cart) showCart();
    else showHome(where.category, where.search);
    window.scrollTo(0, 0);
  }

  function capitalise(text) { return text.charAt(0).toUpperCase() + text.slice(1); }

  function buildCategoryBar() {
    const bar = $("#categories");
    const names = Array.from(new Set(Array.from(items.values(), (item) => item.category)));
    bar.appendChild(h("a", { href: "#", "data-category": "", text: "All" }));
    for (const name of names) {
      bar.appendChild(h("a", { href: "#category=" + name, "data-category": name }, [
        h("span", { "aria-hidden": "true", text: style(name).emoji }), capitalise(name),
      ]));
    }
  }

  function start(catalog) {
    items = new Map(catalog.map((item) => [item.item_id, item]));
    rec = Recsrv.init({
      endpoint: location.origin,
      // A server with API keys: open the demo as /demo?key=PUBLIC_KEY.
      key: new URLSearchParams(location.search).get("key") || undefined,
      k: 6,
      // The SDK's auto-filled lists ([data-recsrv="recommendations"]) use this card.
      render: (entry) => mini(entry),
    });
    window.demoRec = rec; // for the curious, in the browser console
    $("#session-id").textContent = rec.sessionId.slice(0, 8);
    rec.subscribe(onLive, { k: 6 });
    buildCategoryBar();
    saveCart();
    // A click on any product link outside the SDK's own lists is reported as a click.
    document.addEventListener("click", (event) => {
      const link = event.target.closest && event.target.closest("a[data-item-id]");
      if (link && !link.closest('[data-recsrv="recommendations"]')) rec.click(link.getAttribute("data-item-id"));
    });
    $("#search-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const text = $("#search").value.trim();
      if (!text) return;
      rec.search(text);
      location.hash = "search=" + encodeURIComponent(text);
    });
    window.addEventListener("hashchange", route);
    route();
  }

  fetch("/demo/catalog.json")
    .then((response) => { if (!response.ok) throw new Error("HTTP " + response.status); return response.json(); })
    .then(start)
    .catch((error) => {
      $("#grid").textContent = "The catalog could not be loaded (" + error.message + "). Is `recsrv demo` running?";
    });
})();
