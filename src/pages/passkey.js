// authgate's passkey buttons: the only script its pages load. It asks the
// gateway for a ceremony's options, hands them to the browser's WebAuthn
// (navigator.credentials), and posts the answer back as a form field.
"use strict";
(function () {
  function bytes(text) {
    var b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    var raw = atob(b64 + "===".slice((b64.length + 3) % 4));
    var out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out.buffer;
  }
  function text(buffer) {
    if (!buffer) return null;
    var view = new Uint8Array(buffer), raw = "";
    for (var i = 0; i < view.length; i++) raw += String.fromCharCode(view[i]);
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function ids(list) {
    return (list || []).map(function (c) {
      return Object.assign({}, c, { id: bytes(c.id) });
    });
  }
  function post(url, fields) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams(fields).toString(),
    }).then(function (response) {
      return response.text().then(function (body) {
        var data = {};
        try { data = JSON.parse(body); } catch (e) { data = { error: response.status === 429 ? "Too many tries: wait a little." : "Something went wrong (" + response.status + ")." }; }
        if (!response.ok) throw new Error(data.error || "Something went wrong.");
        return data;
      });
    });
  }
  function say(words) {
    var place = document.getElementById("passkey-message");
    if (place) { place.textContent = words; place.hidden = false; }
  }
  function credentialJson(c) {
    var r = c.response, out = {
      id: c.id, rawId: text(c.rawId), type: c.type,
      extensions: c.getClientExtensionResults ? c.getClientExtensionResults() : {},
    };
    if (r.attestationObject) {
      out.response = {
        attestationObject: text(r.attestationObject),
        clientDataJSON: text(r.clientDataJSON),
        transports: r.getTransports ? r.getTransports() : undefined,
      };
    } else {
      out.response = {
        authenticatorData: text(r.authenticatorData),
        clientDataJSON: text(r.clientDataJSON),
        signature: text(r.signature),
        userHandle: text(r.userHandle),
      };
    }
    return JSON.stringify(out);
  }
  function requestOptions(options) {
    var pk = Object.assign({}, options.publicKey);
    pk.challenge = bytes(pk.challenge);
    pk.allowCredentials = ids(pk.allowCredentials);
    return pk;
  }
  // Signs in (a pending sign-in's second step, or a passkey alone) and
  // goes where the gateway says.
  var waiting = null;
  function signIn(button, conditional) {
    var csrf = button.getAttribute("data-csrf");
    var next = button.getAttribute("data-next") || "";
    var options = button.getAttribute("data-options") || "/.gateway/login/passkey/options";
    var finish = button.getAttribute("data-finish") || "/.gateway/login/passkey";
    if (waiting) { waiting.abort(); waiting = null; }
    var abort = new AbortController();
    if (conditional) waiting = abort;
    return post(options, { csrf: csrf }).then(function (started) {
      var request = { publicKey: requestOptions(started.options), signal: abort.signal };
      if (conditional) request.mediation = "conditional";
      return navigator.credentials.get(request).then(function (credential) {
        var fields = { csrf: csrf, credential: credentialJson(credential), next: next };
        if (started.ceremony) fields.ceremony = started.ceremony;
        return post(finish, fields);
      });
    }).then(function (done) {
      window.location.assign(done.next || "/");
    }, function (error) {
      if (error && error.name === "AbortError") return;
      say(error && error.message ? error.message : "The passkey was not used.");
    });
  }
  function register(form) {
    var csrf = form.querySelector("[name=csrf]").value;
    var password = form.querySelector("[name=password]");
    var name = form.querySelector("[name=name]").value;
    post("/.gateway/passkeys/options", { csrf: csrf, password: password ? password.value : "" })
      .then(function (options) {
        var pk = Object.assign({}, options.publicKey);
        pk.challenge = bytes(pk.challenge);
        pk.user = Object.assign({}, pk.user, { id: bytes(pk.user.id) });
        pk.excludeCredentials = ids(pk.excludeCredentials);
        return navigator.credentials.create({ publicKey: pk });
      })
      .then(function (credential) {
        return post("/.gateway/passkeys", {
          csrf: csrf, action: "add", name: name, credential: credentialJson(credential),
        });
      })
      .then(function () { window.location.assign("/.gateway/account"); },
        function (error) { say(error && error.message ? error.message : "No passkey was added."); });
  }
  document.addEventListener("DOMContentLoaded", function () {
    if (!window.PublicKeyCredential) {
      say("This browser cannot use passkeys.");
      return;
    }
    var button = document.getElementById("passkey-sign-in");
    if (button) {
      button.hidden = false;
      button.addEventListener("click", function () { signIn(button, false); });
      if (button.hasAttribute("data-autofill") && PublicKeyCredential.isConditionalMediationAvailable) {
        PublicKeyCredential.isConditionalMediationAvailable().then(function (yes) {
          if (yes) signIn(button, true);
        });
      }
    }
    var form = document.getElementById("passkey-add");
    if (form) {
      form.addEventListener("submit", function (event) { event.preventDefault(); register(form); });
    }
  });
})();
