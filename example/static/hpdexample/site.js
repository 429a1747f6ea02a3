// The example site's script: show when the page was rendered in the reader's time.
document.addEventListener("DOMContentLoaded", () => {
  for (const el of document.querySelectorAll("time.rendered")) {
    const when = new Date(el.getAttribute("datetime"));
    if (!Number.isNaN(when.getTime())) el.textContent = when.toLocaleString();
  }
});
