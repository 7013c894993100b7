// Live updates by polling: every 2 s the [data-live] part of the page is fetched again
// (the same URL with ?fragment=1, rendered and escaped by the server) unless paused.
(function () {
  "use strict";
  var live = document.querySelector("[data-live]");
  var button = document.getElementById("pause");
  var status = document.getElementById("live-status");
  if (!live || !button) { return; }
  var paused = false;
  button.addEventListener("click", function () {
    paused = !paused;
    button.setAttribute("aria-pressed", String(paused));
    button.textContent = paused ? "Resume updates" : "Pause updates";
    status.textContent = paused ? "Paused" : "Updates every 2 s";
  });
  function tick() {
    if (paused || document.hidden) { setTimeout(tick, 2000); return; }
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    fetch(url.toString(), { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) {
          status.textContent = response.status === 401 ? "Session ended: sign in again" : "Update failed";
          if (response.status === 401) { return null; }
          return "";
        }
        return response.text();
      })
      .then(function (html) {
        if (html === null) { return; }
        if (html) { live.innerHTML = html; }
        setTimeout(tick, 2000);
      })
      .catch(function () { status.textContent = "Update failed"; setTimeout(tick, 2000); });
  }
  setTimeout(tick, 2000);
})();
