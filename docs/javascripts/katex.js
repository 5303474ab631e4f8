// Render the math that pymdownx.arithmatex (generic mode) turns into \(...\) and \[...\];
// a bare $ in prose is left alone.
document$.subscribe(({ body }) => {
  if (typeof renderMathInElement === "undefined") return; // KaTeX not loaded (offline): the TeX source stays readable
  renderMathInElement(body, {
    delimiters: [
      { left: "\\(", right: "\\)", display: false },
      { left: "\\[", right: "\\]", display: true },
    ],
  });
});
