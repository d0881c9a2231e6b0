// Render the math that pymdownx.arithmatex marks (\( ... \) inline, \[ ... \] display) with the vendored KaTeX.
function renderMath() {
  for (const element of document.querySelectorAll(".arithmatex")) {
    renderMathInElement(element, {
      delimiters: [
        { left: "\\(", right: "\\)", display: false },
        { left: "\\[", right: "\\]", display: true },
      ],
      throwOnError: false,
    });
  }
}
if (typeof document$ !== "undefined") {
  document$.subscribe(renderMath);  // Material for MkDocs: on every page load
} else {
  document.addEventListener("DOMContentLoaded", renderMath);
}
