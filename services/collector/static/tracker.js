/* closedloop tracker: first-party anonymous ID, sessions, pageviews (SPA too), UTM and click IDs,
   identify/track, opt-in form identify, consent switch. Plain JS, no build step. */
(function (window, document) {
  "use strict";
  if (window.closedloop && window.closedloop.loaded) return;

  var CLICK_IDS = ["gclid", "gbraid", "wbraid", "fbclid", "msclkid", "li_fat_id", "ttclid"];
  var UTMS = ["utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"];
  var YEAR_AND_A_MONTH = 395 * 24 * 3600; // 13 months, in seconds
  var SESSION_SECONDS = 30 * 60;
  var script = document.currentScript;
  var config = {
    writeKey: script && script.getAttribute("data-write-key"),
    endpoint: script && script.src ? script.src.replace(/\/v1\/tracker\.js.*$/, "") : "",
    cookieDomain: script && script.getAttribute("data-cookie-domain"),
    cookieName: "_cl_aid",
    sessionCookieName: "_cl_sid",
    requireConsent: !!(script && script.getAttribute("data-require-consent") === "true"),
    autoIdentify: !!(script && script.getAttribute("data-auto-identify") === "true"),
    autoPageviews: true
  };
  var consent = null; // null: not asked; true/false once given or refused
  var pending = []; // events waiting for consent
  var started = false;
  var lastUrl = null;
  var state = {};

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var b = new Uint8Array(16);
    (window.crypto || window.msCrypto).getRandomValues(b);
    b[6] = (b[6] & 15) | 64;
    b[8] = (b[8] & 63) | 128;
    var h = "";
    for (var i = 0; i < 16; i++) {
      h += (b[i] + 256).toString(16).slice(1);
      if (i === 3 || i === 5 || i === 7 || i === 9) h += "-";
    }
    return h;
  }

  function readCookie(name) {
    var parts = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf("=");
      if (parts[i].slice(0, eq) === name) return decodeURIComponent(parts[i].slice(eq + 1));
    }
    return null;
  }

  function writeCookie(name, value, maxAge) {
    var c = name + "=" + encodeURIComponent(value) + "; Max-Age=" + maxAge + "; Path=/; SameSite=Lax";
    if (config.cookieDomain) c += "; Domain=" + config.cookieDomain;
    if (location.protocol === "https:") c += "; Secure";
    document.cookie = c;
  }

  function allowed() {
    return !config.requireConsent || consent === true;
  }

  function anonymousId() {
    var id = readCookie(config.cookieName) || state.anonymousId || uuid();
    state.anonymousId = id;
    writeCookie(config.cookieName, id, YEAR_AND_A_MONTH); // renew: 13 months from the last visit
    return id;
  }

  function sessionId() {
    var id = readCookie(config.sessionCookieName) || uuid();
    writeCookie(config.sessionCookieName, id, SESSION_SECONDS);
    return id;
  }

  function landingUrl() {
    try {
      var key = "_cl_landing_" + sessionId();
      var url = sessionStorage.getItem(key);
      if (!url) {
        url = location.href;
        sessionStorage.setItem(key, url);
      }
      return url;
    } catch (e) {
      return location.href;
    }
  }

  function campaign(event) {
    var params;
    try {
      params = new URL(location.href).searchParams;
    } catch (e) {
      return;
    }
    for (var i = 0; i < UTMS.length; i++) {
      var v = params.get(UTMS[i]);
      if (v) event[UTMS[i]] = v;
    }
    var ids = null;
    for (var j = 0; j < CLICK_IDS.length; j++) {
      var c = params.get(CLICK_IDS[j]);
      if (c) (ids = ids || {})[CLICK_IDS[j]] = c;
    }
    if (ids) event.click_ids = ids;
  }

  function stringProps(props) {
    var out = {};
    if (!props) return out;
    for (var k in props) {
      if (Object.prototype.hasOwnProperty.call(props, k) && props[k] != null) {
        out[k] = typeof props[k] === "string" ? props[k] : JSON.stringify(props[k]);
      }
    }
    return out;
  }

  function send(payload) {
    var url = config.endpoint + "/v1/events";
    var body = JSON.stringify(payload);
    var queued = false;
    try {
      queued = navigator.sendBeacon && navigator.sendBeacon(url, body); // text/plain: no preflight
    } catch (e) {
      queued = false;
    }
    if (!queued && window.fetch) {
      fetch(url, {
        method: "POST",
        body: body,
        keepalive: true,
        mode: "no-cors",
        credentials: "omit",
        headers: { "Content-Type": "text/plain" }
      })["catch"](function () {});
    }
  }

  function emit(type, fields) {
    var event = {
      type: type,
      event_id: uuid(),
      timestamp: new Date().toISOString()
    };
    for (var k in fields) if (fields[k] != null) event[k] = fields[k];
    if (!allowed()) {
      if (consent === null) pending.push(event);
      return;
    }
    deliver(event);
  }

  function deliver(event) {
    event.anonymous_id = anonymousId();
    event.session_id = sessionId();
    event.url = event.url || location.href;
    event.writeKey = config.writeKey;
    event.sent_at = new Date().toISOString();
    if (!event.properties) event.properties = {};
    event.properties.landing_url = event.properties.landing_url || landingUrl();
    campaign(event);
    send(event);
  }

  function page(properties) {
    var url = location.href;
    var referrer = lastUrl || document.referrer || null;
    lastUrl = url;
    emit("pageview", { url: url, title: document.title, referrer: referrer, properties: stringProps(properties) });
  }

  function onNavigation() {
    if (config.autoPageviews && location.href !== lastUrl) page();
  }

  function watchHistory() {
    var methods = ["pushState", "replaceState"];
    for (var i = 0; i < methods.length; i++) {
      (function (name) {
        var original = history[name];
        if (!original) return;
        history[name] = function () {
          var result = original.apply(this, arguments);
          setTimeout(onNavigation, 0);
          return result;
        };
      })(methods[i]);
    }
    window.addEventListener("popstate", onNavigation);
    window.addEventListener("hashchange", onNavigation);
  }

  function emailOf(form) {
    var inputs = form.querySelectorAll("input");
    for (var i = 0; i < inputs.length; i++) {
      var input = inputs[i];
      var name = (input.name || input.id || "").toLowerCase();
      if ((input.type === "email" || /e-?mail/.test(name)) && /\S+@\S+/.test(input.value || "")) {
        return input.value.trim();
      }
    }
    return null;
  }

  function onSubmit(e) {
    var form = e.target;
    if (!form || form.tagName !== "FORM") return;
    var email = emailOf(form);
    if (!email) return;
    var formId = form.id || form.getAttribute("name") || form.getAttribute("action") || "form";
    emit("form_submit", { email: email, event_name: formId });
    emit("identify", { email: email });
  }

  var commands = {
    init: function (options) {
      for (var k in options) if (Object.prototype.hasOwnProperty.call(options, k)) config[k] = options[k];
    },
    page: page,
    identify: function (email, traits) {
      emit("identify", { email: email, traits: stringProps(traits) });
    },
    track: function (name, properties) {
      emit("custom", { event_name: name, properties: stringProps(properties) });
    },
    conversion: function (name, value, currency, properties) {
      emit("conversion", {
        event_name: name,
        value: value == null ? null : String(value),
        currency: currency,
        properties: stringProps(properties)
      });
    },
    consent: function (granted) {
      consent = !!granted;
      if (consent) {
        var queued = pending;
        pending = [];
        for (var i = 0; i < queued.length; i++) deliver(queued[i]);
      } else {
        pending = [];
        writeCookie(config.cookieName, "", 0);
        writeCookie(config.sessionCookieName, "", 0);
      }
    },
    anonymousId: function (callback) {
      if (allowed() && typeof callback === "function") callback(anonymousId());
    }
  };

  function run(args) {
    var command = commands[args[0]];
    if (command) command.apply(null, Array.prototype.slice.call(args, 1));
  }

  var queue = (window.closedloop && window.closedloop.q) || [];
  var api = function () {
    run(arguments);
  };
  api.loaded = true;
  window.closedloop = api;
  // Calls made before the script loaded: init first, so later calls see the configuration.
  for (var i = 0; i < queue.length; i++) if (queue[i][0] === "init") run(queue[i]);
  for (var j = 0; j < queue.length; j++) if (queue[j][0] !== "init") run(queue[j]);

  if (!started) {
    started = true;
    if (config.autoIdentify) document.addEventListener("submit", onSubmit, true);
    watchHistory();
    if (config.autoPageviews) page();
  }
})(window, document);
