// Render the math that pymdownx.arithmatex (generic mode) wraps in .arithmatex spans and divs.
document$.subscribe(({ body }) => {
  if (typeof renderMathInElement === "undefined") return; // KaTeX not loaded (offline): the TeX source stays readable
  renderMathInElement(body, {
    delimiters: [
      { left: "$$", right: "$$", display: true },
      { left: "$", right: "$", display: false },
      { left: "\\(", right: "\\)", display: false },
      { left: "\\[", right: "\\]", display: true },
    ],
  });
});
