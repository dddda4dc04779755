// Proves that the page's script loaded: it replaces the "did not run" line.
document.getElementById("script").textContent = "Scripts ran.";
